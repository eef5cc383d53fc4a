//! Sending one signed delivery to a partner endpoint, per the Standard
//! Webhooks spec: headers `webhook-id` (the event id, stable across retries),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//! base64-decoded part of the endpoint's `whsec_…` secret).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use holdfast_signing::{SignedHeaders, WebhookSecret};

use super::egress::{Egress, FilteringResolver};
use super::payments::describe;

/// One delivery to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub secret: &'a WebhookSecret,
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
    egress: Egress,
}

impl WebhookSender {
    /// A sender whose deliveries reach only what `egress` allows: the
    /// client's resolver drops blocked addresses, and `send` checks a URL
    /// whose host is a literal address (no name to resolve).
    pub fn new(deadline: Duration, egress: Egress) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .dns_resolver(FilteringResolver::new(egress))
            .timeout(deadline)
            .connect_timeout(deadline.min(Duration::from_secs(5)))
            .user_agent(concat!("holdfast-webhooks/", env!("CARGO_PKG_VERSION")))
            // Partners' redirects are not followed: a delivery goes where the
            // endpoint says, or fails visibly.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, egress })
    }

    pub async fn send(&self, outgoing: &Outgoing<'_>) -> Answer {
        if let Ok(url) = url::Url::parse(outgoing.url)
            && let Err(refused) = self.egress.check_url(&url)
        {
            return Answer {
                status: None,
                latency: Duration::ZERO,
                error: Some(refused.to_string()),
                retry_after: None,
            };
        }
        let signed = SignedHeaders::sign(
            outgoing.secret,
            outgoing.msg_id,
            outgoing.now.timestamp(),
            outgoing.body,
        );
        let started = Instant::now();
        let mut request = self.http.post(outgoing.url).header("content-type", "application/json");
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        let sent = request.body(outgoing.body.to_owned()).send().await;
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
