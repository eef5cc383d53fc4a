//! Sending one signed delivery to a partner endpoint, per the Standard
//! Webhooks spec: headers `webhook-id` (the event id, stable across retries),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//! base64-decoded part of the endpoint's `whsec_…` secret).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::payments::describe;

pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh endpoint secret: 24 random bytes, as Svix makes them.
pub fn generate_secret() -> String {
    let mut key = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", BASE64.encode(key))
}

/// The key bytes of a `whsec_…` secret; `None` if it is not one.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let key = BASE64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    (16..=64).contains(&key.len()).then_some(key)
}

/// The `webhook-signature` header value for one message.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// One delivery to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub key: &'a [u8],
    pub msg_id: &'a str,
    pub body: &'a str,
    pub now: DateTime<Utc>,
}

/// What the endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `None` when no response came (refused, reset, timed out).
    pub status: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
    /// The endpoint's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

pub struct WebhookSender {
    http: reqwest::Client,
}

impl WebhookSender {
    pub fn new(deadline: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(deadline)
            .connect_timeout(deadline.min(Duration::from_secs(5)))
            .user_agent(concat!("holdfast-webhooks/", env!("CARGO_PKG_VERSION")))
            // Partners' redirects are not followed: a delivery goes where the
            // endpoint says, or fails visibly.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http })
    }

    pub async fn send(&self, outgoing: &Outgoing<'_>) -> Answer {
        let timestamp = outgoing.now.timestamp();
        let started = Instant::now();
        let sent = self
            .http
            .post(outgoing.url)
            .header("content-type", "application/json")
            .header("webhook-id", outgoing.msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                sign(outgoing.key, outgoing.msg_id, timestamp, outgoing.body),
            )
            .body(outgoing.body.to_owned())
            .send()
            .await;
        let latency = started.elapsed();
        match sent {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, outgoing.now));
                Answer {
                    status: Some(status.as_u16()),
                    latency,
                    error: (!status.is_success()).then(|| format!("HTTP {status}")),
                    retry_after,
                }
            }
            Err(error) => Answer {
                status: None,
                latency,
                error: Some(describe(&error)),
                retry_after: None,
            },
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (at.with_timezone(&Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_round_trip() {
        let secret = generate_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(secret_key(&secret).map(|k| k.len()), Some(24));
        assert_eq!(secret_key("whsec_not base64"), None);
        assert_eq!(secret_key("sk_abc"), None);
    }

    #[test]
    fn signature_matches_the_spec_example() {
        // The example from the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
