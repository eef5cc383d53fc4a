//! One deadline per request, end to end: the HTTP layer sets it when the
//! request arrives (`server.request_deadline_ms`), and every step below reads
//! what is left of it instead of starting a budget of its own, so a slow
//! dependency or a locked table costs at most the request's budget. The
//! store keeps the deadline (`holdfast_store::deadline`) because the database
//! is where it is enforced most: pool waits and statement timeouts.

use tokio::time::Instant;

/// Runs `work` with `deadline` as its request's deadline.
pub async fn scope<F: std::future::Future>(deadline: Instant, work: F) -> F::Output {
    holdfast_store::deadline::scope(deadline, work).await
}

/// The current request's deadline; `None` outside a request (workers).
pub fn request_deadline() -> Option<Instant> {
    holdfast_store::deadline::current()
}
