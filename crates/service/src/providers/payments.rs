//! The payment provider: a client for Stripe's PaymentIntent wire format,
//! which the built-in sandbox also speaks, so the same adapter code runs in
//! the demo, the tests and production.

use std::time::Duration;

use async_trait::async_trait;
use holdfast_domain::{Money, OrderId};
use serde::Deserialize;

use crate::config::Secret;

/// What checkout needs from a provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Creates (or, for the same idempotency key, returns again) the intent
    /// that collects `amount` for `order_id`.
    async fn create_intent(&self, request: &IntentRequest) -> Result<Intent, ProviderError>;

    /// Charges a saved payment method with the customer away (a renewal):
    /// the intent is created and confirmed `off_session`, and the answer
    /// says at once whether the money was taken. The same idempotency key
    /// returns the same intent.
    async fn charge_off_session(&self, request: &RenewalCharge) -> Result<RenewalOutcome, ProviderError>;
}

/// One attempt to charge one period of a subscription.
#[derive(Debug, Clone)]
pub struct RenewalCharge {
    /// `ch_…`: the attempt, sent as metadata so the provider's events find it.
    pub charge_id: String,
    pub subscription_id: String,
    pub amount: Money,
    pub payment_method: String,
    /// Derived from the subscription, the period and the attempt.
    pub idempotency_key: String,
}

/// How an off-session charge ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewalOutcome {
    Succeeded { intent_id: String },
    Declined(Decline),
}

/// A card error, with what the issuer advises about retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    pub intent_id: Option<String>,
    pub code: String,
    pub decline_code: Option<String>,
    /// `do_not_try_again`, `try_again_later`, `confirm_card_data`, or none.
    pub advice_code: Option<String>,
    pub message: String,
}

impl Decline {
    /// A decline no retry with the same payment method can mend: the issuer
    /// says not to try again, or the provider refused the request itself.
    pub fn is_hard(&self) -> bool {
        self.advice_code.as_deref() == Some("do_not_try_again")
    }
}

#[derive(Debug, Clone)]
pub struct IntentRequest {
    pub order_id: OrderId,
    pub amount: Money,
    pub payment_method: String,
    /// Derived from the order id, so a retry never creates a second intent.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub id: String,
    pub client_secret: String,
    pub status: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Timeout, connection failure or 5xx: the call may be retried with the
    /// same idempotency key.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (4xx): retrying will not help.
    #[error("payment provider rejected the request: {code}: {message}")]
    Rejected { code: String, message: String },
}

impl holdfast_resilience::Classify for ProviderError {
    /// Unavailability is worth a retry (the idempotency key makes it safe)
    /// and counts against the provider; a refusal is the provider working.
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The provider of a node that takes no payments (`serve --role
/// inventory`): every call is refused.
pub struct NoPayments;

#[async_trait]
impl PaymentProvider for NoPayments {
    async fn create_intent(&self, _request: &IntentRequest) -> Result<Intent, ProviderError> {
        Err(ProviderError::Rejected {
            code: "not_configured".into(),
            message: "this node serves inventory only and takes no payments".into(),
        })
    }

    async fn charge_off_session(&self, _request: &RenewalCharge) -> Result<RenewalOutcome, ProviderError> {
        Err(ProviderError::Rejected {
            code: "not_configured".into(),
            message: "this node serves inventory only and takes no payments".into(),
        })
    }
}

/// Speaks `POST /v1/payment_intents` with form bodies, bearer auth and
/// `Idempotency-Key`, like Stripe.
pub struct StripeClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
}

impl StripeClient {
    pub fn new(base_url: &str, api_key: Secret, deadline: Duration) -> Result<Self, reqwest::Error> {
        let http = super::http_client(deadline).pool_max_idle_per_host(64).build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
        })
    }
}

