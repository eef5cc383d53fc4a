//! A fault-injecting TCP proxy, modelled on Toxiproxy: tests and drills put it
//! between Holdfast and a dependency and make that dependency slow, hung, reset or
//! down for real, on live connections.
//!
//! A [`Proxy`] accepts connections on its listen address and copies bytes both ways
//! to its upstream. Its toxics live in a `watch` channel that every connection reads
//! per chunk, so adding or removing one changes pooled keep-alive connections too,
//! not only new ones. Disabling a proxy closes its listener (new connections are
//! refused, as from a stopped process) and cuts the connections it holds.
//!
//! A fault may carry a time limit that the proxy enforces by itself
//! ([`Proxy::add_toxic_for`], [`Proxy::disable_for`]): a drill that hangs or dies
//! cannot leave its fault behind. Every fault is kept in the proxy's record
//! ([`Proxy::record`]) with the connections and bytes it affected, so a report can
//! prove that the fault took effect.

mod api;
mod cli;
mod link;
mod toxics;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};

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
    effect: Arc<Effect>,
}

/// What one fault did to the traffic, counted by the connections themselves.
#[derive(Debug, Default)]
struct Effect {
    /// Connection directions the fault reached (its toxicity roll applied).
    connections: AtomicU64,
    /// Bytes it delayed, dropped or throttled.
    bytes: AtomicU64,
}

/// How a fault in the record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Removed by whoever added it (the heal).
    Removed,
    /// Removed by the proxy itself when its time limit ran out.
    TimeLimit,
    /// The proxy stopped with the fault still on.
    Stopped,
}

/// One fault in the proxy's record: what it was, when it was on and what it did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FaultRecord {
    /// The toxic's name, or `down` for the proxy being disabled.
    pub name: String,
    /// The Toxiproxy type (`latency`, `timeout`, …) or `down`.
    pub kind: String,
    /// The toxic's JSON form; `null` for `down`.
    pub toxic: serde_json::Value,
    pub added_at: DateTime<Utc>,
    /// The limit the proxy enforces, in milliseconds, if one was given.
    pub time_limit_ms: Option<u64>,
    /// `None` while the fault is still on.
    pub ended_at: Option<DateTime<Utc>>,
    pub ended: Option<Ended>,
    /// Connection directions the fault reached; for `down`, connections cut when it
    /// went down.
    pub connections: u64,
    /// Bytes it delayed, dropped or throttled.
    pub bytes: u64,
}

