//! A scripted stand-in for the remote API: answers call `n` with script entry `n`
//! (the last entry repeats) and records what it was sent.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use holdfast_client::{Client, RetryPolicy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One scripted answer.
#[derive(Clone)]
pub struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string(),
        }
    }

    pub fn problem(status: u16, code: &str) -> Self {
        let body = serde_json::json!({"type": "about:blank", "title": code, "status": status, "code": code});
        Self {
            status,
            headers: vec![("content-type", "application/problem+json".to_owned())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", "text/plain".to_owned())],
            body: body.to_owned(),
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.headers.push(("retry-after", seconds.to_string()));
        self
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
    pub body: String,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Vec<Answer>>,
    calls: Arc<Mutex<Vec<Recorded>>>,
}

/// The running fake; stops when dropped.
pub struct Fake {
    pub base_url: String,
    calls: Arc<Mutex<Vec<Recorded>>>,
    _shutdown: oneshot::Sender<()>,
}

impl Fake {
    pub async fn start(script: Vec<Answer>) -> Result<Self, std::io::Error> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            script: Arc::new(script),
            calls: calls.clone(),
        };
        let app = Router::new().fallback(answer).with_state(shared);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            base_url,
            calls,
            _shutdown: tx,
        })
    }

    pub fn calls(&self) -> Vec<Recorded> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A client with fast backoff, so tests measure `Retry-After`, not jitter.
    pub fn client(&self, max_attempts: u32) -> Client {
        Client::builder(&self.base_url, "hf_test_key")
            .retries(RetryPolicy {
                max_attempts,
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
            })
            .timeout(Duration::from_secs(5))
            .build()
    }
}

async fn answer(State(shared): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let index = {
        let mut calls = shared.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.push(Recorded {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            idempotency_key: header("idempotency-key"),
            authorization: header("authorization"),
            user_agent: header("user-agent"),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        calls.len() - 1
    };
    let Some(answer) = shared.script.get(index).or(shared.script.last()) else {
        return StatusCode::NOT_IMPLEMENTED.into_response();
    };
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body.clone()).into_response();
    for (name, value) in &answer.headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}
