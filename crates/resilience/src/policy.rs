//! `Policy`: one dependency's deadline, bulkhead, retries and circuit breaker
//! around a plain async closure.
//!
//! A call goes through, in order: the deadline (the earlier of the request's
//! and `deadline_ms` from now; already spent means refused), the bulkhead
//! (full means refused at once), the breaker (open means refused at once),
//! then attempts under the deadline. A failed attempt is retried only when
//! the caller marked the call idempotent, the error is transient, attempts
//! and the retry budget remain, and the jittered pause still ends before the
//! deadline; each retry passes the breaker again.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::breaker::{Admitted, Breaker, BreakerState, Change};
use crate::budget::{RetryBudget, backoff};
use crate::bulkhead::Bulkhead;
use crate::config::{DependencyConfig, InvalidConfig};
use crate::error::{CallError, Classify};
use crate::telemetry::{self, Reason};

/// Per-call facts only the caller knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The request's deadline; the call ends at the earlier of this and the
    /// dependency's `deadline_ms`. `None` for work outside a request.
    pub deadline: Option<Instant>,
    /// True when repeating the call cannot repeat its effect: a read, or a
    /// write that carries an idempotency key. Only such calls are retried.
    pub idempotent: bool,
}

impl CallOptions {
    pub fn idempotent() -> Self {
        Self {
            deadline: None,
            idempotent: true,
        }
    }

    pub fn non_idempotent() -> Self {
        Self {
            deadline: None,
            idempotent: false,
        }
    }

    pub fn with_deadline(self, deadline: impl Into<Option<Instant>>) -> Self {
        Self {
            deadline: deadline.into(),
            ..self
        }
    }
}

/// Calls refused without reaching the dependency, by reason, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rejections {
    pub bulkhead: u64,
    pub breaker_open: u64,
    pub deadline: u64,
}

/// A dependency's state and counters, for `GET /api/v1/ops/breakers`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    pub name: String,
    pub state: BreakerState,
    /// Failed share of the calls in the window, slow calls included.
    pub failure_rate: f64,
    pub calls_in_window: u64,
    pub failures_in_window: u64,
    pub slow_calls: u64,
    /// When the breaker last opened, while it is open or half-open.
    pub opened_at: Option<SystemTime>,
    /// While open: the time left before it lets probes through.
    pub retry_after: Option<Duration>,
    pub transitions: u64,
    pub rejected: Rejections,
    pub timeouts: u64,
    pub retries: u64,
    pub in_flight: usize,
    pub config: DependencyConfig,
}

/// A breaker state change, as published to [`crate::Registry::subscribe`]
/// (the service journals them).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub dependency: String,
    pub from: BreakerState,
    pub to: BreakerState,
    pub at: SystemTime,
    pub failure_rate: f64,
    pub calls_in_window: u64,
}

/// The resilience policy of one dependency. Cheap to clone; clones share
/// state.
#[derive(Debug, Clone)]
pub struct Policy {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    bulkhead: Bulkhead,
    /// A std mutex, not tokio's: every critical section is a few arithmetic
    /// steps and never spans an `.await`, so an async lock would only add a
    /// suspension point to every call's admission.
    inner: Mutex<Inner>,
    counters: Counters,
    events: Option<broadcast::Sender<Transition>>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<DependencyConfig>,
    breaker: Breaker,
    budget: RetryBudget,
}

#[derive(Debug, Default)]
struct Counters {
    bulkhead: AtomicU64,
    breaker_open: AtomicU64,
    deadline: AtomicU64,
    timeouts: AtomicU64,
    retries: AtomicU64,
}

enum Attempt<T, E> {
    Succeeded(T),
    Failed(E),
    TimedOut,
}

impl Policy {
    pub fn new(name: impl Into<String>, config: DependencyConfig) -> Result<Self, InvalidConfig> {
        Self::build(name.into(), config, None)
    }

