//! API keys: `Authorization: Bearer hf_…`, hashed at rest, with the scopes
//! `storefront` and `admin` (admin may do everything storefront may).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use holdfast_domain::ApiKeyId;
use holdfast_store::{ApiKeyRecord, NewApiKey, Scope, SharedStore};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::state::AppState;

/// Keys are 24 random bytes, so a fast hash is enough at rest: there is no
/// low-entropy secret for a slow hash to protect (as with GitHub tokens).
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn generate_key() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("hf_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Checks the shape of a key supplied by an operator (bootstrap).
pub fn validate_key(secret: &str) -> Result<(), String> {
    let valid = secret.starts_with("hf_")
        && secret.len() >= 24
        && secret[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err("an API key is \"hf_\" followed by at least 21 letters, digits, '-' or '_'".into())
    }
}

pub async fn register_key(store: &SharedStore, secret: &str, scope: Scope, name: &str) -> Result<ApiKeyId, ApiError> {
    let id = ApiKeyId::generate();
    store
        .insert_api_key(&NewApiKey {
            id: id.clone(),
            hash: hash_key(secret),
            scope,
            name: name.to_owned(),
            created_at: chrono::Utc::now(),
        })
        .await?;
    Ok(id)
}

/// Recently verified keys, so a checkout does not cost an extra query. A
/// revoked key stays usable for at most `TTL`.
#[derive(Default)]
pub struct KeyCache {
    // A std Mutex: held for a map lookup only, never across an await.
    entries: Mutex<HashMap<String, (ApiKeyRecord, Instant)>>,
}

impl KeyCache {
    const TTL: Duration = Duration::from_secs(30);

    async fn lookup(&self, store: &SharedStore, secret: &str) -> Result<Option<ApiKeyRecord>, ApiError> {
        let hash = hash_key(secret);
        if let Ok(entries) = self.entries.lock()
            && let Some((record, at)) = entries.get(&hash)
            && at.elapsed() < Self::TTL
        {
            return Ok(Some(record.clone()));
        }
        let record = store.find_api_key(&hash).await?;
        if let (Some(record), Ok(mut entries)) = (&record, self.entries.lock()) {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (record.clone(), Instant::now()));
        }
        Ok(record)
    }
}

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
        .lookup(&state.store, secret)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = generate_key();
        assert!(validate_key(&a).is_ok(), "{a}");
        assert_ne!(a, generate_key());
        assert!(validate_key("hf_short").is_err());
        assert!(validate_key("sk_aaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert_ne!(hash_key(&a), a);
    }
}