#[derive(Deserialize)]
struct IntentBody {
    id: String,
    client_secret: String,
    status: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    advice_code: Option<String>,
    #[serde(default)]
    payment_intent: Option<IntentRef>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct IntentRef {
    id: String,
}

#[async_trait]
impl PaymentProvider for StripeClient {
    async fn charge_off_session(&self, request: &RenewalCharge) -> Result<RenewalOutcome, ProviderError> {
        let form = [
            ("amount", request.amount.amount().to_string()),
            ("currency", request.amount.currency().code().to_ascii_lowercase()),
            ("payment_method", request.payment_method.clone()),
            ("confirm", "true".to_owned()),
            ("off_session", "true".to_owned()),
            ("metadata[charge_id]", request.charge_id.clone()),
            ("metadata[subscription_id]", request.subscription_id.clone()),
        ];
        let response = self
            .http
            .post(format!("{}/v1/payment_intents", self.base_url))
            .bearer_auth(self.api_key.expose())
            .header("Idempotency-Key", &request.idempotency_key)
            .form(&form)
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ProviderError::Unavailable(format!("HTTP {status}")));
        }
        if status.as_u16() == 402 {
            // A card error: the charge was tried and declined.
            let body: ErrorBody = response
                .json()
                .await
                .map_err(|e| ProviderError::Unavailable(format!("unreadable decline: {}", describe(&e))))?;
            let error = body.error;
            return Ok(RenewalOutcome::Declined(Decline {
                intent_id: error.payment_intent.map(|intent| intent.id),
                code: error.code.or(error.kind).unwrap_or_else(|| "card_declined".to_owned()),
                decline_code: error.decline_code,
                advice_code: error.advice_code,
                message: error.message.unwrap_or_default(),
            }));
        }
        if !status.is_success() {
            let body: Option<ErrorBody> = response.json().await.ok();
            let (code, message) = body
                .map(|b| {
                    (
                        b.error.code.or(b.error.kind).unwrap_or_else(|| status.to_string()),
                        b.error.message.unwrap_or_default(),
                    )
                })
                .unwrap_or_else(|| (status.to_string(), String::new()));
            return Err(ProviderError::Rejected { code, message });
        }
        let body: IntentBody = response
            .json()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("unreadable response: {}", describe(&e))))?;
        if body.status != "succeeded" {
            // Confirmed off-session, a card payment settles in the answer;
            // anything else is not money taken, and the attempt is resumed.
            return Err(ProviderError::Unavailable(format!(
                "intent {} is {} after an off-session confirmation",
                body.id, body.status
            )));
        }
        Ok(RenewalOutcome::Succeeded { intent_id: body.id })
    }

    async fn create_intent(&self, request: &IntentRequest) -> Result<Intent, ProviderError> {
        let form = [
            ("amount", request.amount.amount().to_string()),
            ("currency", request.amount.currency().code().to_ascii_lowercase()),
            ("payment_method", request.payment_method.clone()),
            ("confirm", "true".to_owned()),
            ("metadata[order_id]", request.order_id.to_string()),
        ];
        let response = self
            .http
            .post(format!("{}/v1/payment_intents", self.base_url))
            .bearer_auth(self.api_key.expose())
            .header("Idempotency-Key", &request.idempotency_key)
            .form(&form)
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ProviderError::Unavailable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            let body: Option<ErrorBody> = response.json().await.ok();
            let (code, message) = body
                .map(|b| {
                    (
                        b.error.code.or(b.error.kind).unwrap_or_else(|| status.to_string()),
                        b.error.message.unwrap_or_default(),
                    )
                })
                .unwrap_or_else(|| (status.to_string(), String::new()));
            return Err(ProviderError::Rejected { code, message });
        }
        let body: IntentBody = response
            .json()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("unreadable response: {}", describe(&e))))?;
        Ok(Intent {
            id: body.id,
            client_secret: body.client_secret,
            status: body.status,
        })
    }
}

/// reqwest's error with its source chain, which names the real cause
/// (connection refused, timed out).
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
