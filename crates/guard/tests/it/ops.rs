//! The shipped ops files: valid for promtool and amtool, routed the way the
//! policy checker believes they are, and with a pool-utilisation panel.

use std::process::Command;

use holdfast_guard::policy::routing::{Labels, receivers_for};
use serde_json::Value;

use crate::support::{repo_root, unavailable};

/// Runs a tool from the `prometheus` / `prometheus-alertmanager` packages;
/// `None` (after skipping) when it is not installed.
fn run(tool: &str, args: &[&str]) -> Option<(bool, String)> {
    match Command::new(tool).args(args).current_dir(repo_root()).output() {
        Ok(out) => Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )),
        Err(e) => {
            unavailable(tool, e);
            None
        }
    }
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let Some((ok, out)) = run("promtool", &["check", "rules", "ops/prometheus/alerts.yml"]) else {
        return;
    };
    assert!(ok, "{out}");
}

#[test]
fn amtool_accepts_the_alertmanager_config() {
    let Some((ok, out)) = run("amtool", &["check-config", "ops/alertmanager/alertmanager.yml"]) else {
        return;
    };
    assert!(ok, "{out}");
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).expect("reading ops file");
    serde_norway::from_str(&text).expect("ops file is YAML")
}

/// Every alert's receivers, as amtool computes them, match our route walker;
/// and every database/pool alert reaches the pager.
#[test]
fn amtool_routes_agree_with_the_policy_walker() {
    let rules = yaml("ops/prometheus/alerts.yml");
    let config = yaml("ops/alertmanager/alertmanager.yml");
    let mut alerts = 0;
    for rule in rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        alerts += 1;
        let mut labels: Labels = rule["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        labels.insert("alertname".into(), alert.into());
        let mut args = vec![
            "config".to_string(),
            "routes".into(),
            "test".into(),
            "--config.file=ops/alertmanager/alertmanager.yml".into(),
        ];
        args.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some((ok, out)) = run("amtool", &args) else {
            return;
        };
        assert!(ok, "{out}");
        let amtool_receivers: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with("Warning"))
            .flat_map(|l| l.split(','))
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        let ours = receivers_for(&config["route"], &labels).expect("routes parse");
        assert_eq!(ours, amtool_receivers, "alert {alert}");
        let database = ["db", "database", "postgres", "pgbouncer", "pool"]
            .iter()
            .any(|w| alert.to_lowercase().contains(w) || labels.values().any(|v| v.contains(w)));
        if database {
            assert_eq!(ours, vec!["oncall-pager".to_string()], "alert {alert} must page");
        }
    }
    assert!(alerts >= 8, "expected the shipped alerts, found {alerts}");
}

#[test]
fn alert_rules_cover_the_required_signals() {
    let text = std::fs::read_to_string(repo_root().join("ops/prometheus/alerts.yml")).expect("reading alerts");
    for metric in [
        "holdfast_db_pool_connections_in_use",
        "holdfast_db_pool_connections_max",
        "holdfast_db_connection_errors_total",
        "holdfast_breaker_state",
        "holdfast_queue_dead_letter_jobs",
        "holdfast_outbox_lag_seconds",
        "holdfast_webhook_endpoint_failing",
        "holdfast_queue_oldest_job_age_seconds",
    ] {
        assert!(text.contains(metric), "no alert reads {metric}");
    }
}

#[test]
fn dashboard_has_a_pool_utilisation_panel() {
    let text = std::fs::read_to_string(repo_root().join("ops/grafana/holdfast.json")).expect("reading dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panel = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"].as_str().is_some_and(|t| t.contains("pool utilisation")))
        .expect("a pool utilisation panel");
    let expr = panel["targets"][0]["expr"].as_str().unwrap_or_default();
    assert!(
        expr.contains("holdfast_db_pool_connections_in_use / holdfast_db_pool_connections_max"),
        "{expr}"
    );
}
