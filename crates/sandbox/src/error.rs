//! Stripe's error envelope, `{"error": {"type", "code"?, "message", "param"?}}`.
//!
//! The warehouse sandbox uses the same envelope so a client only learns one shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One API error in Stripe's shape, with the HTTP status it is sent with.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
            param: None,
        }
    }

    /// A required or invalid parameter, named like Stripe names it (`metadata[order_id]`).
    pub fn invalid_param(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            param: Some(param),
            ..Self::invalid_request(message)
        }
    }

    pub fn missing_resource(kind: &str, id: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Some("resource_missing"),
            ..Self::invalid_request(format!("No such {kind}: '{id}'"))
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            ..Self::invalid_request(message)
        }
    }

    pub fn idempotency_mismatch() -> Self {
        Self {
            kind: "idempotency_error",
            ..Self::invalid_request(
                "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                 Try using a key other than the one used for the original request.",
            )
        }
    }

    pub fn injected_failure() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "api_error",
            code: None,
            message: "An unexpected error occurred (injected by the sandbox). Nothing was changed; retrying \
                      with the same idempotency key is safe."
                .to_owned(),
            param: None,
        }
    }

    pub fn body(&self) -> String {
        let mut error = json!({ "type": self.kind, "message": self.message });
        if let Some(code) = self.code {
            error["code"] = json!(code);
        }
        if let Some(param) = self.param {
            error["param"] = json!(param);
        }
        json!({ "error": error }).to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, self.body())
    }
}

/// A JSON body that is already serialised (stored idempotent responses are kept as text
/// so a replay is byte-for-byte the original).
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}
