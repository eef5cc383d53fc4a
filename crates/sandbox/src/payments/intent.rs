//! The PaymentIntent object, the form parameters that create one, and the test-mode
//! rule that the payment method decides the outcome.
//!
//! A payment confirmed `off_session` (a renewal: the customer is not there to act)
//! settles at once, as a card payment does at Stripe: the create call answers with
//! the succeeded intent, or with a `402` card error that carries the declined intent.
//! One confirmed on-session settles later, like a bank debit, and its webhook says how.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::ids::{new_id, random_alnum, unix_now};

/// Stripe's PaymentIntent statuses that the sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    Processing,
    Succeeded,
    Canceled,
}

impl IntentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresPaymentMethod => "requires_payment_method",
            Self::RequiresConfirmation => "requires_confirmation",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Canceled => "canceled",
        }
    }
}

/// `last_payment_error` of a declined intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentError {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
    pub decline_code: Option<String>,
    /// Stripe's advice on retrying an issuer's decline, where there is one:
    /// `do_not_try_again`, `try_again_later` or `confirm_card_data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice_code: Option<String>,
    pub message: String,
    pub payment_method: Option<String>,
}

/// The PaymentIntent object as it goes over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub object: String,
    pub amount: i64,
    pub amount_received: i64,
    pub currency: String,
    pub status: IntentStatus,
    pub client_secret: String,
    pub payment_method: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
    pub canceled_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub last_payment_error: Option<PaymentError>,
    pub livemode: bool,
}

/// How a confirmed intent will settle; kept beside the intent, never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeed,
    Decline {
        code: &'static str,
        decline_code: &'static str,
        advice_code: Option<&'static str>,
        message: &'static str,
    },
}

impl Outcome {
    /// Stripe's test payment methods: the named decline cards fail, every other
    /// `pm_…` succeeds. `pm_card_chargeCustomerFail` is the card that can be saved
    /// (its on-session payment succeeds) and whose later charges, made off-session,
    /// are declined. Each decline carries the advice a renewal's retries follow:
    /// a generic or fraud decline says not to try again, insufficient funds to try
    /// later, an expired card to get new card details; the saved card that starts
    /// failing gives none, so it is retried on the dunning schedule.
    pub fn for_payment_method(payment_method: &str, off_session: bool) -> Self {
        let decline = |code, decline_code, advice_code, message| Self::Decline {
            code,
            decline_code,
            advice_code,
            message,
        };
        let declined = "Your card was declined.";
        match payment_method {
            "pm_card_declined" | "pm_card_visa_chargeDeclined" => {
                decline("card_declined", "generic_decline", Some("do_not_try_again"), declined)
            }
            "pm_card_chargeDeclinedInsufficientFunds" => decline(
                "card_declined",
                "insufficient_funds",
                Some("try_again_later"),
                "Your card has insufficient funds.",
            ),
            "pm_card_chargeDeclinedExpiredCard" => decline(
                "expired_card",
                "expired_card",
                Some("confirm_card_data"),
                "Your card has expired.",
            ),
            "pm_card_chargeDeclinedFraudulent" => {
                decline("card_declined", "fraudulent", Some("do_not_try_again"), declined)
            }
            "pm_card_chargeCustomerFail" if off_session => decline("card_declined", "generic_decline", None, declined),
            _ => Self::Succeed,
        }
    }
}

/// An intent plus the outcome its payment method will produce.
pub(crate) struct IntentRecord {
    pub intent: PaymentIntent,
    pub outcome: Option<Outcome>,
}

/// The parameters of `POST /v1/payment_intents`, parsed and checked.
#[derive(Debug)]
pub(crate) struct CreateParams {
    pub amount: i64,
    pub currency: String,
    pub payment_method: Option<String>,
    pub confirm: bool,
    /// Charged without the customer present (a renewal): settles at once.
    pub off_session: bool,
    pub metadata: BTreeMap<String, String>,
}

/// Stripe's largest amount for most currencies (eight digits).
const MAX_AMOUNT: i64 = 99_999_999;

/// Parses a form body into key/value pairs, and a canonical fingerprint of them (sorted,
/// so the order fields were sent in does not make a replay look like a new request).
pub(crate) fn parse_form(body: &[u8]) -> Result<(BTreeMap<String, String>, String), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| ApiError::invalid_request("Invalid request body: expected application/x-www-form-urlencoded."))?;
    // A repeated key keeps its last value, as most form decoders do.
    let form: BTreeMap<String, String> = pairs.into_iter().collect();
    let fingerprint =
        serde_urlencoded::to_string(&form).map_err(|_| ApiError::invalid_request("Invalid request body."))?;
    Ok((form, fingerprint))
}

