//! Evaluates the built-in and user Rego policies with `regorus` and turns
//! their `deny` / `warn` sets into findings.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::output::{Finding, Severity};

/// The policies shipped with the tool, one per failure they guard against (docs/incidents.md).
pub const BUILTIN_POLICIES: &[(&str, &str)] = &[
    (
        "pgbouncer_pool.rego",
        include_str!("../../policies/pgbouncer_pool.rego"),
    ),
    ("terraform_db.rego", include_str!("../../policies/terraform_db.rego")),
    ("alert_routing.rego", include_str!("../../policies/alert_routing.rego")),
    (
        "connection_hosts.rego",
        include_str!("../../policies/connection_hosts.rego"),
    ),
    (
        "payment_queue_ttl.rego",
        include_str!("../../policies/payment_queue_ttl.rego"),
    ),
];

/// Every package under this prefix is a policy; `deny` and `warn` are read
/// from each.
pub const PACKAGE_PREFIX: &str = "holdfast.policy.";

/// A policy finding before it is placed in a file.
#[derive(Debug, Clone)]
pub struct Raw {
    pub severity: Severity,
    pub rule: String,
    pub file: Option<String>,
    pub msg: String,
    pub path: Option<String>,
    pub baseline: Option<Value>,
    pub value: Option<Value>,
}

pub struct Policies {
    engine: regorus::Engine,
    packages: Vec<String>,
}

impl Policies {
    /// Loads the built-in policies and every `.rego` file in `user_dir`.
    pub fn load(user_dir: Option<&Path>) -> Result<Policies> {
        let mut engine = regorus::Engine::new();
        for (name, rego) in BUILTIN_POLICIES {
            engine
                .add_policy(format!("builtin/{name}"), (*rego).to_string())
                .with_context(|| format!("compiling built-in policy {name}"))?;
        }
        if let Some(dir) = user_dir {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| format!("reading policy directory {}", dir.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "rego"))
                .collect();
            files.sort();
            for file in files {
                let text =
                    std::fs::read_to_string(&file).with_context(|| format!("reading policy {}", file.display()))?;
                engine
                    .add_policy(file.display().to_string(), text)
                    .with_context(|| format!("compiling policy {}", file.display()))?;
            }
        }
        let mut packages: Vec<String> = engine
            .get_packages()
            .context("listing policy packages")?
            .into_iter()
            .filter_map(|p| p.strip_prefix("data.").map(str::to_string))
            .filter(|p| p.starts_with(PACKAGE_PREFIX))
            .collect();
        packages.sort();
        packages.dedup();
        if packages.is_empty() {
            bail!("no policy package named {PACKAGE_PREFIX}<name> was loaded");
        }
        Ok(Policies { engine, packages })
    }

    pub fn packages(&self) -> &[String] {
        &self.packages
    }

    /// Evaluates every policy's `deny` and `warn` against `input`.
    pub fn evaluate(&mut self, input: &Value) -> Result<Vec<Raw>> {
        let input = regorus::Value::from_json_str(&input.to_string())
            .context("handing the input document to the policy engine")?;
        self.engine.set_input(input);
        let mut out = Vec::new();
        for package in self.packages.clone() {
            for (rule, severity) in [("deny", Severity::Error), ("warn", Severity::Warning)] {
                let path = format!("data.{package}.{rule}");
                // A query on a rule the package does not define is simply
                // undefined (no results), so packages need not define both.
                let results = self
                    .engine
                    .eval_query(path.clone(), false)
                    .with_context(|| format!("evaluating {path}"))?;
                let Some(value) = results
                    .result
                    .first()
                    .and_then(|r| r.expressions.first())
                    .map(|e| e.value.clone())
                else {
                    continue;
                };
                let json: Value = serde_json::from_str(
                    &value
                        .to_json_str()
                        .with_context(|| format!("reading the result of {path}"))?,
                )
                .with_context(|| format!("reading the result of {path}"))?;
                let rule_name = format!("{}/{rule}", package.trim_start_matches(PACKAGE_PREFIX));
                for item in json.as_array().into_iter().flatten() {
                    out.push(to_raw(item, severity, &rule_name));
                }
            }
        }
        Ok(out)
    }
}

/// A `deny` entry may be a bare message string or an object
/// `{msg, path?, baseline?, value?, file?}`.
fn to_raw(item: &Value, severity: Severity, rule: &str) -> Raw {
    let get_str = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
    let present = |k: &str| item.get(k).filter(|v| !v.is_null()).cloned();
    Raw {
        severity,
        rule: rule.to_string(),
        file: get_str("file"),
        msg: match item {
            Value::String(s) => s.clone(),
            _ => get_str("msg").unwrap_or_else(|| item.to_string()),
        },
        path: get_str("path"),
        baseline: present("baseline"),
        value: present("value"),
    }
}

impl Raw {
    pub fn into_finding(self, file: String, line: Option<u32>) -> Finding {
        let mut f = Finding::new(self.severity, self.rule, self.msg).at(file, line, None);
        f.path = self.path;
        f.baseline = self.baseline;
        f.value = self.value;
        f
    }
}
