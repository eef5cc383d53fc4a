//! Turns deploy files (pgbouncer.ini, holdfast.toml, Terraform `.tf` and plan
//! JSON, Prometheus rules, Alertmanager configs) into the JSON documents the
//! Rego policies read. Every parse failure names the file and, where the
//! parser knows it, the line.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::pgbouncer;
use crate::output::line_col;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Pgbouncer,
    Holdfast,
    Terraform,
    TerraformPlan,
    PrometheusRules,
    Alertmanager,
    Yaml,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub file: PathBuf,
    pub line: Option<u32>,
    pub message: String,
}

impl ParseError {
    pub fn new(file: &Path, line: Option<u32>, message: impl Into<String>) -> Self {
        ParseError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// A database connection found in a file, parsed into fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    /// Key path of the connection string, e.g. `databases.holdfast` or
    /// `database.url`.
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// All parsed fields, password masked.
    pub fields: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One file as the policies see it.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub path: String,
    pub kind: FileKind,
    pub doc: Value,
    pub connections: Vec<Connection>,
    /// Terraform resources from `.tf` or a plan, one shape for both:
    /// `{type, name, address, values}`.
    pub resources: Vec<Value>,
    #[serde(skip)]
    pub text: String,
    /// `(key path, line)` pairs where the parser knows them exactly.
    #[serde(skip)]
    pub lines: Vec<(String, u32)>,
}

pub fn load(path: &Path) -> Result<Document, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|e| ParseError::new(path, None, format!("cannot read: {e}")))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_lowercase();
    let mut document = Document {
        path: path.display().to_string(),
        kind: FileKind::Json,
        doc: Value::Null,
        connections: Vec::new(),
        resources: Vec::new(),
        text: String::new(),
        lines: Vec::new(),
    };
    match ext.as_str() {
        "ini" => load_pgbouncer(path, &text, &mut document)?,
        "toml" => load_holdfast(path, &text, &mut document)?,
        "tf" => load_terraform(path, &text, &mut document)?,
        "json" => load_json(path, &text, &mut document)?,
        "yml" | "yaml" => load_yaml(path, &text, &mut document)?,
        _ if text.contains("[pgbouncer]") || text.contains("[databases]") => {
            load_pgbouncer(path, &text, &mut document)?
        }
        _ => {
            return Err(ParseError::new(
                path,
                None,
                "unknown file kind: expected .ini, .toml, .tf, .json, .yml or .yaml",
            ));
        }
    }
    document.text = text;
    Ok(document)
}

fn load_pgbouncer(path: &Path, text: &str, d: &mut Document) -> Result<(), ParseError> {
    let parsed = pgbouncer::parse(path, text)?;
    d.kind = FileKind::Pgbouncer;
    d.doc = parsed.doc;
    d.connections = parsed.connections;
    // Keys from included files point at the including file's %include line
    // only through their own file; keep the lines that belong to this file.
    d.lines = parsed
        .lines
        .into_iter()
        .filter(|(_, file, _)| file == path)
        .map(|(k, _, l)| (k, l))
        .collect();
    Ok(())
}

fn load_holdfast(path: &Path, text: &str, d: &mut Document) -> Result<(), ParseError> {
    let value: toml::Value = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_col(text, s.start).0);
        ParseError::new(path, line, e.message().to_string())
    })?;
    d.kind = FileKind::Holdfast;
    d.doc = serde_json::to_value(value)
        .map_err(|e| ParseError::new(path, None, format!("converting TOML to JSON: {e}")))?;
    if let Some(database) = d.doc.get("database").and_then(Value::as_object) {
        for (key, value) in database {
            if key == "url" || key.ends_with("_url") {
                let raw = value.as_str().unwrap_or_default();
                d.connections
                    .push(parse_url_connection(&format!("database.{key}"), raw));
            }
        }
    }
    Ok(())
}

/// A `postgres://user:pass@host:port/db` URL as a connection.
pub fn parse_url_connection(key: &str, raw: &str) -> Connection {
    let mut conn = Connection {
        key: key.to_string(),
        host: None,
        fields: Value::Object(Map::new()),
        error: None,
    };
    match url::Url::parse(raw) {
        Ok(u) if u.scheme() == "sqlite" => {
            conn.fields = json!({ "scheme": "sqlite", "path": u.path() });
        }
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
            conn.host = u.host_str().map(str::to_string);
            conn.fields = json!({
                "scheme": u.scheme(),
                "host": u.host_str(),
                "port": u.port().unwrap_or(5432),
                "dbname": u.path().trim_start_matches('/'),
                "user": u.username(),
            });
            if conn.host.as_deref().is_none_or(str::is_empty) {
                conn.error = Some("no host in the database URL".into());
            }
        }
        Ok(u) => conn.error = Some(format!("unsupported scheme `{}`", u.scheme())),
        Err(e) => conn.error = Some(format!("not a URL: {e}")),
    }
    conn
}

