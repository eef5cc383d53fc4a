//! `holdfast canary-gate`: decides whether a canary may be promoted by
//! comparing its `/metrics` with the baseline fleet's, and by projecting the
//! canary's pool utilisation to full traffic: a canary on 5% of traffic can sit
//! at a comfortable 15/20 connections that at 100% would be 15 times the pool.
//!
//! # Metrics read (the service exports exactly these)
//!
//! - `holdfast_db_pool_connections_in_use{pool=…}` (gauge)
//! - `holdfast_db_pool_connections_max{pool=…}` (gauge); utilisation is the
//!   maximum over pools of `in_use / max`
//! - `holdfast_http_requests_total{route=…,status=…}` (counter); error rate is
//!   the share of `status` 5xx
//! - `holdfast_http_request_duration_seconds_bucket{route=…,le=…}` (histogram);
//!   p99 over all routes, interpolated within buckets as Prometheus'
//!   `histogram_quantile` does
//!
//! Counters are compared as totals since each process started, so run the gate
//! after the canary has served a representative soak.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use prometheus_parse::{Scrape, Value};

/// Below this baseline error rate the ratio is taken against the floor, so
/// one stray 500 on a canary does not compare against a perfect zero.
const ERROR_RATE_FLOOR: f64 = 0.001;

#[derive(Debug, Clone)]
pub struct GateOptions {
    pub canary: String,
    pub baseline: String,
    pub traffic_share: f64,
    pub max_pool_utilisation: f64,
    pub max_error_rate_ratio: f64,
    pub max_p99_ratio: f64,
}

/// What the gate needs from one `/metrics` page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// pool → (in use, max)
    pub pools: BTreeMap<String, (f64, f64)>,
    pub requests: f64,
    pub server_errors: f64,
    /// upper bound → cumulative count, summed over routes
    pub buckets: BTreeMap<OrderedF64, f64>,
}

/// `f64` with a total order, for bucket bounds (`+Inf` included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderedF64(pub f64);
impl Eq for OrderedF64 {}
impl PartialOrd for OrderedF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Parses Prometheus text exposition format into the figures the gate uses.
pub fn snapshot(text: &str) -> Result<Snapshot> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).context("parsing Prometheus text format")?;
    let mut s = Snapshot::default();
    for sample in scrape.samples {
        let number = match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        };
        match (sample.metric.as_str(), number) {
            ("holdfast_db_pool_connections_in_use", Some(v)) => {
                let pool = sample.labels.get("pool").unwrap_or_default().to_string();
                s.pools.entry(pool).or_default().0 += v;
            }
            ("holdfast_db_pool_connections_max", Some(v)) => {
                let pool = sample.labels.get("pool").unwrap_or_default().to_string();
                s.pools.entry(pool).or_default().1 += v;
            }
            ("holdfast_http_requests_total", Some(v)) => {
                s.requests += v;
                if sample.labels.get("status").is_some_and(|st| st.starts_with('5')) {
                    s.server_errors += v;
                }
            }
            // Without a `# TYPE … histogram` line the buckets arrive untyped.
            ("holdfast_http_request_duration_seconds_bucket", Some(v)) => {
                let le = sample.labels.get("le").unwrap_or("+Inf");
                let bound = parse_le(le)?;
                *s.buckets.entry(OrderedF64(bound)).or_default() += v;
            }
            ("holdfast_http_request_duration_seconds", None) => {
                if let Value::Histogram(counts) = &sample.value {
                    for c in counts {
                        *s.buckets.entry(OrderedF64(c.less_than)).or_default() += c.count;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

fn parse_le(le: &str) -> Result<f64> {
    match le {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        other => other
            .parse()
            .with_context(|| format!("histogram bucket bound le=\"{other}\" is not a number")),
    }
}

impl Snapshot {
    /// Highest `in_use / max` over the pools, with the pool's name.
    pub fn pool_utilisation(&self) -> Option<(String, f64, f64, f64)> {
        self.pools
            .iter()
            .filter(|(_, (_, max))| *max > 0.0)
            .map(|(name, (used, max))| (name.clone(), *used, *max, used / max))
            .max_by(|a, b| a.3.total_cmp(&b.3))
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.server_errors / self.requests)
    }

    /// The q-quantile from cumulative buckets, interpolating linearly inside
    /// the bucket that holds the rank; a rank in the `+Inf` bucket answers
    /// with the highest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.values().copied().fold(0.0, f64::max);
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for (OrderedF64(bound), count) in &self.buckets {
            if *count >= rank {
                if bound.is_infinite() {
                    return Some(lower_bound);
                }
                let in_bucket = count - lower_count;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower_count) / in_bucket
                } else {
                    1.0
                };
                return Some(lower_bound + (bound - lower_bound) * fraction);
            }
            lower_bound = *bound;
            lower_count = *count;
        }
        Some(lower_bound)
    }
}

