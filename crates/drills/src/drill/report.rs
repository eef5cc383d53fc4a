//! The reports of one drill, all drawn from its journal: `report.json`
//! (`{scenario, verdict, gates, invariants, phases, …}`) for machines,
//! `report.md` for the on-call engineer; and `summary.md` over every drill
//! of a run.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::journal::{Entry, Event, GateResult, InvariantResult, Op, Phase, Verdict};
use super::metrics::{Timeline, number};
use super::runner::Outcome;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub verdict: Verdict,
    pub reason: String,
    pub summary: String,
    pub incident: String,
    pub backend: String,
    pub quick: bool,
    pub seed: u64,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_s: f64,
    pub gates: Vec<GateResult>,
    pub invariants: Vec<InvariantResult>,
    pub phases: Vec<PhaseSummary>,
    pub faults: Vec<FaultSummary>,
    pub cleanup: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub name: String,
    pub start_ms: f64,
    pub end_ms: f64,
    pub checkouts: usize,
    pub checkout_ok: usize,
    pub checkout_p50_ms: Option<f64>,
    pub checkout_p99_ms: Option<f64>,
    pub checkout_error_rate: Option<f64>,
    pub reads: usize,
    pub read_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultSummary {
    pub name: String,
    pub target: String,
    pub detail: String,
    pub injected_ms: Option<f64>,
    pub healed_ms: Option<f64>,
    pub time_limit_ms: u64,
    /// Connections, deliveries or calls it affected.
    pub affected: Option<u64>,
    /// The proxy's record or the stand-in's counters.
    pub effect: serde_json::Value,
}

impl Report {
    pub fn from_entries(entries: &[Entry]) -> Self {
        let mut report = Report {
            scenario: String::new(),
            verdict: Verdict::Undecided,
            reason: "the journal has no verdict".into(),
            summary: String::new(),
            incident: String::new(),
            backend: String::new(),
            quick: false,
            seed: 0,
            started_at: entries.first().map(|e| e.wall),
            duration_s: entries.last().map_or(0.0, |e| e.t_ms / 1000.0),
            gates: Vec::new(),
            invariants: Vec::new(),
            phases: Vec::new(),
            faults: Vec::new(),
            cleanup: String::new(),
        };
        for entry in entries {
            match &entry.event {
                Event::Start {
                    scenario,
                    summary,
                    incident,
                    backend,
                    quick,
                    seed,
                    ..
                } => {
                    report.scenario = scenario.clone();
                    report.summary = summary.clone();
                    report.incident = incident.clone();
                    report.backend = backend.clone();
                    report.quick = *quick;
                    report.seed = *seed;
                }
                Event::Gate(gate) => report.gates.push(gate.clone()),
                Event::Invariant(invariant) => report.invariants.push(invariant.clone()),
                Event::Verdict { verdict, reason } => {
                    report.verdict = *verdict;
                    report.reason = reason.clone();
                }
                Event::Inject {
                    fault,
                    target,
                    detail,
                    time_limit_ms,
                } => report.faults.push(FaultSummary {
                    name: fault.clone(),
                    target: target.clone(),
                    detail: detail.clone(),
                    injected_ms: Some(entry.t_ms),
                    healed_ms: None,
                    time_limit_ms: *time_limit_ms,
                    affected: None,
                    effect: serde_json::Value::Null,
                }),
                Event::Heal { fault, .. } => {
                    if let Some(summary) = report.faults.iter_mut().rev().find(|f| &f.name == fault) {
                        summary.healed_ms = Some(entry.t_ms);
                    }
                }
                Event::Effect {
                    fault,
                    affected,
                    detail,
                    ..
                } => {
                    if let Some(summary) = report.faults.iter_mut().rev().find(|f| &f.name == fault) {
                        summary.affected = Some(*affected);
                        summary.effect = detail.clone();
                    }
                }
                Event::Note { message } if message.starts_with("cleanup:") => {
                    report.cleanup = message.trim_start_matches("cleanup:").trim().to_owned();
                }
                _ => {}
            }
        }
        let timeline = Timeline::from_entries(entries, f64::INFINITY);
        for phase in Phase::ALL {
            let Some((start, end)) = timeline.phases.get(&phase).copied() else {
                continue;
            };
            let name = phase.as_str();
            let count = |op| timeline.requests_in(op, &[(start, end)]).len();
            let ok = timeline
                .requests_in(Op::Checkout, &[(start, end)])
                .iter()
                .filter(|r| r.class() == super::metrics::Class::Ok)
                .count();
            report.phases.push(PhaseSummary {
                name: name.to_owned(),
                start_ms: start,
                end_ms: end,
                checkouts: count(Op::Checkout),
                checkout_ok: ok,
                checkout_p50_ms: timeline.metric("checkout.p50_ms", name),
                checkout_p99_ms: timeline.metric("checkout.p99_ms", name),
                checkout_error_rate: timeline.metric("checkout.error_rate", name),
                reads: count(Op::Read),
                read_p99_ms: timeline.metric("read.p99_ms", name),
            });
        }
        report
    }
}

