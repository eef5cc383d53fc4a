//! What the journal's requests say over a window of the drill: latency
//! percentiles, error rates, throughput, requests dropped or late, how long
//! checkout took to come back after the heal; and the gates that hold those
//! figures to a threshold, absolute or relative to the baseline.

use std::collections::BTreeMap;

use super::journal::{Edge, Entry, Event, GateKind, GateResult, Op, Phase};
use super::scenario::GateSpec;

/// Statistics of one operation, measured over a window.
const OP_STATS: [&str; 14] = [
    "count",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "ok_p99_ms",
    "failed_p99_ms",
    "error_rate",
    "ok_per_s",
    "dropped",
    "late",
    "server_errors",
    "shed",
    "shed_without_retry_after",
    "degraded_share",
];

/// Figures that are not per window.
const WHOLE_DRILL: [&str; 3] = ["recovery.first_ok_s", "recovery.steady_s", "settle.drained_s"];

/// Checks a gate's metric and window names and its thresholds.
pub fn check_gate(gate: &GateSpec) -> anyhow::Result<()> {
    let known_metric = match gate.metric.split_once('.') {
        Some(("checkout" | "read", stat)) => OP_STATS.contains(&stat),
        Some(("breaker", rest)) => rest.ends_with(".opened") || rest.ends_with(".closed_at_end"),
        Some(("check", name)) => !name.is_empty(),
        _ => WHOLE_DRILL.contains(&gate.metric.as_str()),
    };
    anyhow::ensure!(
        known_metric,
        "unknown metric `{}`: expected checkout.STAT or read.STAT (STAT one of {}), breaker.DEPENDENCY.opened, \
         breaker.DEPENDENCY.closed_at_end, check.NAME, or one of {}",
        gate.metric,
        OP_STATS.join(", "),
        WHOLE_DRILL.join(", ")
    );
    let known_window = matches!(gate.window.as_str(), "baseline" | "fault" | "heal" | "recovery" | "all")
        || ["breaker_open:", "fault:"]
            .iter()
            .any(|prefix| gate.window.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty()));
    anyhow::ensure!(
        known_window,
        "unknown window `{}`: expected baseline, fault, heal, recovery, all, fault:FAULT_NAME or breaker_open:DEPENDENCY",
        gate.window
    );
    anyhow::ensure!(
        gate.max.is_some() || gate.min.is_some() || gate.max_vs_baseline.is_some(),
        "a gate needs `max`, `min` or `max_vs_baseline`"
    );
    Ok(())
}

/// One request as the journal has it.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub t_ms: f64,
    pub op: Op,
    pub status: u16,
    pub ms: f64,
    pub retry_after: bool,
}

/// How an answer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 201/202 to a checkout, 2xx to a read: the shopper got what they asked.
    Ok,
    /// A business refusal (out of stock, declined): an honest answer, not an error.
    Refused,
    /// 503 with `Retry-After`: failing fast and saying when to come back.
    Shed,
    /// Anything else: 5xx, 429, no answer.
    Error,
}

impl Request {
    pub fn class(&self) -> Class {
        match self.status {
            201 | 202 if self.op == Op::Checkout => Class::Ok,
            200..=299 if self.op == Op::Read => Class::Ok,
            503 if self.retry_after => Class::Shed,
            400..=499 if !matches!(self.status, 408 | 429) => Class::Refused,
            _ => Class::Error,
        }
    }

    pub fn end_ms(&self) -> f64 {
        self.t_ms + self.ms
    }
}

/// When something was in a state: `[start, end)` in drill milliseconds.
pub type Span = (f64, f64);

/// The drill's timeline, read from its journal.
#[derive(Debug, Default)]
pub struct Timeline {
    pub phases: BTreeMap<Phase, Span>,
    pub requests: Vec<Request>,
    /// (dependency → spans while its breaker was open on some node).
    pub breaker_open: BTreeMap<String, Vec<Span>>,
    /// (fault name → spans from its injection to its heal).
    pub fault_on: BTreeMap<String, Vec<Span>>,
    /// The last state seen per (node, dependency).
    pub breaker_last: BTreeMap<(String, String), String>,
    pub settle_s: Option<f64>,
    /// `check.NAME` facts: whether each held (every record of it).
    pub checks: BTreeMap<String, bool>,
    pub end_ms: f64,
    pub late_after_ms: f64,
}