fn load_terraform(path: &Path, text: &str, d: &mut Document) -> Result<(), ParseError> {
    let value: Value = hcl::from_str(text).map_err(|e| match &e {
        hcl::Error::Parse(p) => ParseError::new(path, Some(p.location().line() as u32), p.message().to_string()),
        other => ParseError::new(path, None, other.to_string()),
    })?;
    d.kind = FileKind::Terraform;
    d.resources = hcl_resources(&value);
    d.doc = value;
    Ok(())
}

/// `resource "type" "name" { … }` blocks, flattened.
fn hcl_resources(doc: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let Some(types) = doc.get("resource").and_then(Value::as_object) else {
        return out;
    };
    for (ty, by_name) in types {
        let Some(by_name) = by_name.as_object() else {
            continue;
        };
        for (name, body) in by_name {
            // Repeated blocks of the same type and name deserialise as an array.
            let bodies = match body {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            for values in bodies {
                out.push(json!({
                    "type": ty, "name": name, "address": format!("{ty}.{name}"), "values": values,
                }));
            }
        }
    }
    out
}

fn load_json(path: &Path, text: &str, d: &mut Document) -> Result<(), ParseError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ParseError::new(path, Some(e.line() as u32), e.to_string()))?;
    if value.get("resource_changes").is_some() || value.get("planned_values").is_some() {
        d.kind = FileKind::TerraformPlan;
        d.resources = plan_resources(&value);
    } else {
        d.kind = FileKind::Json;
    }
    d.doc = value;
    Ok(())
}

/// Resources a plan will leave behind: `resource_changes[].change.after`,
/// falling back to `planned_values` (walked through child modules).
fn plan_resources(plan: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(changes) = plan.get("resource_changes").and_then(Value::as_array) {
        for rc in changes {
            let after = &rc["change"]["after"];
            if after.is_null() {
                continue; // deleted
            }
            out.push(json!({
                "type": rc["type"], "name": rc["name"], "address": rc["address"], "values": after,
            }));
        }
        return out;
    }
    let mut stack = vec![&plan["planned_values"]["root_module"]];
    while let Some(module) = stack.pop() {
        for r in module["resources"].as_array().into_iter().flatten() {
            out.push(json!({
                "type": r["type"], "name": r["name"], "address": r["address"], "values": r["values"],
            }));
        }
        stack.extend(module["child_modules"].as_array().into_iter().flatten());
    }
    out
}

fn load_yaml(path: &Path, text: &str, d: &mut Document) -> Result<(), ParseError> {
    let value: Value = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as u32);
        ParseError::new(path, line, e.to_string())
    })?;
    d.kind = if value.get("groups").is_some_and(Value::is_array) {
        FileKind::PrometheusRules
    } else if value.get("route").is_some() || value.get("receivers").is_some() {
        FileKind::Alertmanager
    } else {
        FileKind::Yaml
    };
    d.doc = value;
    Ok(())
}

/// Best-effort line of a key path in a file's text: the exact line when the
/// parser recorded it; else the first line that assigns the path's last
/// segment (`name = …`, `name: …`, `"name": …`); else, for paths like
/// `alert.Name`, the line that reads `alert: Name`.
pub fn line_of(doc: &Document, path: &str) -> Option<u32> {
    if let Some((_, line)) = doc.lines.iter().find(|(k, _)| k == path) {
        return Some(*line);
    }
    let mut segments = path.rsplit('.');
    let last = segments.next().filter(|s| !s.is_empty())?;
    let parent = segments.next();
    let find = |pred: &dyn Fn(&str) -> bool| {
        doc.text
            .lines()
            .position(|l| pred(l.trim_start().trim_start_matches("- ")))
            .map(|i| (i + 1) as u32)
    };
    find(&|l: &str| {
        let Some(rest) = l.trim_start_matches(['"', '\'']).strip_prefix(last) else {
            return false;
        };
        let rest = rest.trim_start_matches(['"', '\'']).trim_start();
        rest.starts_with('=') || rest.starts_with(':')
    })
    .or_else(|| {
        let parent = parent?;
        find(&|l: &str| {
            l.strip_prefix(parent)
                .and_then(|r| r.trim_start().strip_prefix([':', '=']))
                .is_some_and(|r| r.trim().trim_matches(['"', '\'']) == last)
        })
    })
}
