//! The deadline of the request a store call serves, so the database gets only
//! what is left of the request's budget: waiting for a pooled connection ends
//! at the deadline, and PostgreSQL write transactions run with a
//! `statement_timeout` no longer than the time left (lock waits included).
//! Outside a request (workers), the configured timeouts alone apply.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Result, StoreError};

tokio::task_local! {
    static REQUEST_DEADLINE: Instant;
}

/// Runs `work` as part of a request that must finish by `deadline`.
pub async fn scope<F: Future>(deadline: Instant, work: F) -> F::Output {
    REQUEST_DEADLINE.scope(deadline, work).await
}

/// The current request's deadline; `None` outside a request.
pub fn current() -> Option<Instant> {
    REQUEST_DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Time left before the current request's deadline.
pub fn remaining() -> Option<Duration> {
    current().map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// Awaits `work`, giving up at the request's deadline.
pub(crate) async fn within<T, E>(work: impl Future<Output = std::result::Result<T, E>>) -> Result<T>
where
    StoreError: From<E>,
{
    match current() {
        None => Ok(work.await?),
        Some(deadline) => match tokio::time::timeout_at(deadline, work).await {
            Ok(done) => Ok(done?),
            Err(_) => Err(StoreError::Timeout(
                "the request's deadline passed while waiting for the database".into(),
            )),
        },
    }
}