impl Timeline {
    pub fn from_entries(entries: &[Entry], late_after_ms: f64) -> Self {
        let mut timeline = Timeline {
            late_after_ms,
            ..Timeline::default()
        };
        let mut starts: BTreeMap<Phase, f64> = BTreeMap::new();
        // Per (node, dependency): when it opened, while open.
        let mut open_since: BTreeMap<(String, String), f64> = BTreeMap::new();
        // Per fault: when it was injected, while on.
        let mut fault_since: BTreeMap<String, f64> = BTreeMap::new();
        for entry in entries {
            timeline.end_ms = timeline.end_ms.max(entry.t_ms);
            match &entry.event {
                Event::Phase {
                    phase,
                    edge: Edge::Start,
                } => {
                    starts.insert(*phase, entry.t_ms);
                }
                Event::Phase { phase, edge: Edge::End } => {
                    let start = starts.get(phase).copied().unwrap_or(entry.t_ms);
                    timeline.phases.insert(*phase, (start, entry.t_ms));
                }
                Event::Request {
                    op,
                    status,
                    ms,
                    retry_after,
                    ..
                } => timeline.requests.push(Request {
                    t_ms: entry.t_ms,
                    op: *op,
                    status: *status,
                    ms: *ms,
                    retry_after: *retry_after,
                }),
                Event::Breaker {
                    node,
                    dependency,
                    state,
                } => {
                    let key = (node.clone(), dependency.clone());
                    let open = state == "open";
                    match (open_since.get(&key).copied(), open) {
                        (None, true) => {
                            open_since.insert(key.clone(), entry.t_ms);
                        }
                        (Some(since), false) => {
                            open_since.remove(&key);
                            timeline
                                .breaker_open
                                .entry(dependency.clone())
                                .or_default()
                                .push((since, entry.t_ms));
                        }
                        _ => {}
                    }
                    timeline.breaker_last.insert(key, state.clone());
                }
                Event::Inject { fault, .. } => {
                    fault_since.entry(fault.clone()).or_insert(entry.t_ms);
                }
                Event::Heal { fault, .. } => {
                    if let Some(since) = fault_since.remove(fault) {
                        timeline
                            .fault_on
                            .entry(fault.clone())
                            .or_default()
                            .push((since, entry.t_ms));
                    }
                }
                Event::Settle {
                    drained: true, seconds, ..
                } => timeline.settle_s = Some(*seconds),
                Event::Check { name, ok, .. } => {
                    let held = timeline.checks.entry(name.clone()).or_insert(true);
                    *held &= *ok;
                }
                _ => {}
            }
        }
        // A phase still open when the journal ends (an interrupted drill).
        for (phase, start) in starts {
            timeline.phases.entry(phase).or_insert((start, timeline.end_ms));
        }
        for (fault, since) in fault_since {
            timeline
                .fault_on
                .entry(fault)
                .or_default()
                .push((since, timeline.end_ms));
        }
        for ((_, dependency), since) in open_since {
            timeline
                .breaker_open
                .entry(dependency)
                .or_default()
                .push((since, timeline.end_ms));
        }
        timeline.requests.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        timeline
    }

    /// The spans a window name covers.
    pub fn window(&self, name: &str) -> Vec<Span> {
        let phase = |phase: Phase| self.phases.get(&phase).copied();
        match name {
            "baseline" => phase(Phase::Baseline).into_iter().collect(),
            "fault" => phase(Phase::Fault).into_iter().collect(),
            "heal" => phase(Phase::Heal).into_iter().collect(),
            "recovery" => phase(Phase::Recovery).into_iter().collect(),
            "all" => vec![(0.0, self.end_ms)],
            other if other.starts_with("fault:") => {
                self.fault_on.get(&other["fault:".len()..]).cloned().unwrap_or_default()
            }
            other => {
                let Some(dependency) = other.strip_prefix("breaker_open:") else {
                    return Vec::new();
                };
                let Some((fault_start, fault_end)) = phase(Phase::Fault) else {
                    return Vec::new();
                };
                self.breaker_open
                    .get(dependency)
                    .map(|spans| {
                        spans
                            .iter()
                            .map(|(start, end)| (start.max(fault_start), end.min(fault_end)))
                            .filter(|(start, end)| end > start)
                            .collect()
                    })
                    .unwrap_or_default()
            }
        }
    }

