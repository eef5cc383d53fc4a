//! pgbouncer.ini → JSON. Hand-written because PgBouncer's dialect (`%include`,
//! `;` comments, libpq connection strings as values in `[databases]`) is not
//! the INI any general crate parses, and every error must name its line.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::documents::{Connection, ParseError};

/// How deep `%include` may nest before we assume a cycle.
const MAX_INCLUDE_DEPTH: usize = 8;

/// A parsed pgbouncer.ini: the JSON document, the `[databases]` entries as
/// connections, and the line of every `section.key` for error locations.
pub struct Parsed {
    pub doc: Value,
    pub connections: Vec<Connection>,
    pub lines: Vec<(String, PathBuf, u32)>,
}

pub fn parse(path: &Path, text: &str) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed {
        doc: Value::Object(Map::new()),
        connections: Vec::new(),
        lines: Vec::new(),
    };
    let mut section = String::from("pgbouncer");
    parse_into(path, text, &mut section, &mut parsed, 0)?;
    Ok(parsed)
}

fn parse_into(path: &Path, text: &str, section: &mut String, out: &mut Parsed, depth: usize) -> Result<(), ParseError> {
    for (i, raw) in text.lines().enumerate() {
        let line_no = (i + 1) as u32;
        let err = |msg: String| ParseError::new(path, Some(line_no), msg);
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(include) = line.strip_prefix("%include") {
            include_file(path, include.trim(), section, out, depth).map_err(|e| match e.line {
                // Errors inside the included file keep their own location;
                // a missing file is reported at the directive.
                Some(_) => e,
                None => err(e.message),
            })?;
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| err(format!("unterminated section header `{line}`")))?;
            *section = name.trim().to_lowercase();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err(format!("expected `key = value`, found `{line}`")))?;
        let key = key.trim().to_string();
        if key.is_empty() {
            return Err(err("empty key before `=`".to_string()));
        }
        let value = value.trim();
        let dotted = format!("{section}.{key}");
        let entry = if section == "databases" {
            let conn = parse_connstr(&dotted, value);
            let fields = conn.fields.clone();
            out.connections.push(conn);
            fields
        } else {
            scalar(value)
        };
        if let Some(obj) = out.doc.as_object_mut() {
            let sect = obj.entry(section.clone()).or_insert_with(|| Value::Object(Map::new()));
            if let Some(sect) = sect.as_object_mut() {
                sect.insert(key, entry);
            }
        }
        out.lines.push((dotted, path.to_path_buf(), line_no));
    }
    Ok(())
}

fn include_file(
    path: &Path,
    target: &str,
    section: &mut String,
    out: &mut Parsed,
    depth: usize,
) -> Result<(), ParseError> {
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(ParseError::new(
            path,
            None,
            format!("%include nested deeper than {MAX_INCLUDE_DEPTH} levels (a cycle?)"),
        ));
    }
    let target = target.trim_matches(|c| c == '"' || c == '\'');
    // PgBouncer resolves relative includes against its working directory; a
    // config checked into a repository only makes sense relative to itself.
    let resolved = path.parent().unwrap_or(Path::new(".")).join(target);
    let text = std::fs::read_to_string(&resolved)
        .map_err(|e| ParseError::new(path, None, format!("cannot read %include {}: {e}", resolved.display())))?;
    parse_into(&resolved, &text, section, out, depth + 1)
}

/// Numbers become JSON numbers so policies can compare them.
fn scalar(value: &str) -> Value {
    let unquoted = value.trim_matches('"');
    if let Ok(n) = unquoted.parse::<i64>() {
        return json!(n);
    }
    if let Ok(n) = unquoted.parse::<f64>() {
        return json!(n);
    }
    Value::String(unquoted.to_string())
}

/// Parses a libpq-style `key=value key='quoted value'` string, as used in the
/// `[databases]` section.
pub fn parse_connstr(key: &str, raw: &str) -> Connection {
    let mut fields = Map::new();
    let mut error = None;
    let mut chars = raw.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if name.is_empty() || name.contains(char::is_whitespace) {
            error = Some(format!("expected `name=value` in `{raw}`"));
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                error = Some(format!("unterminated quote in `{name}` value"));
                break;
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        fields.insert(name, scalar(&value));
    }
    let host = fields.get("host").and_then(Value::as_str).map(str::to_string);
    if error.is_none()
        && let Some(port) = fields.get("port")
        && !port.is_u64()
    {
        let shown = port.as_str().map_or_else(|| port.to_string(), str::to_string);
        error = Some(format!("port `{shown}` is not a number"));
    }
    if let Some(pw) = fields.get_mut("password") {
        *pw = Value::String("***".into());
    }
    Connection {
        key: key.to_string(),
        host,
        fields: Value::Object(fields),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_connstr_and_hides_password() {
        let c = parse_connstr("databases.app", "host=db.internal port=6432 dbname=app password='s e'");
        assert_eq!(c.host.as_deref(), Some("db.internal"));
        assert_eq!(c.fields["port"], json!(6432));
        assert_eq!(c.fields["password"], json!("***"));
        assert!(c.error.is_none());
    }

    #[test]
    fn rejects_garbage_connstr() {
        let c = parse_connstr("databases.app", "host db.internal");
        assert!(c.error.is_some());
    }
}