/// Writes `report.json`, `report.md`, `plot.svg` and `postmortem.md` into
/// `dir` from `entries`.
pub fn write_scenario(dir: &Path, entries: &[Entry]) -> anyhow::Result<Report> {
    let report = Report::from_entries(entries);
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(dir.join("report.json"), json).with_context(|| format!("writing {}/report.json", dir.display()))?;
    std::fs::write(dir.join("report.md"), markdown(&report, entries))
        .with_context(|| format!("writing {}/report.md", dir.display()))?;
    super::plot::write_plot(&dir.join("plot.svg"), entries)?;
    crate::postmortem::write_for_drill(dir, entries)?;
    Ok(report)
}

fn opt(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{}{unit}", number(v)))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{}%", number(v * 100.0)))
}

fn mark(ok: bool) -> &'static str {
    if ok { "pass" } else { "**FAIL**" }
}

/// Appends a Markdown table; a `|` inside a cell becomes `/`, a line break a space.
pub fn table(md: &mut String, headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "/").replace('\n', " ")).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    md.push_str(&line(&headers));
    md.push_str(&format!("|{}\n", "---|".repeat(headers.len())));
    for row in rows {
        md.push_str(&line(&row));
    }
}

/// `report.md`: what happened and why the verdict is what it is.
pub fn markdown(report: &Report, entries: &[Entry]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Drill `{}`: {}\n",
        report.scenario,
        report.verdict.as_str().to_uppercase()
    );
    let _ = writeln!(md, "{}\n", report.reason);
    let _ = writeln!(md, "- **What goes wrong:** {}", report.summary);
    let _ = writeln!(md, "- **The incident:** {}", report.incident);
    let _ = writeln!(
        md,
        "- **Run:** {} on {}{}, seed {}, {} s",
        report.started_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        report.backend,
        if report.quick { " (quick)" } else { "" },
        report.seed,
        number(report.duration_s)
    );
    if !report.cleanup.is_empty() {
        let _ = writeln!(md, "- **Cleanup:** {}", report.cleanup);
    }
    md.push_str("\n## Gates\n\n");
    table(
        &mut md,
        &["gate", "metric", "window", "rule", "observed", ""],
        report.gates.iter().map(|gate| {
            vec![
                gate.name.clone(),
                format!("`{}`", gate.metric),
                gate.window.clone(),
                gate.rule.clone(),
                opt(gate.observed, ""),
                mark(gate.ok).to_owned(),
            ]
        }),
    );
    md.push_str("\n## Invariants\n\n");
    table(
        &mut md,
        &["invariant", "observed", ""],
        report.invariants.iter().map(|invariant| {
            let status = match invariant.status {
                super::journal::InvariantStatus::Holds => "holds",
                super::journal::InvariantStatus::Broken => "**BROKEN**",
                super::journal::InvariantStatus::Indeterminate => "indeterminate",
            };
            vec![invariant.name.clone(), invariant.observed.clone(), status.to_owned()]
        }),
    );
    for invariant in report.invariants.iter().filter(|i| !i.samples.is_empty()) {
        let _ = writeln!(md, "\n{}:\n", invariant.name);
        for sample in &invariant.samples {
            let _ = writeln!(md, "- {sample}");
        }
    }
    md.push_str("\n## Phases\n\n");
    table(
        &mut md,
        &[
            "phase",
            "from",
            "to",
            "checkouts",
            "ok",
            "p50",
            "p99",
            "errors",
            "reads",
            "read p99",
        ],
        report.phases.iter().map(|phase| {
            vec![
                phase.name.clone(),
                format!("{} s", number(phase.start_ms / 1000.0)),
                format!("{} s", number(phase.end_ms / 1000.0)),
                phase.checkouts.to_string(),
                phase.checkout_ok.to_string(),
                opt(phase.checkout_p50_ms, " ms"),
                opt(phase.checkout_p99_ms, " ms"),
                percent(phase.checkout_error_rate),
                phase.reads.to_string(),
                opt(phase.read_p99_ms, " ms"),
            ]
        }),
    );
    md.push_str("\n## Faults and what they affected\n\n");
    table(
        &mut md,
        &[
            "fault",
            "target",
            "what",
            "on at",
            "healed at",
            "time limit",
            "affected",
        ],
        report.faults.iter().map(|fault| {
            vec![
                fault.name.clone(),
                fault.target.clone(),
                format!("`{}`", fault.detail),
                opt(fault.injected_ms.map(|t| t / 1000.0), " s"),
                opt(fault.healed_ms.map(|t| t / 1000.0), " s"),
                format!("{} s", number(fault.time_limit_ms as f64 / 1000.0)),
                fault.affected.map_or_else(|| "–".to_owned(), |a| a.to_string()),
            ]
        }),
    );
    md.push_str("\n## Timeline\n\n");
    table(
        &mut md,
        &["t", "wall clock", "event"],
        timeline_lines(entries).into_iter().map(|(t_ms, wall, line)| {
            vec![
                format!("{} s", number(t_ms / 1000.0)),
                wall.format("%H:%M:%S%.3f").to_string(),
                line,
            ]
        }),
    );
    let _ = writeln!(
        md,
        "\nFiles: `journal.jsonl` (every request and event), `report.json`, `plot.svg`, `postmortem.md`, `logs/`."
    );
    md
}