    /// The requests of `op` sent within `spans`.
    pub fn requests_in(&self, op: Op, spans: &[Span]) -> Vec<Request> {
        self.requests
            .iter()
            .filter(|r| r.op == op && spans.iter().any(|(start, end)| r.t_ms >= *start && r.t_ms < *end))
            .copied()
            .collect()
    }

    /// `metric` over `window`; `None` when there is nothing to measure.
    pub fn metric(&self, metric: &str, window: &str) -> Option<f64> {
        match metric {
            "recovery.first_ok_s" => return self.first_ok_after_heal(),
            "recovery.steady_s" => return self.steady_after_heal(),
            "settle.drained_s" => return self.settle_s,
            _ => {}
        }
        let (scope, stat) = metric.split_once('.')?;
        if scope == "check" {
            return self.checks.get(stat).map(|ok| if *ok { 1.0 } else { 0.0 });
        }
        if scope == "breaker" {
            let (dependency, what) = stat.rsplit_once('.')?;
            return match what {
                "opened" => Some(if self.window(&format!("breaker_open:{dependency}")).is_empty() {
                    0.0
                } else {
                    1.0
                }),
                "closed_at_end" => {
                    let states: Vec<&String> = self
                        .breaker_last
                        .iter()
                        .filter(|((_, dep), _)| dep == dependency)
                        .map(|(_, state)| state)
                        .collect();
                    if states.is_empty() {
                        return None;
                    }
                    Some(if states.iter().all(|s| s.as_str() == "closed") {
                        1.0
                    } else {
                        0.0
                    })
                }
                _ => None,
            };
        }
        let op = match scope {
            "checkout" => Op::Checkout,
            "read" => Op::Read,
            _ => return None,
        };
        let spans = self.window(window);
        let seconds: f64 = spans.iter().map(|(start, end)| (end - start) / 1000.0).sum();
        let requests = self.requests_in(op, &spans);
        op_stat(&requests, stat, seconds, self.late_after_ms)
    }

    fn heal_end(&self) -> Option<f64> {
        self.phases.get(&Phase::Heal).map(|(_, end)| *end)
    }

    /// Seconds from the end of the heal until the first checkout sent after it
    /// was answered with success.
    fn first_ok_after_heal(&self) -> Option<f64> {
        let healed = self.heal_end()?;
        self.requests
            .iter()
            .filter(|r| r.op == Op::Checkout && r.t_ms >= healed && r.class() == Class::Ok)
            .map(|r| r.end_ms())
            .min_by(f64::total_cmp)
            .map(|answered| (answered - healed) / 1000.0)
    }

    /// Seconds from the end of the heal until the start of the first two
    /// consecutive seconds that look like the baseline again: an error rate
    /// within twice the baseline's (at least 2%), a share of orders taken for
    /// later (202) within twice the baseline's (at least 5%), and a p99 of
    /// successful checkouts within three times the baseline's (at least
    /// baseline + 100 ms).
    fn steady_after_heal(&self) -> Option<f64> {
        let healed = self.heal_end()?;
        let (_, recovery_end) = self.phases.get(&Phase::Recovery).copied()?;
        let baseline = self.window("baseline");
        let base = self.requests_in(Op::Checkout, &baseline);
        let base_error = error_rate(&base).unwrap_or(0.0);
        let base_degraded = degraded_share(&base).unwrap_or(0.0);
        let base_p99 = percentile(ok_latencies(&base), 0.99).unwrap_or(0.0);
        let max_error = (2.0 * base_error).max(0.02);
        let max_degraded = (2.0 * base_degraded).max(0.05);
        let max_p99 = (3.0 * base_p99).max(base_p99 + 100.0);
        let mut healthy_run = 0;
        let mut second = 0;
        loop {
            let start = healed + f64::from(second) * 1000.0;
            if start + 1000.0 > recovery_end {
                return None;
            }
            let bucket = self.requests_in(Op::Checkout, &[(start, start + 1000.0)]);
            let healthy = !bucket.is_empty()
                && error_rate(&bucket).is_some_and(|rate| rate <= max_error)
                && degraded_share(&bucket).is_some_and(|share| share <= max_degraded)
                && percentile(ok_latencies(&bucket), 0.99).is_some_and(|p99| p99 <= max_p99);
            if healthy {
                healthy_run += 1;
                if healthy_run == 2 {
                    return Some(f64::from(second - 1));
                }
            } else {
                healthy_run = 0;
            }
            second += 1;
        }
    }
}

