//! Idempotent checkout, as Stripe keys it: the first request with an
//! idempotency key claims the key for a lease and records its answer; a
//! retry with the same key and body gets that answer again, one that comes
//! while the first still runs is told so, and one with another body is
//! refused. A failure worth retrying is not recorded: the key is released,
//! so the client's retry runs again.

use chrono::{DateTime, Utc};
use holdfast_domain::OrderId;
use holdfast_store::{IdempotencyBegin, IdempotentRequest, StoredResponse};

use super::deps::Deps;
use super::error::Error;

/// The key a request claims, within its caller's scope (the API key id).
#[derive(Debug, Clone)]
pub struct Claim {
    pub scope: String,
    pub key: String,
}

/// How a claimed request goes on.
#[derive(Debug)]
pub enum Begun {
    /// First of its key: place the order with this id, then `complete` or
    /// `release` the key. A retry after a crash gets the same id, so it
    /// resumes the same order.
    New(OrderId),
    /// Answered before: send this answer again.
    Replay(StoredResponse),
}

/// Claims `claim` for the request whose canonical body hashes to
/// `request_hash`, for `checkout.idempotency_lease_s`.
#[tracing::instrument(skip_all)]
pub async fn begin(deps: &Deps, claim: &Claim, request_hash: String, now: DateTime<Utc>) -> Result<Begun, Error> {
    let lease_s = i64::try_from(deps.config.checkout.idempotency_lease_s).unwrap_or(60);
    let request = IdempotentRequest {
        scope: claim.scope.clone(),
        key: claim.key.clone(),
        request_hash,
        resource_id: OrderId::generate().to_string(),
        now,
        lease: chrono::Duration::seconds(lease_s),
    };
    match deps.store.begin_idempotent(&request).await? {
        IdempotencyBegin::New(resource_id) => Ok(Begun::New(OrderId::from_trusted(resource_id))),
        IdempotencyBegin::Replay(response) => Ok(Begun::Replay(response)),
        IdempotencyBegin::InProgress => Err(Error::IdempotencyInProgress),
        IdempotencyBegin::Mismatch => Err(Error::IdempotencyMismatch),
    }
}

/// Records the answer, which every retry with the key gets from now on.
pub async fn complete(deps: &Deps, claim: &Claim, response: &StoredResponse) -> Result<(), Error> {
    Ok(deps
        .store
        .complete_idempotent(&claim.scope, &claim.key, response)
        .await?)
}

/// Forgets the claim, so the client's retry with the key runs again. A
/// release that fails only delays that retry until the lease runs out.
pub async fn release(deps: &Deps, claim: &Claim) {
    if let Err(release) = deps.store.release_idempotent(&claim.scope, &claim.key).await {
        tracing::warn!(error = %release, "could not release an idempotency key; it frees itself after its lease");
    }
}
