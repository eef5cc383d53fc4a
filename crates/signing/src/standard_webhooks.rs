//! The Standard Webhooks signing scheme (standardwebhooks.com): `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` headers.
//!
//! Holdfast signs partner webhooks with [`sign`] so that any Standard Webhooks verifier
//! accepts them, and the recording receiver checks them with [`verify`]. The signed
//! content is `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the bytes behind a
//! `whsec_<base64>` secret. Verification errors are distinct so a receiver can tell a
//! misconfigured sender (missing header) from a clock problem or a replay (timestamp)
//! and from a wrong secret or tampering (no matching signature).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the message id, stable across retries of one message.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the signing time in integer Unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying one or more space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The spec's recommended tolerance between the signed timestamp and the receiver's clock.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

const SECRET_PREFIX: &str = "whsec_";
/// The spec asks for keys of 24 to 64 bytes; shorter ones are too easy to guess.
const MIN_KEY_LEN: usize = 24;
const MAX_KEY_LEN: usize = 64;
/// Generated keys are as long as the SHA-256 output, the length RFC 2104 recommends for
/// an HMAC key; a longer one adds no strength.
const GENERATED_KEY_LEN: usize = 32;

/// Why a `whsec_…` string is not a usable secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret must start with `whsec_`")]
    MissingPrefix,
    #[error("the part of a webhook secret after `whsec_` must be standard base64")]
    NotBase64,
    #[error("a webhook secret must hold {MIN_KEY_LEN} to {MAX_KEY_LEN} key bytes, not {len}")]
    BadLength { len: usize },
}

/// A Standard Webhooks signing secret: the key bytes behind `whsec_<base64>`.
///
/// `Debug` prints no key material, so a secret can sit in a logged struct. There is no
/// `Display`: the only way to the text form is [`expose`](Self::expose), which reads as
/// a deliberate act at the call site.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl WebhookSecret {
    /// Parses `whsec_<base64 of 24..=64 key bytes>`.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        Self::from_key(key)
    }

    /// Wraps raw key bytes (24 to 64 of them).
    pub fn from_key(key: Vec<u8>) -> Result<Self, SecretError> {
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(SecretError::BadLength { len: key.len() });
        }
        Ok(Self { key })
    }

    /// A fresh random 32-byte secret.
    pub fn generate() -> Self {
        let mut key = vec![0_u8; GENERATED_KEY_LEN];
        // `thread_rng` is a cryptographically secure generator seeded from the OS.
        rand::thread_rng().fill_bytes(&mut key);
        Self { key }
    }

    /// The `whsec_<base64>` text, to hand to the party that verifies.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }

    #[allow(clippy::expect_used, reason = "HMAC accepts keys of any length")]
    fn mac(&self) -> HmacSha256 {
        // HMAC pads or hashes keys of any length, so this constructor never fails; the
        // `Result` only exists because the trait also serves fixed-key MACs.
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl FromStr for WebhookSecret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// The `webhook-signature` value for one message: `v1,<base64 HMAC-SHA256>`.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: impl AsRef<[u8]>) -> String {
    let mac = signed_mac(secret, msg_id, &timestamp.to_string(), body.as_ref());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The three headers of one signed message, ready to attach to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

impl SignedHeaders {
    /// Signs `body` as message `msg_id` at `timestamp` (Unix seconds).
    pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: impl AsRef<[u8]>) -> Self {
        Self {
            id: msg_id.to_owned(),
            timestamp,
            signature: sign(secret, msg_id, timestamp, body),
        }
    }

    /// `(name, value)` pairs in the order the spec lists them.
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            (WEBHOOK_ID, self.id.clone()),
            (WEBHOOK_TIMESTAMP, self.timestamp.to_string()),
            (WEBHOOK_SIGNATURE, self.signature.clone()),
        ]
    }
}

/// The three header values a receiver got, each `None` when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

impl<'a> WebhookHeaders<'a> {
    /// Reads the three headers from a request. A value that is not UTF-8 counts as
    /// absent: the spec's values are plain ASCII, so no honest sender produces one.
    pub fn from_header_map(headers: &'a HeaderMap) -> Self {
        let read = |name: &str| {
            headers
                .get(name)
                .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
        };
        Self {
            id: read(WEBHOOK_ID),
            timestamp: read(WEBHOOK_TIMESTAMP),
            signature: read(WEBHOOK_SIGNATURE),
        }
    }
}