/// The journal's notable entries (not the requests) as one line each.
pub fn timeline_lines(entries: &[Entry]) -> Vec<(f64, DateTime<Utc>, String)> {
    entries
        .iter()
        .filter_map(|entry| {
            let line = match &entry.event {
                Event::Process {
                    name, action, detail, ..
                } => format!("{name} {action} {detail}").trim().replace('\n', " "),
                Event::Phase { phase, edge } => format!("{} phase {:?}", phase.as_str(), edge).to_lowercase(),
                Event::Inject {
                    fault, target, detail, ..
                } => format!("injected `{fault}` on {target}: {detail}"),
                Event::Heal { fault, detail, ok, .. } => {
                    format!("healed `{fault}`: {detail}{}", if *ok { "" } else { " (FAILED)" })
                }
                Event::Breaker {
                    node,
                    dependency,
                    state,
                } => format!("{node}: {dependency} breaker {state}"),
                Event::Stop { reason } => reason.clone(),
                Event::Check { name, ok, .. } => format!("check {name}: {}", if *ok { "yes" } else { "NO" }),
                Event::Settle {
                    drained,
                    seconds,
                    pending,
                } => {
                    if *drained {
                        format!("cold path drained in {} s", number(*seconds))
                    } else {
                        format!("cold path not drained after {} s: {pending}", number(*seconds))
                    }
                }
                Event::Verdict { verdict, reason } => format!("verdict {}: {reason}", verdict.as_str()),
                _ => return None,
            };
            Some((entry.t_ms, entry.wall, line))
        })
        .collect()
}

/// `summary.md` over every drill of a run.
pub fn write_summary(dir: &Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let mut md = String::from("# Drills\n\n");
    table(
        &mut md,
        &["scenario", "verdict", "why", "time", "report"],
        outcomes.iter().map(|outcome| {
            vec![
                outcome.scenario.clone(),
                outcome.verdict.as_str().to_owned(),
                outcome.reason.clone(),
                format!("{} s", number(outcome.elapsed.as_secs_f64())),
                format!("[{0}/report.md]({0}/report.md)", outcome.scenario),
            ]
        }),
    );
    std::fs::write(dir.join("summary.md"), md).with_context(|| format!("writing {}/summary.md", dir.display()))
}