fn ok_latencies(requests: &[Request]) -> Vec<f64> {
    requests
        .iter()
        .filter(|r| r.class() == Class::Ok)
        .map(|r| r.ms)
        .collect()
}

/// The share of checkouts taken for later (202) rather than completed (201).
fn degraded_share(requests: &[Request]) -> Option<f64> {
    let checkouts = requests.iter().filter(|r| r.op == Op::Checkout).count();
    let degraded = requests
        .iter()
        .filter(|r| r.op == Op::Checkout && r.status == 202)
        .count();
    (checkouts > 0).then(|| degraded as f64 / checkouts as f64)
}

/// The share of requests that failed (shed, errors, no answer); refusals are answers.
pub fn error_rate(requests: &[Request]) -> Option<f64> {
    if requests.is_empty() {
        return None;
    }
    let failed = requests
        .iter()
        .filter(|r| matches!(r.class(), Class::Shed | Class::Error))
        .count();
    Some(failed as f64 / requests.len() as f64)
}

/// Nearest-rank percentile; `None` for no values.
pub fn percentile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn op_stat(requests: &[Request], stat: &str, seconds: f64, late_after_ms: f64) -> Option<f64> {
    let all = || requests.iter().map(|r| r.ms).collect::<Vec<_>>();
    let count_where = |keep: &dyn Fn(&Request) -> bool| requests.iter().filter(|r| keep(r)).count() as f64;
    match stat {
        "count" => Some(requests.len() as f64),
        "p50_ms" => percentile(all(), 0.50),
        "p99_ms" => percentile(all(), 0.99),
        "max_ms" => percentile(all(), 1.0),
        "ok_p99_ms" => percentile(ok_latencies(requests), 0.99),
        // Nothing failed, so nothing was slow to fail: 0, where a percentile
        // of no values would leave a fail-fast gate unmeasured.
        "failed_p99_ms" => {
            let failed: Vec<f64> = requests
                .iter()
                .filter(|r| matches!(r.class(), Class::Shed | Class::Error))
                .map(|r| r.ms)
                .collect();
            if failed.is_empty() && !requests.is_empty() {
                Some(0.0)
            } else {
                percentile(failed, 0.99)
            }
        }
        "error_rate" => error_rate(requests),
        "ok_per_s" => (seconds > 0.0).then(|| count_where(&|r| r.class() == Class::Ok) / seconds),
        "dropped" => Some(count_where(&|r| r.status == 0)),
        "late" => Some(count_where(&|r| r.ms > late_after_ms)),
        "server_errors" => Some(count_where(&|r| r.status >= 500 && r.class() != Class::Shed)),
        "shed" => Some(count_where(&|r| r.class() == Class::Shed)),
        "shed_without_retry_after" => Some(count_where(&|r| r.status == 503 && !r.retry_after)),
        "degraded_share" => degraded_share(requests),
        _ => None,
    }
}