/// Why a delivery did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header was absent or empty; the value names it.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer number of Unix seconds.
    #[error("webhook-timestamp is not an integer number of seconds")]
    BadTimestamp,
    /// The message was signed longer ago than the tolerance allows (a replay, or a
    /// delivery held up somewhere).
    #[error("webhook-timestamp {timestamp} is more than {tolerance_secs}s before now ({now})")]
    TooOld {
        timestamp: i64,
        now: i64,
        tolerance_secs: u64,
    },
    /// The message claims to be signed further in the future than the tolerance allows
    /// (a sender's clock is wrong, or someone pre-signed a message to replay later).
    #[error("webhook-timestamp {timestamp} is more than {tolerance_secs}s after now ({now})")]
    TooNew {
        timestamp: i64,
        now: i64,
        tolerance_secs: u64,
    },
    /// No `v1` entry of `webhook-signature` matches this body under this secret.
    #[error("no v1 signature matches the message")]
    NoMatchingSignature,
}

/// Checks one delivery against the raw request body.
///
/// Following the spec's reference libraries, the timestamp is checked before the
/// signature. Every `v1,` entry is tried, because a sender rolling its secret signs
/// with both; entries of other schemes (`v1a` is the asymmetric one) are ignored.
pub fn verify(
    secret: &WebhookSecret,
    headers: WebhookHeaders<'_>,
    body: impl AsRef<[u8]>,
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let id = required(headers.id, WEBHOOK_ID)?;
    let timestamp_text = required(headers.timestamp, WEBHOOK_TIMESTAMP)?;
    let signatures = required(headers.signature, WEBHOOK_SIGNATURE)?;
    let timestamp = parse_timestamp(timestamp_text)?;
    check_tolerance(timestamp, now, tolerance)?;
    // The header text is signed as sent, not re-formatted, so the content is
    // byte-for-byte what the sender signed.
    let mac = signed_mac(secret, id, timestamp_text, body.as_ref());
    // `verify_slice` compares in constant time, so a mismatch leaks no prefix length.
    let matches = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if matches {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

fn required<'a>(value: Option<&'a str>, header: &'static str) -> Result<&'a str, VerifyError> {
    value
        .filter(|value| !value.trim().is_empty())
        .ok_or(VerifyError::MissingHeader(header))
}

/// Only plain decimal digits: `i64::from_str` would also take `+5`, which no sender
/// writes and which would sign differently from the number it denotes.
fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    if !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(VerifyError::BadTimestamp);
    }
    text.parse().map_err(|_| VerifyError::BadTimestamp)
}

fn check_tolerance(timestamp: i64, now: i64, tolerance: Duration) -> Result<(), VerifyError> {
    let tolerance_secs = tolerance.as_secs();
    if now > timestamp && now.abs_diff(timestamp) > tolerance_secs {
        return Err(VerifyError::TooOld {
            timestamp,
            now,
            tolerance_secs,
        });
    }
    if timestamp > now && timestamp.abs_diff(now) > tolerance_secs {
        return Err(VerifyError::TooNew {
            timestamp,
            now,
            tolerance_secs,
        });
    }
    Ok(())
}

