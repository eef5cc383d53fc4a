//! Real upstreams for the proxy tests (a TCP echo server, an HTTP server) and functions
//! that keep every test bounded in time.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use holdfast_drills::proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The size of `GET /big`.
pub const BIG_BYTES: usize = 200 * 1024;

/// Runs a whole test body under `limit`, so a proxy bug fails the test instead of
/// hanging the suite.
pub async fn within(limit: Duration, body: impl Future<Output = TestResult>) -> TestResult {
    tokio::time::timeout(limit, body)
        .await
        .map_err(|_| format!("the test did not finish within {limit:?}"))?
}

/// An upstream server that stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes every byte back on the same connection.
pub async fn echo_server() -> std::io::Result<Upstream> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    Ok(Upstream { addr, task })
}

/// `GET /hello` answers `hello`; `GET /big` answers [`BIG_BYTES`] bytes.
pub async fn http_server() -> std::io::Result<Upstream> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/big", get(|| async { vec![b'x'; BIG_BYTES] }));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Upstream { addr, task })
}

/// A proxy on a free port in front of `upstream`.
pub async fn proxy_to(upstream: &Upstream) -> Result<Proxy, Box<dyn std::error::Error>> {
    Ok(Proxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream.addr.to_string()).await?)
}

pub async fn connect(proxy: &Proxy) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(proxy.local_addr()).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `payload` through an echo connection and reads it back; returns what came
/// back and how long it took.
pub async fn echo(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<(Vec<u8>, Duration)> {
    let started = Instant::now();
    stream.write_all(payload).await?;
    let mut back = vec![0; payload.len()];
    stream.read_exact(&mut back).await?;
    Ok((back, started.elapsed()))
}

/// An HTTP client that gives up after `timeout`, as a caller with a deadline would.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(timeout).no_proxy().build()
}

pub use holdfast_testkit::postgres_admin_url;