    pub(crate) fn build(
        name: String,
        config: DependencyConfig,
        events: Option<broadcast::Sender<Transition>>,
    ) -> Result<Self, InvalidConfig> {
        config.validate().map_err(|error| error.for_dependency(&name))?;
        let now = Instant::now();
        let shared = Shared {
            bulkhead: Bulkhead::new(config.max_concurrency),
            inner: Mutex::new(Inner {
                config: Arc::new(config),
                breaker: Breaker::new(now),
                budget: RetryBudget::new(now),
            }),
            counters: Counters::default(),
            events,
            name,
        };
        let policy = Self {
            shared: Arc::new(shared),
        };
        policy.export_gauges();
        Ok(policy)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<DependencyConfig> {
        self.shared.config()
    }

    /// Runs `operation` under this dependency's policy. `operation` is called
    /// once per attempt and must build a fresh future each time.
    pub async fn call<T, E, F, Fut>(&self, options: CallOptions, mut operation: F) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let shared = &*self.shared;
        let started = Instant::now();
        let config = shared.config();
        let own_deadline = started + config.deadline();
        let deadline = options
            .deadline
            .map_or(own_deadline, |request| request.min(own_deadline));
        if deadline <= started {
            shared.reject(Reason::Deadline);
            return Err(CallError::DeadlineExceeded);
        }
        let Some(_permit) = shared.bulkhead.try_enter() else {
            shared.reject(Reason::Bulkhead);
            return Err(CallError::BulkheadFull);
        };
        let mut ticket = shared.admit(true).map_err(|retry_after| {
            shared.reject(Reason::BreakerOpen);
            CallError::BreakerOpen { retry_after }
        })?;
        let mut attempts = 1;
        loop {
            let error = match shared.attempt(ticket, deadline, operation()).await {
                Attempt::Succeeded(value) => return Ok(value),
                Attempt::TimedOut => return Err(CallError::DeadlineExceeded),
                Attempt::Failed(error) => error,
            };
            let retryable = options.idempotent && error.is_transient() && attempts < config.retry.max_attempts;
            let next = if retryable {
                shared.prepare_retry(&config, attempts, deadline).await
            } else {
                None
            };
            match next {
                Some(next) => {
                    ticket = next;
                    attempts += 1;
                }
                None => return Err(CallError::Failed(error)),
            }
        }
    }

    /// The breaker's state and the dependency's counters.
    pub fn state(&self) -> BreakerSnapshot {
        let shared = &*self.shared;
        let now = Instant::now();
        let mut inner = shared.lock();
        let config = Arc::clone(&inner.config);
        if let Some(change) = inner.breaker.tick(now, &config.breaker) {
            shared.publish(&change);
        }
        let counts = inner.breaker.window_counts(now, &config.breaker);
        let state = inner.breaker.state();
        let counters = &shared.counters;
        BreakerSnapshot {
            name: shared.name.clone(),
            state,
            failure_rate: counts.failure_rate(),
            calls_in_window: counts.calls,
            failures_in_window: counts.failures,
            slow_calls: counts.slow,
            opened_at: inner.breaker.opened_at(),
            retry_after: (state == BreakerState::Open).then(|| inner.breaker.open_remaining(now, &config.breaker)),
            transitions: inner.breaker.transitions(),
            rejected: Rejections {
                bulkhead: counters.bulkhead.load(Ordering::Relaxed),
                breaker_open: counters.breaker_open.load(Ordering::Relaxed),
                deadline: counters.deadline.load(Ordering::Relaxed),
            },
            timeouts: counters.timeouts.load(Ordering::Relaxed),
            retries: counters.retries.load(Ordering::Relaxed),
            in_flight: shared.bulkhead.in_flight(),
            config: (*config).clone(),
        }
    }

    /// Applies new thresholds, keeping the breaker's state, its window and
    /// the retry budget. Calls in flight finish under the settings they
    /// started with.
    pub fn reconfigure(&self, config: DependencyConfig) -> Result<(), InvalidConfig> {
        let shared = &*self.shared;
        config.validate().map_err(|error| error.for_dependency(&shared.name))?;
        let mut inner = shared.lock();
        if *inner.config == config {
            return Ok(());
        }
        shared.bulkhead.set_limit(config.max_concurrency);
        tracing::info!(dependency = %shared.name, ?config, "dependency policy reconfigured");
        inner.config = Arc::new(config);
        drop(inner);
        self.export_gauges();
        Ok(())
    }

    /// Sets the gauges that are read rather than counted (state, in flight,
    /// limit). Call before rendering `/metrics`.
    pub fn export_gauges(&self) {
        let shared = &*self.shared;
        let snapshot_state = {
            let mut inner = shared.lock();
            let config = Arc::clone(&inner.config);
            if let Some(change) = inner.breaker.tick(Instant::now(), &config.breaker) {
                shared.publish(&change);
            }
            inner.breaker.state()
        };
        let dependency = shared.name.clone();
        telemetry::state(&dependency, snapshot_state);
        metrics::gauge!(telemetry::IN_FLIGHT, "dependency" => dependency.clone())
            .set(shared.bulkhead.in_flight() as f64);
        metrics::gauge!(telemetry::MAX_CONCURRENCY, "dependency" => dependency).set(shared.bulkhead.limit() as f64);
    }
}

