//! A fault-injecting TCP proxy, modelled on Toxiproxy: tests and drills put it
//! between Holdfast and a dependency and make that dependency slow, hung, reset or
//! down for real, on live connections.
//!
//! A [`Proxy`] accepts connections on its listen address and copies bytes both ways
//! to its upstream. Its toxics live in a `watch` channel that every connection reads
//! per chunk, so adding or removing one changes pooled keep-alive connections too,
//! not only new ones. Disabling a proxy closes its listener (new connections are
//! refused, as from a stopped process) and cuts the connections it holds.

mod api;
mod cli;
mod link;
mod toxics;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use api::{ApiError, ControlApi, ProxySpec};
pub use cli::{ProxyArgs, run_proxy};
pub use toxics::{Stream, Toxic, ToxicKind};

/// Why a proxy operation failed; the control API maps each to its status code.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("invalid toxic: {0}")]
    InvalidToxic(String),
    #[error("toxic `{0}` already exists")]
    ToxicExists(String),
    #[error("toxic `{0}` not found")]
    ToxicNotFound(String),
    #[error("the proxy has been stopped")]
    Stopped,
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Accepted connections whose upstream could not be reached (they were closed).
    pub upstream_failures: u64,
    /// Connections open now.
    pub active: u64,
    /// Bytes forwarded client → upstream.
    pub bytes_upstream: u64,
    /// Bytes forwarded upstream → client.
    pub bytes_downstream: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    upstream_failures: AtomicU64,
    active: AtomicU64,
    bytes_upstream: AtomicU64,
    bytes_downstream: AtomicU64,
}

/// A toxic as the connections see it: `id` is fixed when the toxic is added and kept
/// across updates, so per-connection state (when a timeout started, whether the
/// toxicity roll applies) survives an update and restarts only for a new toxic.
#[derive(Debug, Clone)]
struct ActiveToxic {
    id: u64,
    toxic: Toxic,
}

type ToxicSet = Arc<Vec<ActiveToxic>>;

/// What one connection needs from its proxy. It holds no reference to the `Proxy`
/// itself, so dropping the last `Proxy` handle stops everything.
#[derive(Clone)]
struct Shared {
    upstream: Arc<RwLock<String>>,
    toxics: watch::Receiver<ToxicSet>,
    counters: Arc<Counters>,
}

/// A running accept loop; dropping `shutdown` ends it, which closes the listener and
/// every connection it accepted.
struct AcceptLoop {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

enum Listening {
    Enabled(AcceptLoop),
    Disabled,
    Stopped,
}

/// A handle to a running proxy; clones share it.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    listen: SocketAddr,
    shared: Shared,
    toxics: watch::Sender<ToxicSet>,
    next_toxic_id: AtomicU64,
    enabled: AtomicBool,
    // A tokio mutex because enabling binds and disabling waits for the loop to end,
    // and two concurrent toggles must not interleave those steps.
    listening: Mutex<Listening>,
}

impl Proxy {
    /// Listens on `listen` (port 0 picks a free port; see [`Proxy::local_addr`]) and
    /// forwards every connection to `upstream` (`host:port`, resolved per connection,
    /// so an upstream that is down or does not resolve is a fault the proxy passes on).
    pub async fn start(listen: SocketAddr, upstream: impl Into<String>) -> Result<Proxy, ProxyError> {
        let listener = bind(listen).await?;
        let listen = listener
            .local_addr()
            .map_err(|source| ProxyError::Bind { addr: listen, source })?;
        let (toxics, toxics_rx) = watch::channel(ToxicSet::default());
        let shared = Shared {
            upstream: Arc::new(RwLock::new(upstream.into())),
            toxics: toxics_rx,
            counters: Arc::default(),
        };
        let accept = spawn_accept_loop(listener, shared.clone());
        Ok(Proxy {
            inner: Arc::new(Inner {
                listen,
                shared,
                toxics,
                next_toxic_id: AtomicU64::new(1),
                enabled: AtomicBool::new(true),
                listening: Mutex::new(Listening::Enabled(accept)),
            }),
        })
    }

