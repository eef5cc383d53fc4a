//! Adapters to the outside services Holdfast calls.

pub mod egress;
pub mod events;
pub mod inventory;
pub mod payments;
pub mod warehouse;
pub mod webhooks;

/// The HTTP client an outside API is called with: every call ends within
/// `deadline`, and connecting gets at most two seconds of it.
pub(crate) fn http_client(deadline: std::time::Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(deadline)
        .connect_timeout(deadline.min(std::time::Duration::from_secs(2)))
}