impl Shared {
    /// Poisoning is ignored: no code panics while holding the lock with the
    /// state half-updated, so the state is still consistent.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn config(&self) -> Arc<DependencyConfig> {
        Arc::clone(&self.lock().config)
    }

    fn reject(&self, reason: Reason) {
        let counter = match reason {
            Reason::Bulkhead => &self.counters.bulkhead,
            Reason::BreakerOpen => &self.counters.breaker_open,
            Reason::Deadline => &self.counters.deadline,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        telemetry::rejected(&self.name, reason);
    }

    /// Asks the breaker for one attempt; the first attempt of a call also
    /// counts towards the retry budget's calls.
    fn admit(&self, first_attempt: bool) -> Result<Ticket<'_>, Duration> {
        let now = Instant::now();
        let mut inner = self.lock();
        let config = Arc::clone(&inner.config);
        let (admission, change) = inner.breaker.admit(now, &config.breaker);
        if let Some(change) = change {
            self.publish(&change);
        }
        let admitted = admission?;
        if first_attempt {
            inner
                .budget
                .record_call(now, Duration::from_secs(config.breaker.window_s));
        }
        Ok(Ticket {
            shared: self,
            admitted,
            finished: false,
        })
    }

    async fn attempt<T, E, Fut>(&self, ticket: Ticket<'_>, deadline: Instant, future: Fut) -> Attempt<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let started = Instant::now();
        let result = tokio::time::timeout_at(deadline, future).await;
        let elapsed = started.elapsed();
        metrics::histogram!(telemetry::CALL_DURATION, "dependency" => self.name.clone()).record(elapsed.as_secs_f64());
        match result {
            Ok(Ok(value)) => {
                ticket.finish(false, elapsed);
                Attempt::Succeeded(value)
            }
            Ok(Err(error)) => {
                ticket.finish(error.is_transient(), elapsed);
                Attempt::Failed(error)
            }
            Err(_elapsed) => {
                ticket.finish(true, elapsed);
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(telemetry::TIMEOUTS, "dependency" => self.name.clone()).increment(1);
                Attempt::TimedOut
            }
        }
    }

    /// Waits out the backoff and returns the next attempt's ticket, or `None`
    /// when the pause would end past the deadline, the budget is spent or the
    /// breaker has opened meanwhile (the caller then gets the last error).
    async fn prepare_retry(&self, config: &DependencyConfig, attempts: u32, deadline: Instant) -> Option<Ticket<'_>> {
        let pause = backoff(&config.retry, attempts);
        if Instant::now() + pause >= deadline || !self.withdraw_retry() {
            return None;
        }
        tokio::time::sleep(pause).await;
        let ticket = self.admit(false).ok()?;
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(telemetry::RETRIES, "dependency" => self.name.clone()).increment(1);
        Some(ticket)
    }

    fn withdraw_retry(&self) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let config = Arc::clone(&inner.config);
        let window = Duration::from_secs(config.breaker.window_s);
        inner.budget.try_withdraw(now, window, &config.retry)
    }

    fn finish(&self, admitted: Admitted, failed: bool, elapsed: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        let config = Arc::clone(&inner.config);
        if let Some(change) = inner.breaker.record(now, &config.breaker, admitted, failed, elapsed) {
            self.publish(&change);
        }
    }

    fn release(&self, admitted: Admitted) {
        self.lock().breaker.release(admitted);
    }

    /// Called with the state lock held, so the gauge's last write and the
    /// order of published transitions match the order of the changes.
    fn publish(&self, change: &Change) {
        telemetry::transition(&self.name, change);
        if let Some(events) = &self.events {
            // No subscriber is not an error: the journal is optional.
            let _ = events.send(Transition {
                dependency: self.name.clone(),
                from: change.from,
                to: change.to,
                at: SystemTime::now(),
                failure_rate: change.counts.failure_rate(),
                calls_in_window: change.counts.calls,
            });
        }
    }
}

/// One admitted attempt. Reporting its outcome consumes it; dropping it
/// unreported (the caller's future was cancelled) gives a half-open probe
/// slot back.
struct Ticket<'a> {
    shared: &'a Shared,
    admitted: Admitted,
    finished: bool,
}

impl Ticket<'_> {
    fn finish(mut self, failed: bool, elapsed: Duration) {
        self.finished = true;
        self.shared.finish(self.admitted, failed, elapsed);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.release(self.admitted);
        }
    }
}
