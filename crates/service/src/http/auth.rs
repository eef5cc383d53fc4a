//! Authentication: `Authorization: Bearer hf_…`, checked against the
//! stored key hashes (`keys`), with the scopes `storefront` and `admin`
//! (admin may do everything storefront may), as the extractors `Storefront`
//! and `Admin`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use holdfast_domain::ApiKeyId;
use holdfast_store::Scope;

use super::error::ApiError;
pub use super::keys::{generate_key, hash_key, register_key, validate_key};
use super::state::AppState;

/// The caller, authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: ApiKeyId,
    pub scope: Scope,
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let unauthorized = |detail: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("send an API key as Authorization: Bearer hf_…"))?;
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| s.starts_with("hf_") && s.len() <= 128)
        .ok_or_else(|| unauthorized("the Authorization header must be Bearer hf_…"))?;
    let record = state
        .keys
        .lookup(&state.deps.store, secret)
        .await?
        .ok_or_else(|| unauthorized("unknown or revoked API key"))?;
    if let Some(limiter) = &state.limiter
        && let Err(not_until) = limiter.check_key(&record.id.to_string())
    {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this API key is over its request rate",
        );
        error.retry_after_s = Some(wait.as_secs().max(1));
        return Err(error);
    }
    Ok(Principal {
        key_id: record.id,
        scope: record.scope,
    })
}

/// Any valid key: storefront or admin.
pub struct Storefront(pub Principal);

/// An admin key.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Storefront {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await.map(Storefront)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate(parts, state).await?;
        if principal.scope != Scope::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this endpoint needs an admin key",
            ));
        }
        Ok(Admin(principal))
    }
}
