//! Spawning the sandboxes and a recording webhook receiver for the tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use holdfast_sandbox::{PaymentsConfig, SandboxPayments, SandboxWarehouse, WarehouseConfig, WebhookReceiver};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const SECRET: &str = "whsec_test_it";
pub const API_KEY: &str = "Bearer sk_test_123";

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Shuts the server down when dropped.
pub struct Running {
    pub base_url: String,
    _shutdown: oneshot::Sender<()>,
}

async fn bind() -> Result<(TcpListener, String), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

pub async fn spawn_payments(config: PaymentsConfig) -> Result<(SandboxPayments, Running), std::io::Error> {
    let payments = SandboxPayments::new(config);
    // Tests must not wait the production schedule out.
    payments.set_webhook_backoff(vec![Duration::from_millis(20); 9]);
    let (listener, base_url) = bind().await?;
    let (tx, rx) = oneshot::channel::<()>();
    let server = payments.clone();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((
        payments,
        Running {
            base_url,
            _shutdown: tx,
        },
    ))
}

pub async fn spawn_warehouse(config: WarehouseConfig) -> Result<(SandboxWarehouse, Running), std::io::Error> {
    let warehouse = SandboxWarehouse::new(config);
    let (listener, base_url) = bind().await?;
    let (tx, rx) = oneshot::channel::<()>();
    let server = warehouse.clone();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((
        warehouse,
        Running {
            base_url,
            _shutdown: tx,
        },
    ))
}

pub async fn spawn_receiver() -> Result<(WebhookReceiver, Running), std::io::Error> {
    let receiver = WebhookReceiver::new();
    let (listener, base_url) = bind().await?;
    let (tx, rx) = oneshot::channel::<()>();
    let server = receiver.clone();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((
        receiver,
        Running {
            base_url,
            _shutdown: tx,
        },
    ))
}

/// One webhook as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: Option<String>,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A webhook receiver that records what it accepts and can refuse the first calls.
#[derive(Clone, Default)]
pub struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    refuse_first: Arc<AtomicUsize>,
    pub attempts: Arc<AtomicUsize>,
}

impl Receiver {
    pub fn refusing_first(n: usize) -> Self {
        let receiver = Self::default();
        receiver.refuse_first.store(n, Ordering::SeqCst);
        receiver
    }

    pub async fn spawn(&self) -> Result<(String, Running), std::io::Error> {
        let (listener, base_url) = bind().await?;
        let running = self.serve_on(listener, base_url.clone());
        Ok((format!("{base_url}/webhook"), running))
    }

    pub fn serve_on(&self, listener: TcpListener, base_url: String) -> Running {
        let app = Router::new().route("/webhook", post(record)).with_state(self.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Running {
            base_url,
            _shutdown: tx,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Polls until `count` events arrived, or gives up after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn record(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.attempts.fetch_add(1, Ordering::SeqCst);
    let refused = receiver
        .refuse_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refused {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = String::from_utf8_lossy(&body).into_owned();
    receiver
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received { signature, body });
    StatusCode::OK
}

/// A free port: bind, read the address, release it.
pub async fn free_address() -> Result<SocketAddr, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    listener.local_addr()
}

/// A response read whole: status, headers and body text.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub async fn read(response: reqwest::Response) -> Result<Self, reqwest::Error> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok(Self { status, headers, body })
    }
}

/// `POST {base}{path}` with a form body, the test API key and an optional idempotency key.
pub async fn post_form(base: &str, path: &str, key: Option<&str>, form: &str) -> Result<Reply, reqwest::Error> {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("authorization", API_KEY)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    Reply::read(request.send().await?).await
}

pub async fn get(base: &str, path: &str) -> Result<Reply, reqwest::Error> {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("authorization", API_KEY)
        .send()
        .await?;
    Reply::read(response).await
}

pub fn config_with_webhook(url: Option<String>) -> PaymentsConfig {
    PaymentsConfig {
        webhook_url: url,
        webhook_secret: SECRET.to_owned(),
        webhook_delay: Duration::from_millis(20),
        ..PaymentsConfig::default()
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
/// Counters move after the receiver has answered, so tests wait rather than read once.
pub async fn eventually(timeout: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