    /// The address clients connect to, with the real port when started on port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.listen
    }

    pub fn upstream(&self) -> String {
        self.inner
            .shared
            .upstream
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Points new connections at another upstream (a promoted replica, say); open
    /// connections stay with the old one.
    pub fn set_upstream(&self, upstream: impl Into<String>) {
        *self
            .inner
            .shared
            .upstream
            .write()
            .unwrap_or_else(PoisonError::into_inner) = upstream.into();
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::SeqCst)
    }

    /// `false` is the `down` fault: the listener closes, so new connections are
    /// refused, and open connections are cut. `true` listens again on the same address.
    /// Returns once the change is in effect.
    pub async fn set_enabled(&self, enabled: bool) -> Result<(), ProxyError> {
        let mut listening = self.inner.listening.lock().await;
        match (&*listening, enabled) {
            (Listening::Stopped, _) => return Err(ProxyError::Stopped),
            (Listening::Enabled(_), true) | (Listening::Disabled, false) => return Ok(()),
            (Listening::Disabled, true) => {
                let listener = bind(self.inner.listen).await?;
                *listening = Listening::Enabled(spawn_accept_loop(listener, self.inner.shared.clone()));
            }
            (Listening::Enabled(_), false) => {
                if let Listening::Enabled(accept) = std::mem::replace(&mut *listening, Listening::Disabled) {
                    end_accept_loop(accept).await;
                }
            }
        }
        self.inner.enabled.store(enabled, Ordering::SeqCst);
        Ok(())
    }

    /// Closes the listener and every connection for good.
    pub async fn stop(&self) {
        let mut listening = self.inner.listening.lock().await;
        if let Listening::Enabled(accept) = std::mem::replace(&mut *listening, Listening::Stopped) {
            end_accept_loop(accept).await;
        }
        self.inner.enabled.store(false, Ordering::SeqCst);
    }

    /// Adds a toxic; it reaches open connections at their next chunk or timer.
    pub fn add_toxic(&self, toxic: Toxic) -> Result<(), ProxyError> {
        toxic.validate()?;
        let id = self.inner.next_toxic_id.fetch_add(1, Ordering::Relaxed);
        let mut result = Ok(());
        self.inner.toxics.send_if_modified(|set| {
            if set.iter().any(|t| t.toxic.name == toxic.name) {
                result = Err(ProxyError::ToxicExists(toxic.name.clone()));
                return false;
            }
            Arc::make_mut(set).push(ActiveToxic { id, toxic });
            true
        });
        result
    }

    /// Replaces the toxic of the same name, keeping its place and its clocks.
    pub fn update_toxic(&self, toxic: Toxic) -> Result<(), ProxyError> {
        toxic.validate()?;
        let mut result = Err(ProxyError::ToxicNotFound(toxic.name.clone()));
        self.inner.toxics.send_if_modified(|set| {
            let Some(index) = set.iter().position(|t| t.toxic.name == toxic.name) else {
                return false;
            };
            Arc::make_mut(set)[index].toxic = toxic;
            result = Ok(());
            true
        });
        result
    }

    pub fn remove_toxic(&self, name: &str) -> Result<(), ProxyError> {
        let mut found = false;
        self.inner.toxics.send_if_modified(|set| {
            found = set.iter().any(|t| t.toxic.name == name);
            if found {
                Arc::make_mut(set).retain(|t| t.toxic.name != name);
            }
            found
        });
        if found {
            Ok(())
        } else {
            Err(ProxyError::ToxicNotFound(name.to_owned()))
        }
    }

    pub fn remove_all_toxics(&self) {
        self.inner.toxics.send_if_modified(|set| {
            let had_any = !set.is_empty();
            *set = ToxicSet::default();
            had_any
        });
    }

    /// The toxics in the order they were added.
    pub fn toxics(&self) -> Vec<Toxic> {
        self.inner.toxics.borrow().iter().map(|t| t.toxic.clone()).collect()
    }

    pub fn toxic(&self, name: &str) -> Option<Toxic> {
        self.inner
            .toxics
            .borrow()
            .iter()
            .find(|t| t.toxic.name == name)
            .map(|t| t.toxic.clone())
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.inner.shared.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            upstream_failures: c.upstream_failures.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            bytes_upstream: c.bytes_upstream.load(Ordering::Relaxed),
            bytes_downstream: c.bytes_downstream.load(Ordering::Relaxed),
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind { addr, source })
}

fn spawn_accept_loop(listener: TcpListener, shared: Shared) -> AcceptLoop {
    let (shutdown, shutdown_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
    AcceptLoop { shutdown, task }
}

async fn end_accept_loop(accept: AcceptLoop) {
    drop(accept.shutdown);
    // The loop only awaits its own connections' cancellation, which is prompt; an error
    // here means it panicked, and the listener is closed either way.
    let _ = accept.task.await;
}

async fn accept_loop(listener: TcpListener, shared: Shared, mut shutdown: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve_connection(client, peer, shared.clone()));
                }
                Err(error) => {
                    // Usually out of file descriptors; pausing lets some connections
                    // close instead of spinning on the same error.
                    tracing::warn!(%error, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // The listener goes first so that new connections are refused from this moment.
    drop(listener);
    connections.shutdown().await;
}

/// Decrements the active count however the connection ends, cancellation included.
struct ActiveGuard(Arc<Counters>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(client: TcpStream, peer: SocketAddr, shared: Shared) {
    shared.counters.active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(shared.counters.clone());
    let upstream_addr = shared.upstream.read().unwrap_or_else(PoisonError::into_inner).clone();
    let upstream = match TcpStream::connect(&upstream_addr).await {
        Ok(upstream) => upstream,
        Err(error) => {
            shared.counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, upstream = %upstream_addr, %error, "proxy cannot reach its upstream");
            return;
        }
    };
    // Nagle's algorithm would hold small writes back and blur the latency a toxic sets.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let end = link::run(client, upstream, shared.toxics, &shared.counters).await;
    tracing::debug!(%peer, upstream = %upstream_addr, ?end, "proxy connection closed");
}
