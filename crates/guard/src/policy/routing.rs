//! Walks an Alertmanager route tree the way Alertmanager does, to find the
//! receivers an alert with given labels reaches.
//!
//! This lives in Rust, not Rego, because Rego forbids recursive rules and a
//! route tree has any depth. The policies get the result as
//! `input.alert_routing` and decide in Rego whether a receiver pages.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    NotEq,
    Re,
    NotRe,
}

#[derive(Debug)]
struct Matcher {
    name: String,
    op: Op,
    value: String,
    regex: Option<Regex>,
}

impl Matcher {
    fn new(name: &str, op: Op, value: &str) -> Result<Matcher, String> {
        let regex = match op {
            Op::Re | Op::NotRe => Some(
                // Alertmanager anchors matcher regexes at both ends.
                Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("bad regex in matcher {name}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    fn matches(&self, labels: &Labels) -> bool {
        // A missing label matches as the empty string, as in Alertmanager.
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (Op::Eq, _) => v == self.value,
            (Op::NotEq, _) => v != self.value,
            (Op::Re, Some(re)) => re.is_match(v),
            (Op::NotRe, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

/// Parses one `matchers:` entry such as `severity="critical"` or
/// `alertname=~"Holdfast.*"`.
fn parse_matcher(text: &str) -> Result<Matcher, String> {
    let text = text.trim().trim_start_matches('{').trim_end_matches('}');
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(|| format!("matcher `{text}` has no operator"))?;
    let (name, rest) = text.split_at(name_end);
    let rest = rest.trim_start();
    let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
        (Op::Re, v)
    } else if let Some(v) = rest.strip_prefix("!~") {
        (Op::NotRe, v)
    } else if let Some(v) = rest.strip_prefix("!=") {
        (Op::NotEq, v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (Op::Eq, v)
    } else {
        return Err(format!("matcher `{text}` has no operator"));
    };
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Matcher::new(name.trim(), op, &value.replace("\\\"", "\""))
}

fn route_matchers(route: &Value) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for (k, v) in route["match"].as_object().into_iter().flatten() {
        out.push(Matcher::new(k, Op::Eq, v.as_str().unwrap_or_default())?);
    }
    for (k, v) in route["match_re"].as_object().into_iter().flatten() {
        out.push(Matcher::new(k, Op::Re, v.as_str().unwrap_or_default())?);
    }
    for m in route["matchers"].as_array().into_iter().flatten() {
        out.push(parse_matcher(m.as_str().unwrap_or_default())?);
    }
    Ok(out)
}

/// The receivers an alert reaches, in route order, deduplicated.
pub fn receivers_for(root: &Value, labels: &Labels) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let receiver = root["receiver"].as_str().unwrap_or_default();
    // The root route matches every alert, whatever matchers it carries.
    walk_children(root, receiver, labels, &mut out)?;
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|r| seen.insert(r.clone()));
    Ok(out)
}

/// Tries the children in order; a matching child without `continue: true`
/// stops the search. With no matching child, the node itself receives.
fn walk_children(node: &Value, receiver: &str, labels: &Labels, out: &mut Vec<String>) -> Result<(), String> {
    let before = out.len();
    for child in node["routes"].as_array().into_iter().flatten() {
        if !route_matchers(child)?.iter().all(|m| m.matches(labels)) {
            continue;
        }
        let child_receiver = child["receiver"].as_str().unwrap_or(receiver);
        walk_children(child, child_receiver, labels, out)?;
        if !child["continue"].as_bool().unwrap_or(false) {
            break;
        }
    }
    if out.len() == before {
        out.push(receiver.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn first_match_wins_unless_continue() {
        let route = json!({
            "receiver": "default",
            "routes": [
                { "receiver": "audit", "matchers": ["team=~\"db|payments\""], "continue": true },
                { "receiver": "pager", "matchers": ["severity=\"page\""] },
                { "receiver": "slack", "match": { "severity": "page" } },
            ]
        });
        let got = receivers_for(&route, &labels(&[("team", "db"), ("severity", "page")]));
        assert_eq!(got, Ok(vec!["audit".to_string(), "pager".to_string()]));
        let got = receivers_for(&route, &labels(&[("severity", "ticket")]));
        assert_eq!(got, Ok(vec!["default".to_string()]));
    }

    #[test]
    fn child_inherits_receiver() {
        let route = json!({
            "receiver": "pager",
            "routes": [{ "matchers": ["a!=\"x\""], "group_by": ["a"] }]
        });
        assert_eq!(
            receivers_for(&route, &labels(&[("a", "y")])),
            Ok(vec!["pager".to_string()])
        );
    }
}
