//! The SDK's error type and RFC 9457 problem details.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-2xx status (after any retries).
    #[error("HTTP {status} {}: {}{}", problem.code, problem.title, problem.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Api { status: u16, problem: Problem },
    /// No usable response: connection refused or reset, timeout, invalid URL.
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// A 2xx response whose body is not the expected shape.
    #[error("could not decode the HTTP {status} response: {source}")]
    Decode {
        status: u16,
        #[source]
        source: serde_json::Error,
        /// The start of the body, for debugging.
        body: String,
    },
}

impl Error {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Decode { status, .. } => Some(*status),
            Self::Transport(error) => error.status().map(|s| s.as_u16()),
        }
    }

    /// The problem's stable `code` (`out_of_stock`, `idempotency_conflict`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { problem, .. } => Some(&problem.code),
            _ => None,
        }
    }

    /// The problem details of an API error.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Api { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// An `application/problem+json` body (RFC 9457) with Holdfast's `code` and field
/// errors. Every field has a default and unknown members land in `extensions`, so a
/// server that adds fields never breaks a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(default = "about_blank")]
    pub r#type: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default)]
    pub code: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

/// One invalid field of a rejected request, by path (`items[0].qty`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldError {
    #[serde(default, alias = "path", alias = "pointer")]
    pub field: String,
    #[serde(default)]
    pub message: String,
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

/// How much of an unexpected body is kept in an error.
const BODY_SNIPPET: usize = 2048;

pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(BODY_SNIPPET).collect()
}

impl Problem {
    /// Reads a problem from an error body. A body that is not problem JSON (a proxy's
    /// HTML page, plain text from a framework) still becomes a `Problem`, with the
    /// HTTP reason as title, code `http_error`, and the body as detail.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<Problem>(body) {
            Ok(mut problem) if !problem.code.is_empty() || !problem.title.is_empty() => {
                if problem.status == 0 {
                    problem.status = status;
                }
                problem
            }
            _ => {
                let reason = reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Unexpected status");
                let detail = snippet(body);
                Problem {
                    r#type: about_blank(),
                    title: reason.to_owned(),
                    status,
                    detail: (!detail.trim().is_empty()).then_some(detail),
                    instance: None,
                    code: "http_error".to_owned(),
                    errors: Vec::new(),
                    extensions: Map::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_keep_unknown_members() {
        let body = br#"{"type":"https://holdfast.dev/problems/invalid-cart","title":"Invalid cart","status":422,
            "code":"invalid_cart","errors":[{"field":"items[0].qty","message":"must be at least 1","rule":"min"}],
            "trace_id":"abc"}"#;
        let problem = Problem::from_response(422, body);
        assert_eq!(problem.code, "invalid_cart");
        assert_eq!(problem.errors[0].field, "items[0].qty");
        assert_eq!(problem.errors[0].extensions.get("rule"), Some(&Value::from("min")));
        assert_eq!(problem.extensions.get("trace_id"), Some(&Value::from("abc")));
    }

    #[test]
    fn a_non_problem_body_still_becomes_a_problem() {
        let problem = Problem::from_response(413, b"length limit exceeded");
        assert_eq!(problem.status, 413);
        assert_eq!(problem.code, "http_error");
        assert_eq!(problem.title, "Payload Too Large");
        assert_eq!(problem.detail.as_deref(), Some("length limit exceeded"));
        let empty = Problem::from_response(502, b"");
        assert_eq!(empty.detail, None);
    }

    #[test]
    fn a_problem_without_status_takes_the_http_one() {
        let problem = Problem::from_response(409, br#"{"code":"idempotency_conflict","title":"Conflict"}"#);
        assert_eq!(problem.status, 409);
        assert_eq!(problem.r#type, "about:blank");
    }
}