/// Applies the three checks.
pub fn evaluate(options: &GateOptions, canary: &Snapshot, baseline: &Snapshot) -> Vec<Check> {
    vec![
        pool_check(options, canary),
        error_check(options, canary, baseline),
        latency_check(options, canary, baseline),
    ]
}

fn pool_check(o: &GateOptions, canary: &Snapshot) -> Check {
    let name = "pool utilisation";
    let Some((pool, used, max, util)) = canary.pool_utilisation() else {
        return Check {
            name,
            passed: false,
            detail: "canary exports no holdfast_db_pool_connections_{in_use,max}".into(),
        };
    };
    let projected = util / o.traffic_share;
    Check {
        name,
        passed: projected <= o.max_pool_utilisation,
        detail: format!(
            "canary pool {pool} at {used}/{max} ({:.1}%) on {:.1}% of traffic projects to {:.1}% at full traffic (limit {:.1}%)",
            util * 100.0,
            o.traffic_share * 100.0,
            projected * 100.0,
            o.max_pool_utilisation * 100.0
        ),
    }
}

fn error_check(o: &GateOptions, canary: &Snapshot, baseline: &Snapshot) -> Check {
    let name = "error rate";
    let (Some(c), Some(b)) = (canary.error_rate(), baseline.error_rate()) else {
        return Check {
            name,
            passed: false,
            detail: format!(
                "no requests counted in holdfast_http_requests_total (canary {}, baseline {})",
                canary.requests, baseline.requests
            ),
        };
    };
    let ratio = c / b.max(ERROR_RATE_FLOOR);
    Check {
        name,
        passed: ratio <= o.max_error_rate_ratio,
        detail: format!(
            "canary {:.3}% ({}/{}) vs baseline {:.3}% ({}/{}): ratio {ratio:.2} (limit {:.2}, baseline floor {:.1}%)",
            c * 100.0,
            canary.server_errors,
            canary.requests,
            b * 100.0,
            baseline.server_errors,
            baseline.requests,
            o.max_error_rate_ratio,
            ERROR_RATE_FLOOR * 100.0
        ),
    }
}

fn latency_check(o: &GateOptions, canary: &Snapshot, baseline: &Snapshot) -> Check {
    let name = "p99 latency";
    let (Some(c), Some(b)) = (canary.quantile(0.99), baseline.quantile(0.99)) else {
        return Check {
            name,
            passed: false,
            detail: "no observations in holdfast_http_request_duration_seconds_bucket".into(),
        };
    };
    let ratio = if b > 0.0 { c / b } else { f64::INFINITY };
    Check {
        name,
        passed: ratio <= o.max_p99_ratio,
        detail: format!(
            "canary {:.1} ms vs baseline {:.1} ms: ratio {ratio:.2} (limit {:.2})",
            c * 1000.0,
            b * 1000.0,
            o.max_p99_ratio
        ),
    }
}

/// Fetches a `/metrics` page; a bare base URL gets `/metrics` appended.
pub async fn scrape(client: &reqwest::Client, url: &str) -> Result<Snapshot> {
    let mut parsed = url::Url::parse(url).with_context(|| format!("invalid URL {url}"))?;
    if !parsed.path().ends_with("/metrics") {
        let path = format!("{}/metrics", parsed.path().trim_end_matches('/'));
        parsed.set_path(&path);
    }
    let response = client
        .get(parsed.clone())
        .send()
        .await
        .with_context(|| format!("scraping {parsed}"))?;
    if !response.status().is_success() {
        bail!("scraping {parsed}: HTTP {}", response.status());
    }
    let text = response.text().await.with_context(|| format!("reading {parsed}"))?;
    snapshot(&text).with_context(|| format!("reading metrics from {parsed}"))
}

/// Renders the checks, one per line, and the verdict.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let verdict = if c.passed { "ok   " } else { "BLOCK" };
        out.push_str(&format!("{verdict} {:<17} {}\n", c.name, c.detail));
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    if failed == 0 {
        out.push_str("canary-gate: promote (all checks passed)\n");
    } else {
        out.push_str(&format!(
            "canary-gate: BLOCK promotion ({failed} of {} checks failed)\n",
            checks.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_interpolates_inside_the_bucket() {
        let s = snapshot(
            "holdfast_http_request_duration_seconds_bucket{route=\"a\",le=\"0.1\"} 90\n\
             holdfast_http_request_duration_seconds_bucket{route=\"a\",le=\"0.2\"} 100\n\
             holdfast_http_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 100\n",
        )
        .ok();
        let p99 = s.and_then(|s| s.quantile(0.99)).unwrap_or_default();
        assert!((p99 - 0.19).abs() < 1e-9, "p99 = {p99}");
    }
}
