//! Idempotent checkout, as Stripe keys it: the first request with an
//! idempotency key claims the key for a lease and records its answer; a
//! retry with the same key and body gets that answer again, one that comes
//! while the first still runs is told so, and one with another body is
//! refused.
//!
//! The key is claimed in the same transaction that writes the order
//! (`Checkouts::begin`), so from then on it stays bound to that order: a
//! retry after a crash, or after a failure worth retrying (which opens the
//! key at once), resumes the same order and never places a second one. A
//! failure before anything was written leaves no key behind, so the retry
//! simply runs again.

use chrono::{DateTime, Utc};
use holdfast_domain::OrderId;
use holdfast_store::{IdempotencyBegin, IdempotentRequest, StoredResponse};

use super::deps::Deps;
use super::error::Error;

/// The key a request claims, within its caller's scope (the API key id),
/// with the hash of its canonical body.
#[derive(Debug, Clone)]
pub struct Claim {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
}

impl Claim {
    /// The key as the store claims it for a request at `now` that would
    /// create `order_id`, leased for `checkout.idempotency_lease_s`.
    pub fn request(&self, deps: &Deps, order_id: &OrderId, now: DateTime<Utc>) -> IdempotentRequest {
        let lease_s = i64::try_from(deps.config.checkout.idempotency_lease_s).unwrap_or(60);
        IdempotentRequest {
            scope: self.scope.clone(),
            key: self.key.clone(),
            request_hash: self.request_hash.clone(),
            resource_id: order_id.to_string(),
            now,
            lease: chrono::Duration::seconds(lease_s),
        }
    }
}

/// Records a final failure (a `4xx`, such as out of stock) as the key's
/// answer, which every retry with the key gets from now on. An order the key
/// is bound to that waits in `accepted` (a retry that found its stock gone)
/// is rejected with `cause` in the same transaction.
pub async fn record_failure(deps: &Deps, claim: &Claim, response: &StoredResponse, cause: &str) -> Result<(), Error> {
    let now = Utc::now();
    let key = claim.request(deps, &OrderId::generate(), now);
    Ok(deps.store.checkouts().record_failure(&key, response, cause).await?)
}

/// How a claimed request for another resource goes on.
#[derive(Debug)]
pub enum Begun {
    /// First of its key: make the resource with this id, then `complete` or
    /// `release` the key. A retry after a crash gets the same id, so it
    /// finds what the first attempt made.
    New(String),
    /// Answered before: send this answer again.
    Replay(StoredResponse),
}

/// Claims `claim` for a request that makes a resource other than an order
/// (a subscription), in a transaction of its own: the first request of the
/// key makes `resource_id`.
pub async fn begin_resource(
    deps: &Deps,
    claim: &Claim,
    resource_id: String,
    now: DateTime<Utc>,
) -> Result<Begun, Error> {
    let lease_s = i64::try_from(deps.config.checkout.idempotency_lease_s).unwrap_or(60);
    let request = IdempotentRequest {
        scope: claim.scope.clone(),
        key: claim.key.clone(),
        request_hash: claim.request_hash.clone(),
        resource_id,
        now,
        lease: chrono::Duration::seconds(lease_s),
    };
    match deps.store.checkouts().claim_key(&request).await? {
        IdempotencyBegin::New(resource_id) => Ok(Begun::New(resource_id)),
        IdempotencyBegin::Replay(response) => Ok(Begun::Replay(response)),
        IdempotencyBegin::InProgress => Err(Error::IdempotencyInProgress),
        IdempotencyBegin::Mismatch => Err(Error::IdempotencyMismatch),
    }
}

/// Records the answer of a key claimed with [`begin_resource`], which every
/// retry with the key gets from now on.
pub async fn complete(deps: &Deps, claim: &Claim, response: &StoredResponse) -> Result<(), Error> {
    Ok(deps
        .store
        .checkouts()
        .complete_key(&claim.scope, &claim.key, response)
        .await?)
}

/// Forgets a claim made with [`begin_resource`], so the client's retry runs
/// again. A release that fails only delays that retry until the lease runs
/// out.
pub async fn release(deps: &Deps, claim: &Claim) {
    if let Err(release) = deps.store.checkouts().release_key(&claim.scope, &claim.key).await {
        tracing::warn!(error = %release, "could not release an idempotency key; it frees itself after its lease");
    }
}