fn signed_mac(secret: &WebhookSecret, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector published with the spec's reference libraries; Python's `hmac` module
    /// gives the same signature.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).expect("the spec's secret parses")
    }

    fn headers<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            id: Some(id),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    fn check(signature: &str, body: &str, now: i64) -> Result<(), VerifyError> {
        let timestamp = SPEC_TIMESTAMP.to_string();
        verify(
            &secret(),
            headers(SPEC_ID, &timestamp, signature),
            body,
            now,
            DEFAULT_TOLERANCE,
        )
    }

    #[test]
    fn signs_the_spec_vector() {
        assert_eq!(sign(&secret(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
        assert_eq!(check(SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP), Ok(()));
    }

    #[test]
    fn signs_a_32_byte_key_and_utf8_body_like_python_hmac() {
        // Computed with Python: key bytes 0..32, hmac.new(key, content, sha256), base64.
        let secret = WebhookSecret::parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("parses");
        let body = r#"{"type":"order.shipped","timestamp":"2024-05-01T12:00:00Z","data":{"order_id":"ord_1","note":"café ✓"}}"#;
        assert_eq!(
            sign(&secret, "evt_01HX", 1_714_564_800, body),
            "v1,8m6A4QA6zupa0Zuy4099aDDLK6O6HWZ+RyfD4NvbMTI="
        );
    }

    #[test]
    fn a_tampered_body_or_another_secret_does_not_match() {
        assert_eq!(
            check(SPEC_SIGNATURE, r#"{"test": 2432232315}"#, SPEC_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
        let other = sign(&WebhookSecret::generate(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(
            check(&other, SPEC_BODY, SPEC_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn the_id_and_timestamp_are_part_of_the_signed_content() {
        let timestamp = SPEC_TIMESTAMP.to_string();
        let other_id = headers("msg_other", &timestamp, SPEC_SIGNATURE);
        assert_eq!(
            verify(&secret(), other_id, SPEC_BODY, SPEC_TIMESTAMP, DEFAULT_TOLERANCE),
            Err(VerifyError::NoMatchingSignature)
        );
        let later = (SPEC_TIMESTAMP + 1).to_string();
        let other_time = headers(SPEC_ID, &later, SPEC_SIGNATURE);
        assert_eq!(
            verify(&secret(), other_time, SPEC_BODY, SPEC_TIMESTAMP, DEFAULT_TOLERANCE),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn any_listed_v1_signature_may_match() {
        let listed = format!(
            "v1,bm90IGl0 v1a,ignored v2,{} v1,%%% {SPEC_SIGNATURE}",
            &SPEC_SIGNATURE[3..]
        );
        assert_eq!(check(&listed, SPEC_BODY, SPEC_TIMESTAMP), Ok(()));
        let only_other_schemes = format!("v2,{}", &SPEC_SIGNATURE[3..]);
        assert_eq!(
            check(&only_other_schemes, SPEC_BODY, SPEC_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_rejected_either_way() {
        let edge = SPEC_TIMESTAMP + 300;
        assert_eq!(check(SPEC_SIGNATURE, SPEC_BODY, edge), Ok(()));
        assert_eq!(
            check(SPEC_SIGNATURE, SPEC_BODY, edge + 1),
            Err(VerifyError::TooOld {
                timestamp: SPEC_TIMESTAMP,
                now: edge + 1,
                tolerance_secs: 300
            })
        );
        assert_eq!(check(SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP - 300), Ok(()));
        assert_eq!(
            check(SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP - 301),
            Err(VerifyError::TooNew {
                timestamp: SPEC_TIMESTAMP,
                now: SPEC_TIMESTAMP - 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn missing_headers_and_bad_timestamps_are_named() {
        let secret = secret();
        let full = headers(SPEC_ID, "1614265330", SPEC_SIGNATURE);
        let cases = [
            (
                WebhookHeaders { id: None, ..full },
                VerifyError::MissingHeader(WEBHOOK_ID),
            ),
            (
                WebhookHeaders {
                    timestamp: Some(" "),
                    ..full
                },
                VerifyError::MissingHeader(WEBHOOK_TIMESTAMP),
            ),
            (
                WebhookHeaders {
                    signature: None,
                    ..full
                },
                VerifyError::MissingHeader(WEBHOOK_SIGNATURE),
            ),
            (
                WebhookHeaders {
                    timestamp: Some("+1614265330"),
                    ..full
                },
                VerifyError::BadTimestamp,
            ),
            (
                WebhookHeaders {
                    timestamp: Some("1614265330.5"),
                    ..full
                },
                VerifyError::BadTimestamp,
            ),
            (
                WebhookHeaders {
                    timestamp: Some("99999999999999999999"),
                    ..full
                },
                VerifyError::BadTimestamp,
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(
                verify(&secret, headers, SPEC_BODY, SPEC_TIMESTAMP, DEFAULT_TOLERANCE),
                Err(expected.clone()),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn secrets_parse_strictly_and_never_print() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").err(),
            Some(SecretError::MissingPrefix)
        );
        assert_eq!(
            WebhookSecret::parse("whsec_not base64!").err(),
            Some(SecretError::NotBase64)
        );
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ=").err(),
            Some(SecretError::BadLength { len: 5 })
        );
        assert_eq!(secret().expose(), SPEC_SECRET);
        assert_eq!(format!("{:?}", secret()), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn generated_secrets_are_fresh_and_round_trip() {
        let first = WebhookSecret::generate();
        let second = WebhookSecret::generate();
        assert_ne!(first.expose(), second.expose());
        let text = first.expose();
        assert!(text.starts_with("whsec_"));
        let reparsed: WebhookSecret = text.parse().expect("a generated secret parses");
        assert_eq!(reparsed.expose(), text);
        let signed = SignedHeaders::sign(&first, "msg_1", 1_700_000_000, "{}");
        let timestamp = signed.timestamp.to_string();
        let received = headers(&signed.id, &timestamp, &signed.signature);
        assert_eq!(
            verify(&reparsed, received, "{}", 1_700_000_000, DEFAULT_TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn headers_are_read_from_a_header_map() {
        let signed = SignedHeaders::sign(&secret(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let mut map = HeaderMap::new();
        for (name, value) in signed.pairs() {
            map.insert(name, value.parse().expect("ASCII header value"));
        }
        let read = WebhookHeaders::from_header_map(&map);
        assert_eq!(read, headers(SPEC_ID, "1614265330", SPEC_SIGNATURE));
        assert_eq!(
            verify(&secret(), read, SPEC_BODY, SPEC_TIMESTAMP, DEFAULT_TOLERANCE),
            Ok(())
        );
    }
}
