//! Stripe-style idempotency keys: the first result is stored for 24 h and replayed
//! byte-for-byte; the same key with different parameters is an error.
//!
//! The store holds a std `Mutex` for the whole of an operation. Operations are short,
//! synchronous map updates (no `.await` inside), so blocking is brief, and holding the
//! lock across "look up, execute, store" is what makes two concurrent requests with
//! the same key execute once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, json_response};

/// How long a key and its response are kept, as at Stripe.
pub(crate) const KEY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Stripe rejects longer keys; so do we, rather than store unbounded strings.
const MAX_KEY_LEN: usize = 255;

/// What an operation produced, and whether that result is bound to the key.
pub(crate) struct Executed {
    pub status: StatusCode,
    pub body: String,
    /// Validation errors are not stored (Stripe only saves results once the endpoint
    /// started executing), so a corrected request may reuse the key.
    pub store: bool,
}

impl Executed {
    pub fn stored(status: StatusCode, body: String) -> Self {
        Self {
            status,
            body,
            store: true,
        }
    }

    pub fn error(error: &ApiError, store: bool) -> Self {
        Self {
            status: error.status,
            body: error.body(),
            store,
        }
    }
}

#[derive(Clone)]
struct Entry {
    fingerprint: String,
    status: StatusCode,
    body: String,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Insertion order, so expiry pops from the front instead of scanning every key.
    order: VecDeque<(Instant, String)>,
}

#[derive(Default)]
pub(crate) struct IdempotencyStore {
    inner: Mutex<Inner>,
}

impl IdempotencyStore {
    /// Runs `op` once per key; a repeat with the same `fingerprint` gets the stored
    /// response with `Idempotent-Replayed: true`. Without a key `op` always runs.
    pub fn run(&self, key: Option<&str>, fingerprint: &str, op: impl FnOnce() -> Executed) -> Response {
        let Some(key) = key else {
            let executed = op();
            return json_response(executed.status, executed.body);
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.expire(Instant::now());
        if let Some(entry) = inner.entries.get(key) {
            if entry.fingerprint != fingerprint {
                return ApiError::idempotency_mismatch().into_response();
            }
            let mut response = json_response(entry.status, entry.body.clone());
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
        let executed = op();
        if executed.store {
            let entry = Entry {
                fingerprint: fingerprint.to_owned(),
                status: executed.status,
                body: executed.body.clone(),
            };
            inner.entries.insert(key.to_owned(), entry);
            inner.order.push_back((Instant::now(), key.to_owned()));
        }
        json_response(executed.status, executed.body)
    }

    /// Number of keys currently remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).entries.len()
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some((stored_at, _)) = self.order.front() {
            if now.duration_since(*stored_at) < KEY_RETENTION {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.entries.remove(&key);
            }
        }
    }
}

/// Reads the `Idempotency-Key` header; an unreadable or over-long key is a 400.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid_request("Idempotency-Key must be printable ASCII."))?
        .trim();
    if key.is_empty() {
        return Err(ApiError::invalid_request("Idempotency-Key must not be empty."));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(ApiError::invalid_request(format!(
            "Idempotency-Key must be at most {MAX_KEY_LEN} characters."
        )));
    }
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Executed {
        Executed::stored(StatusCode::OK, body.to_owned())
    }

    #[test]
    fn expired_keys_are_forgotten() {
        let store = IdempotencyStore::default();
        let _ = store.run(Some("k1"), "f", || ok("{}"));
        assert_eq!(store.len(), 1);
        let later = Instant::now() + KEY_RETENTION + Duration::from_secs(1);
        store.inner.lock().unwrap_or_else(PoisonError::into_inner).expire(later);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn unstored_results_leave_the_key_free() {
        let store = IdempotencyStore::default();
        let bad = ApiError::invalid_request("nope");
        let _ = store.run(Some("k1"), "f1", || Executed::error(&bad, false));
        let response = store.run(Some("k1"), "f2", || ok("{}"));
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
}