/// Holds `gate` against the timeline.
pub fn evaluate(gate: &GateSpec, timeline: &Timeline) -> GateResult {
    let observed = timeline.metric(&gate.metric, &gate.window);
    let mut rules = Vec::new();
    let mut upper: Option<f64> = gate.max;
    if let Some(max) = gate.max {
        rules.push(format!("<= {}", number(max)));
    }
    if let Some(ratio) = gate.max_vs_baseline {
        match timeline.metric(&gate.metric, "baseline") {
            Some(base) => {
                let relative = base * ratio + gate.plus;
                rules.push(format!(
                    "<= {ratio} x baseline ({}){} = {}",
                    number(base),
                    if gate.plus != 0.0 {
                        format!(" + {}", number(gate.plus))
                    } else {
                        String::new()
                    },
                    number(relative)
                ));
                upper = Some(upper.map_or(relative, |max| max.min(relative)));
            }
            None => rules.push(format!("<= {ratio} x baseline (nothing measured in the baseline)")),
        }
    }
    if let Some(min) = gate.min {
        rules.push(format!(">= {}", number(min)));
    }
    let baseline_missing = gate.max_vs_baseline.is_some() && timeline.metric(&gate.metric, "baseline").is_none();
    let ok = match observed {
        None => false,
        Some(value) => {
            !baseline_missing && upper.is_none_or(|limit| value <= limit) && gate.min.is_none_or(|min| value >= min)
        }
    };
    let whole_drill = WHOLE_DRILL.contains(&gate.metric.as_str())
        || gate.metric.ends_with(".closed_at_end")
        || gate.metric.starts_with("check.");
    GateResult {
        name: gate.name.clone(),
        kind: GateKind::Slo,
        metric: gate.metric.clone(),
        window: if whole_drill {
            "whole drill".to_owned()
        } else {
            gate.window.clone()
        },
        rule: rules.join(" and "),
        threshold: upper.or(gate.min),
        observed,
        ok,
        protects: gate.protects.clone(),
    }
}

/// A figure for a report: at most two decimals, no trailing zeros.
pub fn number(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(t_ms: f64, status: u16, ms: f64) -> Request {
        Request {
            t_ms,
            op: Op::Checkout,
            status,
            ms,
            retry_after: false,
        }
    }

    fn timeline(requests: Vec<Request>) -> Timeline {
        let mut timeline = Timeline {
            requests,
            late_after_ms: 1000.0,
            end_ms: 20_000.0,
            ..Timeline::default()
        };
        timeline.phases.insert(Phase::Baseline, (0.0, 5_000.0));
        timeline.phases.insert(Phase::Fault, (5_000.0, 10_000.0));
        timeline.phases.insert(Phase::Heal, (10_000.0, 10_500.0));
        timeline.phases.insert(Phase::Recovery, (10_500.0, 20_000.0));
        timeline
    }

    #[test]
    fn relative_and_absolute_thresholds_both_hold() {
        let mut requests: Vec<Request> = (0..50).map(|i| request(f64::from(i) * 100.0, 201, 10.0)).collect();
        requests.extend((0..50).map(|i| request(5_000.0 + f64::from(i) * 100.0, 201, 30.0)));
        let timeline = timeline(requests);
        let gate = |max: Option<f64>, ratio: Option<f64>| GateSpec {
            name: "p99".into(),
            metric: "checkout.p99_ms".into(),
            window: "fault".into(),
            max,
            min: None,
            max_vs_baseline: ratio,
            plus: 5.0,
            protects: String::new(),
        };
        let result = evaluate(&gate(Some(100.0), None), &timeline);
        assert!(result.ok && result.observed == Some(30.0), "{result:?}");
        // 30 > 2 x 10 + 5: the relative bound fails though the absolute one holds.
        let result = evaluate(&gate(Some(100.0), Some(2.0)), &timeline);
        assert!(!result.ok, "{result:?}");
        assert_eq!(result.threshold, Some(25.0));
        assert!(result.rule.contains("baseline (10)"), "{}", result.rule);
    }

    #[test]
    fn recovery_is_measured_from_the_end_of_the_heal() {
        let mut requests: Vec<Request> = (0..50).map(|i| request(f64::from(i) * 100.0, 201, 10.0)).collect();
        // Failing until 13.5 s, then healthy.
        requests.extend((0..95).map(|i| {
            let t = 10_500.0 + f64::from(i) * 100.0;
            request(t, if t < 13_500.0 { 503 } else { 201 }, 10.0)
        }));
        let timeline = timeline(requests);
        let first = timeline.metric("recovery.first_ok_s", "all").unwrap();
        assert!((first - 3.01).abs() < 0.02, "{first}");
        assert_eq!(timeline.metric("recovery.steady_s", "all"), Some(3.0));
        assert_eq!(timeline.metric("checkout.error_rate", "fault"), None);
    }
}
