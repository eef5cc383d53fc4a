//! `holdfast policy check`: evaluates Rego policies over deploy configs,
//! compared with a known-good baseline, so a change such as PgBouncer's
//! `max_client_conn` cut from 200 to 20 fails the build, not the next busy morning.
//!
//! # The policy convention
//!
//! A policy is a Rego v1 module whose package is `holdfast.policy.<name>`. The
//! checker reads two rules from every such package:
//!
//! - `deny`: a set; each entry fails the check (exit 1);
//! - `warn`: a set; each entry is reported but does not fail.
//!
//! Each entry is an object `{msg, path, baseline?, value?, file?}` (a bare
//! string is accepted as `msg`): `path` is the dotted key path in the file
//! (`pgbouncer.max_client_conn`), `baseline` and `value` the old and new values,
//! `file` the file the finding belongs to (default: the first file given).
//!
//! The input document is:
//!
//! ```json
//! {
//!   "files": [{
//!     "path": "deploy/pgbouncer.ini",
//!     "kind": "pgbouncer | holdfast | terraform | terraform_plan | prometheus_rules | alertmanager | yaml | json",
//!     "doc": { "...": "the file as JSON" },
//!     "connections": [{"key": "databases.holdfast", "host": "db-1", "fields": {}, "error": "only when it does not parse"}],
//!     "resources": [{"type": "aws_db_instance", "name": "main", "address": "aws_db_instance.main", "values": {}}],
//!     "baseline": { "...": "the same shape for the matching --baseline file, or null" }
//!   }],
//!   "baselines": ["every --baseline file, same shape"],
//!   "fleet_nodes": 1,
//!   "alert_routing": [{"file": "alerts.yml", "alert": "HoldfastDbPoolSaturated", "labels": {},
//!                      "alertmanager": "alertmanager.yml", "receivers": ["pager"]}]
//! }
//! ```
//!
//! A file's baseline is the `--baseline` file of the same kind and file name,
//! else the only `--baseline` file of that kind. `alert_routing` holds, for
//! every alert rule in a Prometheus rule file and every Alertmanager config
//! given, the receivers its route tree sends that alert to.

pub mod documents;
pub mod engine;
pub mod pgbouncer;
pub mod routing;

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};

use crate::output::{Finding, PARSE_ERROR_RULE, Severity};
use documents::{Document, FileKind, ParseError};
use engine::Policies;
use routing::Labels;

#[derive(Debug, Clone)]
pub struct PolicyOptions {
    pub files: Vec<PathBuf>,
    pub baselines: Vec<PathBuf>,
    pub policy_dir: Option<PathBuf>,
    pub fleet_nodes: u32,
}

/// Runs every policy over the files; parse errors come back as findings.
pub fn check(options: &PolicyOptions) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let files = load_all(&options.files, &mut findings);
    let baselines = load_all(&options.baselines, &mut findings);
    if !findings.is_empty() {
        return Ok(findings);
    }
    let mut policies = Policies::load(options.policy_dir.as_deref())?;
    let input = build_input(&files, &baselines, options.fleet_nodes, &mut findings);
    for raw in policies.evaluate(&input)? {
        let doc = raw
            .file
            .as_deref()
            .and_then(|f| files.iter().find(|d| d.path == f))
            .or(files.first());
        let (file, line) = match (doc, &raw.path) {
            (Some(d), Some(p)) => (d.path.clone(), documents::line_of(d, p)),
            (Some(d), None) => (d.path.clone(), None),
            _ => (raw.file.clone().unwrap_or_default(), None),
        };
        findings.push(raw.into_finding(file, line));
    }
    findings.sort_by(|a, b| (&a.file, a.line, &a.rule, &a.message).cmp(&(&b.file, b.line, &b.rule, &b.message)));
    Ok(findings)
}

fn load_all(paths: &[PathBuf], findings: &mut Vec<Finding>) -> Vec<Document> {
    let mut out = Vec::new();
    for path in paths {
        match documents::load(path) {
            Ok(d) => out.push(d),
            Err(e) => findings.push(parse_error_finding(e)),
        }
    }
    out
}

fn parse_error_finding(e: ParseError) -> Finding {
    let message = match e.line {
        Some(l) => format!("cannot parse (line {l}): {}", e.message),
        None => format!("cannot parse: {}", e.message),
    };
    Finding::new(Severity::Error, PARSE_ERROR_RULE, message).at(e.file.display().to_string(), e.line, None)
}

fn file_name(d: &Document) -> Option<&str> {
    std::path::Path::new(&d.path).file_name().and_then(|n| n.to_str())
}

fn baseline_for<'a>(doc: &Document, baselines: &'a [Document]) -> Option<&'a Document> {
    let same_kind: Vec<&Document> = baselines.iter().filter(|b| b.kind == doc.kind).collect();
    same_kind
        .iter()
        .find(|b| file_name(b) == file_name(doc))
        .or_else(|| (same_kind.len() == 1).then(|| &same_kind[0]))
        .copied()
}

fn build_input(files: &[Document], baselines: &[Document], fleet_nodes: u32, findings: &mut Vec<Finding>) -> Value {
    let to_json = |d: &Document| serde_json::to_value(d).unwrap_or(Value::Null);
    let file_values: Vec<Value> = files
        .iter()
        .map(|d| {
            let mut v = to_json(d);
            v["baseline"] = baseline_for(d, baselines).map_or(Value::Null, to_json);
            v
        })
        .collect();
    json!({
        "files": file_values,
        "baselines": baselines.iter().map(to_json).collect::<Vec<_>>(),
        "fleet_nodes": fleet_nodes,
        "alert_routing": alert_routing(files, findings),
    })
}

/// For every alert rule × Alertmanager config, the receivers reached.
fn alert_routing(files: &[Document], findings: &mut Vec<Finding>) -> Vec<Value> {
    let mut out = Vec::new();
    let managers: Vec<&Document> = files.iter().filter(|d| d.kind == FileKind::Alertmanager).collect();
    for rules in files.iter().filter(|d| d.kind == FileKind::PrometheusRules) {
        for rule in rules.doc["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            let mut labels: Labels = rule["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
            labels.insert("alertname".into(), alert.to_string());
            for am in &managers {
                match routing::receivers_for(&am.doc["route"], &labels) {
                    Ok(receivers) => out.push(json!({
                        "file": rules.path, "alert": alert, "labels": labels,
                        "alertmanager": am.path, "receivers": receivers,
                    })),
                    Err(e) => findings.push(
                        Finding::new(Severity::Error, PARSE_ERROR_RULE, format!("cannot parse route: {e}")).at(
                            am.path.clone(),
                            documents::line_of(am, "matchers"),
                            None,
                        ),
                    ),
                }
            }
        }
    }
    out
}