impl CreateParams {
    /// Checks the form like Stripe does; unknown parameters are tolerated so an adapter
    /// that sends `description` or `receipt_email` still works.
    pub fn from_form(form: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let amount = parse_amount(form.get("amount"))?;
        let currency = parse_currency(form.get("currency"))?;
        let payment_method = form
            .get("payment_method")
            .map(|pm| parse_payment_method(pm))
            .transpose()?;
        let confirm = match form.get("confirm").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "confirm",
                    "parameter_invalid_boolean",
                    "Invalid boolean: confirm must be true or false.",
                ));
            }
        };
        // Stripe also takes `one_off` and `recurring` for an off-session payment.
        let off_session = match form.get("off_session").map(String::as_str) {
            None | Some("false") => false,
            Some("true" | "one_off" | "recurring") => true,
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "off_session",
                    "parameter_invalid_boolean",
                    "Invalid off_session: must be true, false, one_off or recurring.",
                ));
            }
        };
        if off_session && !confirm {
            return Err(ApiError::invalid_param(
                "confirm",
                "parameter_missing",
                "off_session can only be used when confirm=true.",
            ));
        }
        if confirm && payment_method.is_none() {
            return Err(ApiError::invalid_param(
                "payment_method",
                "parameter_missing",
                "You must provide a payment_method to confirm this PaymentIntent.",
            ));
        }
        let metadata = form
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((name.to_owned(), value.clone()))
            })
            .collect();
        Ok(Self {
            amount,
            currency,
            payment_method,
            confirm,
            off_session,
            metadata,
        })
    }

    /// Builds the intent in the state confirmation leaves it in.
    pub fn into_record(self) -> IntentRecord {
        let id = new_id("pi");
        let client_secret = format!("{id}_secret_{}", random_alnum(24));
        let (status, outcome) = match (&self.payment_method, self.confirm) {
            (None, _) => (IntentStatus::RequiresPaymentMethod, None),
            (Some(_), false) => (IntentStatus::RequiresConfirmation, None),
            // Like a bank debit, the result arrives later: the webhook settles it.
            (Some(pm), true) => (
                IntentStatus::Processing,
                Some(Outcome::for_payment_method(pm, self.off_session)),
            ),
        };
        let intent = PaymentIntent {
            id,
            object: "payment_intent".to_owned(),
            amount: self.amount,
            amount_received: 0,
            currency: self.currency,
            status,
            client_secret,
            payment_method: self.payment_method,
            metadata: self.metadata,
            created: unix_now(),
            canceled_at: None,
            cancellation_reason: None,
            last_payment_error: None,
            livemode: false,
        };
        IntentRecord { intent, outcome }
    }
}

impl IntentRecord {
    /// Applies the planned outcome to a `processing` intent and names the event it
    /// produces; `None` when there is nothing to settle (cancelled meanwhile, say).
    pub fn settle(&mut self) -> Option<&'static str> {
        if self.intent.status != IntentStatus::Processing {
            return None;
        }
        match self.outcome? {
            Outcome::Succeed => {
                self.intent.status = IntentStatus::Succeeded;
                self.intent.amount_received = self.intent.amount;
                Some("payment_intent.succeeded")
            }
            Outcome::Decline {
                code,
                decline_code,
                advice_code,
                message,
            } => {
                self.intent.status = IntentStatus::RequiresPaymentMethod;
                self.intent.last_payment_error = Some(PaymentError {
                    kind: "card_error".to_owned(),
                    code: code.to_owned(),
                    decline_code: Some(decline_code.to_owned()),
                    advice_code: advice_code.map(str::to_owned),
                    message: message.to_owned(),
                    payment_method: self.intent.payment_method.clone(),
                });
                Some("payment_intent.payment_failed")
            }
        }
    }
}

/// The `402` body of a declined off-session payment: Stripe's card error, with the
/// declined intent in `payment_intent`; `None` for an intent that was not declined.
pub(crate) fn card_error_body(intent: &PaymentIntent) -> Option<String> {
    let error = intent.last_payment_error.as_ref()?;
    let mut body = serde_json::json!({
        "type": error.kind,
        "code": error.code,
        "decline_code": error.decline_code,
        "message": error.message,
        "payment_intent": intent,
        "payment_method": { "id": error.payment_method, "object": "payment_method" },
    });
    if let Some(advice) = &error.advice_code {
        body["advice_code"] = serde_json::json!(advice);
    }
    Some(serde_json::json!({ "error": body }).to_string())
}

fn parse_amount(raw: Option<&String>) -> Result<i64, ApiError> {
    let raw =
        raw.ok_or_else(|| ApiError::invalid_param("amount", "parameter_missing", "Missing required param: amount."))?;
    let amount = raw
        .parse::<i64>()
        .map_err(|_| ApiError::invalid_param("amount", "parameter_invalid_integer", "Invalid integer: amount."))?;
    if !(1..=MAX_AMOUNT).contains(&amount) {
        return Err(ApiError::invalid_param(
            "amount",
            "amount_too_large",
            format!("Amount must be between 1 and {MAX_AMOUNT} (in the currency's minor unit)."),
        ));
    }
    Ok(amount)
}

