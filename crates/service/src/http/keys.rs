//! API keys: `hf_` and 24 random bytes, generated, checked for shape
//! when an operator supplies one, hashed at rest and registered, and the
//! cache of recently verified keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use holdfast_domain::ApiKeyId;
use holdfast_store::{ApiKeyRecord, NewApiKey, Scope, SharedStore};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::ApiError;

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

    pub(super) async fn lookup(&self, store: &SharedStore, secret: &str) -> Result<Option<ApiKeyRecord>, ApiError> {
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
