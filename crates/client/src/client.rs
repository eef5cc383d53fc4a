//! The client, its builder, and the one request loop every endpoint goes through.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{Error, Problem, snippet};
use crate::retry::{MAX_RETRY_AFTER, RetryPolicy, is_retryable_status, is_retryable_transport, retry_after};

/// The default per-attempt timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sent on every request so server logs can tell SDK versions apart.
const USER_AGENT: &str = concat!("holdfast-client/", env!("CARGO_PKG_VERSION"));

/// A Holdfast API client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    retry: RetryPolicy,
    timeout: Duration,
}

// The API key stays out of logs.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Builds a [`Client`] with non-default retries, timeout or HTTP client.
#[derive(Debug)]
pub struct ClientBuilder {
    base_url: String,
    api_key: String,
    retry: RetryPolicy,
    timeout: Duration,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: api_key.into(),
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            http: None,
        }
    }

    pub fn retries(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Timeout of one attempt (connect, send and read the whole response).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses a preconfigured `reqwest::Client` (proxies, TLS roots, connection limits).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    pub fn build(self) -> Client {
        Client {
            http: self.http.unwrap_or_default(),
            base_url: normalise_base_url(&self.base_url),
            api_key: self.api_key,
            retry: self.retry,
            timeout: self.timeout,
        }
    }
}

/// Accepts `http://host:port`, with or without a trailing slash or `/api/v1`.
fn normalise_base_url(base_url: &str) -> String {
    let trimmed = base_url.trim().trim_end_matches('/');
    trimmed.strip_suffix("/api/v1").unwrap_or(trimmed).to_owned()
}

/// Whether a call may be sent again after a failure.
#[derive(Debug, Clone)]
pub(crate) enum Retry {
    /// A `GET`, or a write the API defines as idempotent (such as a sync by batch id).
    Safe,
    /// A `POST` carrying this `Idempotency-Key`; the same key goes on every attempt.
    WithKey(String),
    /// A write with no key: sent once, whatever happens.
    Never,
}

/// One API call, described once and replayed as is on each attempt.
#[derive(Debug)]
pub(crate) struct Call {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
    pub retry: Retry,
}

impl Call {
    pub fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
            retry: Retry::Safe,
        }
    }

    pub fn post(path: String, body: &impl serde::Serialize, retry: Retry) -> Self {
        // Serialising the SDK's own plain data types to JSON cannot fail.
        let body = serde_json::to_vec(body).unwrap_or_default();
        Self {
            method: Method::POST,
            path,
            query: Vec::new(),
            body: Some(body),
            retry,
        }
    }
}

impl Client {
    /// A client with the default retry policy (4 attempts, 100 ms base, 5 s cap) and a
    /// 30 s per-attempt timeout. `base_url` is the server root, e.g. `http://127.0.0.1:8080`.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        ClientBuilder::new(base_url, api_key).build()
    }

    pub fn builder(base_url: impl Into<String>, api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url, api_key)
    }

    /// The inner HTTP client and the base URL, for tests that must send what the typed
    /// API cannot (malformed bodies, missing headers).
    pub fn raw(&self) -> (&reqwest::Client, &str) {
        (&self.http, &self.base_url)
    }

    /// The API key this client authenticates with, for hand-built requests.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The full URL of an API path such as `/api/v1/orders`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends `call` (retrying when allowed) and decodes a 2xx body as `T`.
    pub(crate) async fn execute<T: DeserializeOwned>(&self, call: Call) -> Result<T, Error> {
        let (status, body) = self.send_with_retries(&call).await?;
        serde_json::from_slice(&body).map_err(|source| Error::Decode {
            status: status.as_u16(),
            source,
            body: snippet(&body),
        })
    }

    async fn send_with_retries(&self, call: &Call) -> Result<(StatusCode, Vec<u8>), Error> {
        let max_attempts = match call.retry {
            Retry::Never => 1,
            Retry::Safe | Retry::WithKey(_) => self.retry.max_attempts.max(1),
        };
        let mut attempt = 1;
        loop {
            let wait = match self.send_once(call).await {
                Ok((status, _, body)) if status.is_success() => return Ok((status, body)),
                Ok((status, headers, body)) => {
                    let problem = Problem::from_response(status.as_u16(), &body);
                    let error = Error::Api {
                        status: status.as_u16(),
                        problem,
                    };
                    if attempt >= max_attempts || !should_retry_response(status, &error, &call.retry) {
                        return Err(error);
                    }
                    match retry_after(&headers) {
                        Some(wait) if wait > MAX_RETRY_AFTER => return Err(error),
                        Some(wait) => wait,
                        None => self.retry.backoff(attempt),
                    }
                }
                Err(error) => {
                    if attempt >= max_attempts || !is_retryable_transport(&error) {
                        return Err(Error::Transport(error));
                    }
                    self.retry.backoff(attempt)
                }
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn send_once(
        &self,
        call: &Call,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), reqwest::Error> {
        let mut request = self
            .http
            .request(call.method.clone(), self.url(&call.path))
            .bearer_auth(&self.api_key)
            .timeout(self.timeout)
            .header(reqwest::header::ACCEPT, "application/json, application/problem+json")
            .header(reqwest::header::USER_AGENT, USER_AGENT);
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = &call.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if let Retry::WithKey(key) = &call.retry {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok((status, headers, body.to_vec()))
    }
}

/// Transient statuses for calls that may be repeated; also a `409
/// idempotency_in_progress`, which means our own earlier attempt (one we gave up on
/// after a timeout) is still running on the server and its result will be replayed.
fn should_retry_response(status: StatusCode, error: &Error, retry: &Retry) -> bool {
    match retry {
        Retry::Never => false,
        Retry::Safe => is_retryable_status(status),
        Retry::WithKey(_) => {
            is_retryable_status(status)
                || (status == StatusCode::CONFLICT && error.code() == Some("idempotency_in_progress"))
        }
    }
}

/// Percent-encodes one path segment (a SKU or an id), keeping RFC 3986 unreserved bytes.
pub(crate) fn segment(raw: &str) -> String {
    let mut encoded = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        for base in ["http://h:1", "http://h:1/", "http://h:1/api/v1", "http://h:1/api/v1/"] {
            assert_eq!(normalise_base_url(base), "http://h:1", "{base}");
        }
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("MUG-1_a.b~"), "MUG-1_a.b~");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let client = Client::new("http://h:1", "hf_secret_key");
        assert!(!format!("{client:?}").contains("hf_secret_key"));
    }
}