/// A record entry and, while the fault is on, the live counters it reads.
struct RecordEntry {
    record: FaultRecord,
    /// The toxic id, for toxics; `None` for `down`.
    toxic_id: Option<u64>,
    effect: Arc<Effect>,
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
    // A std mutex: every critical section is a short vector update with no `.await`.
    record: std::sync::Mutex<Vec<RecordEntry>>,
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
                record: std::sync::Mutex::new(Vec::new()),
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
                self.inner.end_record(|entry| entry.toxic_id.is_none(), Ended::Removed);
            }
            (Listening::Enabled(_), false) => {
                let cut = self.inner.shared.counters.active.load(Ordering::Relaxed);
                if let Listening::Enabled(accept) = std::mem::replace(&mut *listening, Listening::Disabled) {
                    end_accept_loop(accept).await;
                }
                self.inner
                    .start_record(None, "down", "down", serde_json::Value::Null, cut);
            }
        }
        self.inner.enabled.store(enabled, Ordering::SeqCst);
        Ok(())
    }

    /// The `down` fault with a time limit: the proxy listens again by itself after
    /// `limit` unless it was enabled before.
    pub async fn disable_for(&self, limit: Duration) -> Result<(), ProxyError> {
        self.set_enabled(false).await?;
        let Some(index) = self.inner.set_time_limit(|entry| entry.toxic_id.is_none(), limit) else {
            return Ok(());
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            let Some(inner) = weak.upgrade() else { return };
            // Only this outage: one healed and started again has a limit of its own.
            if !inner.is_open(index) {
                return;
            }
            let proxy = Proxy { inner };
            if proxy.set_enabled(true).await.is_ok() {
                proxy.inner.mark_ended(index, Ended::TimeLimit);
            }
        });
        Ok(())
    }

    /// Closes the listener and every connection for good.
    pub async fn stop(&self) {
        let mut listening = self.inner.listening.lock().await;
        if let Listening::Enabled(accept) = std::mem::replace(&mut *listening, Listening::Stopped) {
            end_accept_loop(accept).await;
        }
        self.inner.enabled.store(false, Ordering::SeqCst);
        self.inner.end_record(|_| true, Ended::Stopped);
    }

    /// Adds a toxic; it reaches open connections at their next chunk or timer.
    pub fn add_toxic(&self, toxic: Toxic) -> Result<(), ProxyError> {
        self.add(toxic).map(|_| ())
    }

    /// Adds a toxic that the proxy removes by itself after `limit`, whatever becomes
    /// of whoever added it.
    pub fn add_toxic_for(&self, toxic: Toxic, limit: Duration) -> Result<(), ProxyError> {
        let id = self.add(toxic)?;
        let _ = self.inner.set_time_limit(|entry| entry.toxic_id == Some(id), limit);
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            if let Some(inner) = weak.upgrade() {
                inner.remove_toxic_where(|t| t.id == id, Ended::TimeLimit);
            }
        });
        Ok(())
    }

    fn add(&self, toxic: Toxic) -> Result<u64, ProxyError> {
        toxic.validate()?;
        let id = self.inner.next_toxic_id.fetch_add(1, Ordering::Relaxed);
        let effect = Arc::new(Effect::default());
        let mut result = Ok(id);
        let (name, kind, json) = (toxic.name.clone(), toxic.kind.type_name(), toxic.to_json());
        self.inner.toxics.send_if_modified(|set| {
            if set.iter().any(|t| t.toxic.name == toxic.name) {
                result = Err(ProxyError::ToxicExists(toxic.name.clone()));
                return false;
            }
            Arc::make_mut(set).push(ActiveToxic {
                id,
                toxic: toxic.clone(),
                effect: effect.clone(),
            });
            true
        });
        if result.is_ok() {
            self.inner.push_record(RecordEntry {
                record: FaultRecord::new(name, kind, json, 0),
                toxic_id: Some(id),
                effect,
            });
        }
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
        if self.inner.remove_toxic_where(|t| t.toxic.name == name, Ended::Removed) {
            Ok(())
        } else {
            Err(ProxyError::ToxicNotFound(name.to_owned()))
        }
    }

    pub fn remove_all_toxics(&self) {
        self.inner.remove_toxic_where(|_| true, Ended::Removed);
    }

    /// Every fault this proxy has applied, oldest first, with what it affected;
    /// faults still on show their counts so far.
    pub fn record(&self) -> Vec<FaultRecord> {
        self.inner
            .record_lock()
            .iter()
            .map(|entry| {
                let mut record = entry.record.clone();
                if entry.toxic_id.is_some() {
                    record.connections = entry.effect.connections.load(Ordering::Relaxed);
                }
                record.bytes = entry.effect.bytes.load(Ordering::Relaxed);
                record
            })
            .collect()
    }

    /// Whether no toxic is on and the proxy listens: nothing left behind.
    pub fn is_clean(&self) -> bool {
        self.toxics().is_empty() && self.is_enabled()
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

impl FaultRecord {
    fn new(name: String, kind: &str, toxic: serde_json::Value, connections: u64) -> Self {
        Self {
            name,
            kind: kind.to_owned(),
            toxic,
            added_at: Utc::now(),
            time_limit_ms: None,
            ended_at: None,
            ended: None,
            connections,
            bytes: 0,
        }
    }
}

impl Inner {
    fn record_lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordEntry>> {
        // Each update is a single push or field assignment, so a poisoned lock
        // still holds a whole record.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push_record(&self, entry: RecordEntry) {
        self.record_lock().push(entry);
    }

    fn start_record(&self, toxic_id: Option<u64>, name: &str, kind: &str, toxic: serde_json::Value, connections: u64) {
        self.push_record(RecordEntry {
            record: FaultRecord::new(name.to_owned(), kind, toxic, connections),
            toxic_id,
            effect: Arc::default(),
        });
    }

    fn is_open(&self, index: usize) -> bool {
        self.record_lock()
            .get(index)
            .is_some_and(|entry| entry.record.ended.is_none())
    }

    /// Sets the limit of the latest open entry that `matches`; returns its index.
    fn set_time_limit(&self, matches: impl Fn(&RecordEntry) -> bool, limit: Duration) -> Option<usize> {
        let mut record = self.record_lock();
        let index = record
            .iter()
            .rposition(|entry| entry.record.ended.is_none() && matches(entry))?;
        record[index].record.time_limit_ms = Some(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        Some(index)
    }

    /// Ends every open record entry that `matches`.
    fn end_record(&self, matches: impl Fn(&RecordEntry) -> bool, how: Ended) {
        let now = Utc::now();
        for entry in self.record_lock().iter_mut() {
            if entry.record.ended.is_none() && matches(entry) {
                entry.record.ended = Some(how);
                entry.record.ended_at = Some(now);
            }
        }
    }

    /// Corrects how entry `index` ended.
    fn mark_ended(&self, index: usize, how: Ended) {
        if let Some(entry) = self.record_lock().get_mut(index) {
            entry.record.ended = Some(how);
        }
    }

    /// Removes the toxics that `matches` and closes their record entries; returns
    /// whether any was on.
    fn remove_toxic_where(&self, matches: impl Fn(&ActiveToxic) -> bool, how: Ended) -> bool {
        let mut removed = Vec::new();
        self.toxics.send_if_modified(|set| {
            removed = set.iter().filter(|t| matches(t)).map(|t| t.id).collect();
            if !removed.is_empty() {
                Arc::make_mut(set).retain(|t| !matches(t));
            }
            !removed.is_empty()
        });
        self.end_record(|entry| entry.toxic_id.is_some_and(|id| removed.contains(&id)), how);
        !removed.is_empty()
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