fn parse_currency(raw: Option<&String>) -> Result<String, ApiError> {
    let raw = raw
        .ok_or_else(|| ApiError::invalid_param("currency", "parameter_missing", "Missing required param: currency."))?;
    if raw.len() != 3 || !raw.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(ApiError::invalid_param(
            "currency",
            "parameter_invalid_string",
            format!("Invalid currency: {raw}. Use a three-letter ISO 4217 code."),
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

fn parse_payment_method(raw: &str) -> Result<String, ApiError> {
    let valid_suffix = raw
        .strip_prefix("pm_")
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if !valid_suffix {
        return Err(ApiError::invalid_param(
            "payment_method",
            "resource_missing",
            format!("No such PaymentMethod: '{raw}'"),
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> BTreeMap<String, String> {
        parse_form(body.as_bytes()).map(|(form, _)| form).unwrap_or_default()
    }

    #[test]
    fn fingerprint_ignores_field_order() {
        let a = parse_form(b"amount=100&currency=usd").map(|(_, f)| f).ok();
        let b = parse_form(b"currency=usd&amount=100").map(|(_, f)| f).ok();
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn metadata_brackets_become_a_map() {
        let params = CreateParams::from_form(&form(
            "amount=500&currency=USD&payment_method=pm_card_visa&confirm=true&metadata%5Border_id%5D=ord_1",
        ));
        let params = params.map_err(|e| e.message);
        let params = params.as_ref();
        assert_eq!(params.map(|p| p.currency.as_str()), Ok("usd"));
        assert_eq!(
            params.ok().and_then(|p| p.metadata.get("order_id")).map(String::as_str),
            Some("ord_1")
        );
    }

    #[test]
    fn bad_parameters_name_the_param() {
        let cases = [
            ("currency=usd", "amount"),
            ("amount=ten&currency=usd", "amount"),
            ("amount=0&currency=usd", "amount"),
            ("amount=100", "currency"),
            ("amount=100&currency=dollars", "currency"),
            ("amount=100&currency=usd&payment_method=card_visa", "payment_method"),
            ("amount=100&currency=usd&confirm=true", "payment_method"),
            (
                "amount=100&currency=usd&payment_method=pm_card_visa&confirm=yes",
                "confirm",
            ),
        ];
        for (body, param) in cases {
            let error = CreateParams::from_form(&form(body)).err();
            assert_eq!(error.and_then(|e| e.param), Some(param), "{body}");
        }
    }

    #[test]
    fn the_payment_method_decides_the_outcome() {
        let outcome = |pm, off_session| match Outcome::for_payment_method(pm, off_session) {
            Outcome::Succeed => ("succeeded", None, None),
            Outcome::Decline {
                decline_code,
                advice_code,
                ..
            } => ("declined", Some(decline_code), advice_code),
        };
        let hard = Some("do_not_try_again");
        let cases = [
            ("pm_card_visa", false, ("succeeded", None, None)),
            ("pm_card_visa", true, ("succeeded", None, None)),
            ("pm_card_mastercard", true, ("succeeded", None, None)),
            ("pm_card_declined", false, ("declined", Some("generic_decline"), hard)),
            ("pm_card_declined", true, ("declined", Some("generic_decline"), hard)),
            (
                "pm_card_chargeDeclinedInsufficientFunds",
                true,
                ("declined", Some("insufficient_funds"), Some("try_again_later")),
            ),
            (
                "pm_card_chargeDeclinedFraudulent",
                true,
                ("declined", Some("fraudulent"), hard),
            ),
            ("pm_card_chargeCustomerFail", false, ("succeeded", None, None)),
            (
                "pm_card_chargeCustomerFail",
                true,
                ("declined", Some("generic_decline"), None),
            ),
        ];
        for (pm, off_session, expected) in cases {
            assert_eq!(outcome(pm, off_session), expected, "{pm}, off_session={off_session}");
        }
    }

    #[test]
    fn off_session_needs_confirm_and_a_boolean() {
        let off = CreateParams::from_form(&form(
            "amount=100&currency=usd&payment_method=pm_card_visa&confirm=true&off_session=recurring",
        ));
        assert_eq!(off.map(|p| p.off_session).map_err(|e| e.message), Ok(true));
        for (body, param) in [
            (
                "amount=100&currency=usd&payment_method=pm_card_visa&off_session=true",
                "confirm",
            ),
            (
                "amount=100&currency=usd&payment_method=pm_card_visa&confirm=true&off_session=maybe",
                "off_session",
            ),
        ] {
            let error = CreateParams::from_form(&form(body)).err();
            assert_eq!(error.and_then(|e| e.param), Some(param), "{body}");
        }
    }
}
