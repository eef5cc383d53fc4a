//! Stripe-style webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256>`.
//!
//! The sandbox signs with [`stripe_signature_header`]; the service checks inbound
//! provider webhooks with [`verify_stripe_signature`], so the errors are precise enough
//! to log and count separately (a missing header is a misconfigured sender, an old
//! timestamp is a replay or a clock problem, a mismatch is a wrong secret or tampering).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's default tolerance between the signed timestamp and the receiver's clock.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a `Stripe-Signature` header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request carried no `Stripe-Signature` header (or an empty one).
    #[error("missing Stripe-Signature header")]
    Missing,
    /// The header could not be parsed; the reason says which part was wrong.
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    /// The signed timestamp is further from `now` than the tolerance allows.
    #[error("signature timestamp {timestamp} is outside the tolerance of {tolerance_secs}s (now {now})")]
    TimestampOutsideTolerance {
        timestamp: i64,
        now: i64,
        tolerance_secs: u64,
    },
    /// No `v1` signature in the header matches the payload under this secret.
    #[error("no v1 signature matches the payload")]
    NoMatchingSignature,
}

/// Current Unix time in seconds, the clock both helpers expect.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

/// Builds the `Stripe-Signature` header value for `payload` signed at `timestamp`.
pub fn stripe_signature_header(secret: &str, timestamp: i64, payload: impl AsRef<[u8]>) -> String {
    let signature = hex::encode(signed_mac(secret, timestamp, payload.as_ref()).finalize().into_bytes());
    format!("t={timestamp},v1={signature}")
}

/// Checks a `Stripe-Signature` header against the raw request body.
///
/// `header` accepts `&str` or `Option<&str>` so a caller can pass the result of a
/// header lookup directly. Every `v1=` entry is tried (Stripe sends several while a
/// secret is being rolled); entries of other schemes are ignored. The signature is
/// checked before the timestamp, as Stripe's own libraries do.
pub fn verify_stripe_signature<'a>(
    secret: &str,
    header: impl Into<Option<&'a str>>,
    payload: impl AsRef<[u8]>,
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header.into().map(str::trim).unwrap_or_default();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    let parsed = ParsedHeader::parse(header)?;
    let mac = signed_mac(secret, parsed.timestamp, payload.as_ref());
    // `verify_slice` compares in constant time, so a mismatch leaks no prefix length.
    let matches = parsed
        .v1
        .iter()
        .filter_map(|candidate| hex::decode(candidate).ok())
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if !matches {
        return Err(SignatureError::NoMatchingSignature);
    }
    let tolerance_secs = tolerance.as_secs();
    let skew = now.abs_diff(parsed.timestamp);
    // A timestamp far in the future is as suspicious as an old one: reject both.
    if skew > tolerance_secs {
        return Err(SignatureError::TimestampOutsideTolerance {
            timestamp: parsed.timestamp,
            now,
            tolerance_secs,
        });
    }
    Ok(())
}

#[allow(clippy::expect_used, reason = "HMAC accepts keys of any length")]
fn signed_mac(secret: &str, timestamp: i64, payload: &[u8]) -> HmacSha256 {
    // HMAC pads or hashes keys of any length, so this constructor never fails; the
    // `Result` only exists because the trait also serves fixed-key MACs.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

struct ParsedHeader<'a> {
    timestamp: i64,
    v1: Vec<&'a str>,
}

impl<'a> ParsedHeader<'a> {
    fn parse(header: &'a str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            let Some((key, value)) = item.trim().split_once('=') else {
                return Err(SignatureError::Malformed("an entry is not key=value"));
            };
            match key.trim() {
                "t" => {
                    let t = value.trim().parse::<i64>();
                    timestamp = Some(t.map_err(|_| SignatureError::Malformed("t is not an integer"))?);
                }
                "v1" => v1.push(value.trim()),
                // Other schemes (v0 is Stripe's test-only one) are ignored, like Stripe does.
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed("no t= timestamp"))?;
        if v1.is_empty() {
            return Err(SignatureError::Malformed("no v1= signature"));
        }
        Ok(Self { timestamp, v1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &str = r#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn verify(header: Option<&str>, body: &str, now: i64) -> Result<(), SignatureError> {
        verify_stripe_signature(SECRET, header, body, now, DEFAULT_TOLERANCE)
    }

    #[test]
    fn a_fresh_signature_verifies() {
        let header = stripe_signature_header(SECRET, 1_700_000_000, BODY);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(verify(Some(&header), BODY, 1_700_000_010), Ok(()));
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        let mut mac = HmacSha256::new_from_slice(SECRET.as_bytes()).expect("any key length");
        mac.update(format!("1700000000.{BODY}").as_bytes());
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            stripe_signature_header(SECRET, 1_700_000_000, BODY),
            format!("t=1700000000,v1={expected}")
        );
    }

    #[test]
    fn a_tampered_body_is_rejected() {
        let header = stripe_signature_header(SECRET, 1_700_000_000, BODY);
        let tampered = BODY.replace("succeeded", "payment_failed");
        assert_eq!(
            verify(Some(&header), &tampered, 1_700_000_000),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_wrong_secret_is_rejected() {
        let header = stripe_signature_header("whsec_other", 1_700_000_000, BODY);
        assert_eq!(
            verify(Some(&header), BODY, 1_700_000_000),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    #[test]
    fn an_old_timestamp_is_rejected() {
        let header = stripe_signature_header(SECRET, 1_700_000_000, BODY);
        assert_eq!(
            verify(Some(&header), BODY, 1_700_000_301),
            Err(SignatureError::TimestampOutsideTolerance {
                timestamp: 1_700_000_000,
                now: 1_700_000_301,
                tolerance_secs: 300
            })
        );
        assert_eq!(verify(Some(&header), BODY, 1_700_000_300), Ok(()));
    }

    #[test]
    fn a_future_timestamp_is_rejected() {
        let header = stripe_signature_header(SECRET, 1_700_001_000, BODY);
        assert!(matches!(
            verify(Some(&header), BODY, 1_700_000_000),
            Err(SignatureError::TimestampOutsideTolerance { .. })
        ));
    }

    #[test]
    fn a_missing_or_empty_header_is_rejected() {
        assert_eq!(verify(None, BODY, 0), Err(SignatureError::Missing));
        assert_eq!(verify(Some("  "), BODY, 0), Err(SignatureError::Missing));
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let cases = [
            ("v1=abcd", "no t= timestamp"),
            ("t=12x,v1=abcd", "t is not an integer"),
            ("t=12", "no v1= signature"),
            ("t=12,v0=abcd", "no v1= signature"),
            ("garbage", "an entry is not key=value"),
        ];
        for (header, reason) in cases {
            assert_eq!(
                verify(Some(header), BODY, 12),
                Err(SignatureError::Malformed(reason)),
                "{header}"
            );
        }
    }

    #[test]
    fn any_of_several_v1_entries_may_match() {
        let good = stripe_signature_header(SECRET, 1_700_000_000, BODY);
        let good_sig = good.split_once("v1=").map(|(_, s)| s).unwrap_or_default();
        let header = format!(
            "t=1700000000,v1={},v1=not-hex,v0=ignored,v1={good_sig}",
            "00".repeat(32)
        );
        assert_eq!(verify(Some(&header), BODY, 1_700_000_000), Ok(()));
    }

    #[test]
    fn accepts_a_plain_str_header() {
        let header = stripe_signature_header(SECRET, 5, BODY);
        assert_eq!(
            verify_stripe_signature(SECRET, header.as_str(), BODY.as_bytes(), 5, DEFAULT_TOLERANCE),
            Ok(())
        );
    }
}
