//! Findings and their rendering (human, JSON, GitHub annotations, SARIF 2.1.0),
//! shared by the migration linter and the policy checker so both speak the same
//! formats and the same exit-code convention.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

/// How serious a finding is. Only `Error` fails a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing a tool wants a human to look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The rule that produced it, e.g. `require-concurrent-index-creation` or
    /// `holdfast.policy.pgbouncer_pool/deny`.
    pub rule: String,
    pub message: String,
    pub file: String,
    /// 1-based; `None` when the finding is about the file as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// Dotted key path inside a config file, e.g. `pgbouncer.max_client_conn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Finding {
    pub fn new(severity: Severity, rule: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity,
            rule: rule.into(),
            message: message.into(),
            file: String::new(),
            line: None,
            column: None,
            path: None,
            baseline: None,
            value: None,
            help: None,
        }
    }

    pub fn at(mut self, file: impl Into<String>, line: Option<u32>, column: Option<u32>) -> Self {
        self.file = file.into();
        self.line = line;
        self.column = column;
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn location(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            (Some(l), None) => format!("{}:{l}", self.file),
            _ => self.file.clone(),
        }
    }
}

/// The rule name used for input that could not be read or parsed. Such a
/// finding makes the run exit 2 rather than 1, so a pipeline can tell "your
/// change is unsafe" from "the tool could not understand your change".
pub const PARSE_ERROR_RULE: &str = "parse-error";

/// Process exit code for a set of findings: 2 on a parse error, 1 on any
/// error-level finding, 0 otherwise.
pub fn exit_code(findings: &[Finding]) -> i32 {
    if findings.iter().any(|f| f.rule == PARSE_ERROR_RULE) {
        2
    } else if findings.iter().any(|f| f.severity == Severity::Error) {
        1
    } else {
        0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Human,
    Json,
    Github,
    Sarif,
}

/// Renders findings in the chosen format. `tool` names the command in SARIF
/// and in the human summary line.
pub fn render(format: Format, tool: &str, findings: &[Finding]) -> String {
    match format {
        Format::Human => render_human(tool, findings),
        Format::Json => render_json(findings),
        Format::Github => render_github(findings),
        Format::Sarif => render_sarif(tool, findings),
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_human(tool: &str, findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(
            out,
            "{}: {} [{}]: {}",
            f.location(),
            f.severity.label(),
            f.rule,
            f.message
        );
        if let Some(path) = &f.path {
            let _ = writeln!(out, "  key:      {path}");
        }
        if let Some(b) = &f.baseline {
            let _ = writeln!(out, "  baseline: {}", render_value(b));
        }
        if let Some(v) = &f.value {
            let _ = writeln!(out, "  value:    {}", render_value(v));
        }
        if let Some(h) = &f.help {
            let _ = writeln!(out, "  help:     {h}");
        }
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(
        out,
        "{tool}: {} error(s), {} warning(s), {} note(s)",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note)
    );
    out
}

fn render_json(findings: &[Finding]) -> String {
    let doc = json!({ "findings": findings, "exit_code": exit_code(findings) });
    // Serialising a `Value` built from plain strings and numbers cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// GitHub Actions workflow commands: the message must stay on one line, so
/// newlines and the characters the runner treats specially are escaped.
fn render_github(findings: &[Finding]) -> String {
    fn escape_data(s: &str) -> String {
        s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
    }
    fn escape_property(s: &str) -> String {
        escape_data(s).replace(':', "%3A").replace(',', "%2C")
    }
    let mut out = String::new();
    for f in findings {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "notice",
        };
        let mut props = vec![format!("file={}", escape_property(&f.file))];
        if let Some(l) = f.line {
            props.push(format!("line={l}"));
        }
        if let Some(c) = f.column {
            props.push(format!("col={c}"));
        }
        props.push(format!("title={}", escape_property(&f.rule)));
        let mut msg = f.message.clone();
        if let Some(path) = &f.path {
            msg.push_str(&format!(" (key {path}"));
            if let Some(b) = &f.baseline {
                msg.push_str(&format!(", baseline {}", render_value(b)));
            }
            if let Some(v) = &f.value {
                msg.push_str(&format!(", value {}", render_value(v)));
            }
            msg.push(')');
        }
        let _ = writeln!(out, "::{level} {}::{}", props.join(","), escape_data(&msg));
    }
    out
}

fn render_sarif(tool: &str, findings: &[Finding]) -> String {
    let mut rules: Vec<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut region = serde_json::Map::new();
            if let Some(l) = f.line {
                region.insert("startLine".into(), json!(l));
            }
            if let Some(c) = f.column {
                region.insert("startColumn".into(), json!(c));
            }
            let mut physical = json!({ "artifactLocation": { "uri": f.file } });
            if !region.is_empty() {
                physical["region"] = Value::Object(region);
            }
            let mut result = json!({
                "ruleId": f.rule,
                "level": f.severity.label(),
                "message": { "text": f.message },
                "locations": [ { "physicalLocation": physical } ],
            });
            let mut props = serde_json::Map::new();
            for (k, v) in [
                ("path", f.path.clone().map(Value::String)),
                ("baseline", f.baseline.clone()),
                ("value", f.value.clone()),
            ] {
                if let Some(v) = v {
                    props.insert(k.into(), v);
                }
            }
            if !props.is_empty() {
                result["properties"] = Value::Object(props);
            }
            result
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": tool,
                "rules": rules.iter().map(|r| json!({ "id": r })).collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// 1-based line and column of a byte offset, for tools that only know offsets.
pub fn line_col(text: &str, offset: usize) -> (u32, u32) {
    // Work on bytes so an offset inside a multi-byte character cannot panic.
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |nl| nl + 1);
    let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line as u32, col as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 0), (1, 1));
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
    }

    #[test]
    fn parse_errors_win_over_errors() {
        let e = Finding::new(Severity::Error, "x", "m");
        let p = Finding::new(Severity::Error, PARSE_ERROR_RULE, "m");
        assert_eq!(exit_code(std::slice::from_ref(&e)), 1);
        assert_eq!(exit_code(&[e, p]), 2);
        assert_eq!(exit_code(&[Finding::new(Severity::Warning, "x", "m")]), 0);
    }
}
