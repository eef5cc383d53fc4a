//! Background work that runs inside `holdfast serve` (role `all` or
//! `workers`). Each worker is a loop around a "run once" function that the
//! tests call directly to drive it deterministically.

pub mod expiry;
pub mod inbox;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Runs `tick` until shutdown, waiting `interval` (or a wake-up) between
/// ticks. A failing tick is logged and retried on the next one.
pub async fn run_loop<F, Fut>(
    name: &'static str,
    interval: Duration,
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    mut shutdown: watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<usize>>,
{
    tracing::debug!(worker = name, "started");
    loop {
        match tick().await {
            Ok(0) => {}
            Ok(done) => {
                tracing::debug!(worker = name, done, "tick");
                // There may be more: go again at once.
                if !*shutdown.borrow() {
                    continue;
                }
            }
            Err(error) => {
                tracing::warn!(worker = name, error = format!("{error:#}"), "tick failed")
            }
        }
        let woken = async {
            match &wake {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = woken => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::debug!(worker = name, "stopped");
}
