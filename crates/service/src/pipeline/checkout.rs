//! Checkout: validate → price from the catalogue → reserve all stock and
//! record the order in one transaction → create the payment intent.

use chrono::{DateTime, Utc};
use holdfast_domain::{
    Address, Cart, CustomerName, Email, FieldError, Money, OrderId, OrderStatus, Quantity, Sku, ValidationErrors,
};
use holdfast_store::{NewOrder, Order, PaymentIntentRef, PlaceOrderError, StatusChange, StoreError};

use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::providers::payments::{IntentRequest, ProviderError};
use holdfast_resilience::{CallError, CallOptions};

/// A checkout request after parsing at the boundary.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub cart: Cart,
    pub email: Email,
    pub name: Option<CustomerName>,
    pub address: Address,
    pub payment_method: PaymentMethod,
}

/// A provider payment method id such as `pm_card_visa`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod(String);

impl PaymentMethod {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let valid = raw.len() <= 255
            && raw
                .strip_prefix("pm_")
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "",
                "must be a payment method id such as \"pm_card_visa\"",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The cart with catalogue prices.
#[derive(Debug, Clone)]
pub struct PricedCart {
    pub lines: Vec<(Sku, Quantity, Money)>,
    pub total: Money,
}

/// What a successful checkout answers.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: Order,
    pub client_secret: String,
}

/// Prices every line from the catalogue (never from the client). An unknown
/// SKU or a cart mixing currencies is a validation error.
#[tracing::instrument(skip_all, fields(lines = cart.lines().len()))]
pub async fn price_cart(state: &AppState, cart: &Cart) -> Result<PricedCart, ApiError> {
    let skus: Vec<Sku> = cart.lines().iter().map(|line| line.sku.clone()).collect();
    let products = state.store.get_products(&skus).await?;
    let mut errors = ValidationErrors::default();
    let mut lines = Vec::with_capacity(skus.len());
    for line in cart.lines() {
        match products.iter().find(|p| p.sku == line.sku) {
            Some(product) => lines.push((line.sku.clone(), line.qty, product.price)),
            None => errors.push(FieldError::new(format!("items[sku={}].sku", line.sku), "unknown SKU")),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation("unknown_sku", errors));
    }
    let currency = lines
        .first()
        .map(|(_, _, price)| price.currency())
        .unwrap_or(holdfast_domain::Currency::USD);
    let mut total = Money::zero(currency);
    for (sku, qty, price) in &lines {
        let subtotal = price.checked_mul(qty.get()).and_then(|s| total.checked_add(s));
        total = subtotal.map_err(|e| match e {
            holdfast_domain::MoneyError::CurrencyMismatch(..) => ApiError::field(
                "mixed_currency",
                &format!("items[sku={sku}]"),
                "all items of one order must be priced in the same currency",
            ),
            holdfast_domain::MoneyError::Overflow => {
                ApiError::field("invalid_cart", "items", "the order total exceeds the maximum amount")
            }
        })?;
    }
    Ok(PricedCart { lines, total })
}

/// Runs the transactional part and the provider call. `order_id` comes from
/// the idempotency record, so a retry after a crash resumes the same order.
pub async fn checkout(
    state: &AppState,
    order_id: OrderId,
    request: &CheckoutRequest,
    priced: PricedCart,
    now: DateTime<Utc>,
) -> Result<Placed, ApiError> {
    let order = reserve_and_record(state, order_id, request, priced, now).await?;
    let intent = match create_payment_intent(state, &order).await {
        Ok(intent) => intent,
        Err(error) => {
            release_after_failure(state, &order, &error).await;
            return Err(error);
        }
    };
    state.store.attach_payment_intent(&order.id, &intent).await?;
    Ok(Placed {
        order,
        client_secret: intent.client_secret,
    })
}

/// Step 1: reserve every line, all or nothing, and write the order with its
/// timeline and outbox rows, in one transaction.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn reserve_and_record(
    state: &AppState,
    order_id: OrderId,
    request: &CheckoutRequest,
    priced: PricedCart,
    now: DateTime<Utc>,
) -> Result<Order, ApiError> {
    let ttl = chrono::Duration::seconds(i64::try_from(state.config.checkout.reservation_ttl_s).unwrap_or(900));
    let new_order = NewOrder {
        id: order_id.clone(),
        email: request.email.clone(),
        name: request.name.clone(),
        address: request.address.clone(),
        lines: priced.lines,
        total: priced.total,
        payment_method: request.payment_method.as_str().to_owned(),
        status: OrderStatus::PendingPayment,
        expires_at: now + ttl,
        now,
        cause: "checkout: stock reserved".to_owned(),
    };
    match state.store.place_order(&new_order).await {
        Ok(order) => Ok(order),
        // The id exists: an earlier attempt with this idempotency key placed
        // the order and then died. Resume it.
        Err(PlaceOrderError::Store(StoreError::Conflict(_))) => state
            .store
            .get_order(&order_id)
            .await?
            .ok_or_else(|| ApiError::not_found("order")),
        Err(error) => Err(error.into()),
    }
}

/// Step 2: the payment intent, keyed by the order id so retries never
/// create a second one.
#[tracing::instrument(skip_all, fields(order_id = %order.id))]
pub async fn create_payment_intent(state: &AppState, order: &Order) -> Result<PaymentIntentRef, ApiError> {
    let amount =
        Money::new(order.total_amount, order.currency()).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let request = IntentRequest {
        order_id: order.id.clone(),
        amount,
        payment_method: order.payment_method.clone(),
        idempotency_key: format!("{}:intent", order.id),
    };
    let policy = state
        .dependencies
        .breaker_for("payments")
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no policy for the payments dependency")))?;
    // Idempotent: the intent's key is derived from the order id.
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    match policy.call(options, || state.payments.create_intent(&request)).await {
        Ok(intent) => Ok(PaymentIntentRef {
            intent_id: intent.id,
            client_secret: intent.client_secret,
        }),
        Err(CallError::Failed(ProviderError::Rejected { code, message })) => Err(ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "payment_provider_error",
            format!("the payment provider refused the intent: {code}: {message}"),
        )),
        Err(unavailable) => Err(payments_unavailable(unavailable)),
    }
}

/// 503 with `Retry-After`: the provider failed, is refusing calls (breaker
/// open), is at its concurrency limit, or ran out of the request's time.
fn payments_unavailable(error: CallError<ProviderError>) -> ApiError {
    let kind = error.reason();
    crate::telemetry::dependency_error("payments", if kind == "failed" { "unavailable" } else { kind });
    let (code, detail, retry_after_s) = match &error {
        CallError::BulkheadFull => ("overloaded", "too many payment calls in flight; retry shortly", 1),
        CallError::BreakerOpen { retry_after } => (
            "dependency_unavailable",
            "the payment provider is failing; checkout is paused for it",
            retry_after.as_secs().max(1),
        ),
        CallError::DeadlineExceeded => (
            "dependency_unavailable",
            "the payment provider did not answer within the request's deadline",
            1,
        ),
        CallError::Failed(_) => (
            "dependency_unavailable",
            "the payment provider is not answering; retry later",
            2,
        ),
    };
    let mut api_error = ApiError::unavailable(code, detail, retry_after_s);
    api_error.cause = Some(anyhow::anyhow!("payments: {error}: {:?}", error.reason()));
    api_error
}

/// A checkout that cannot get its intent gives its stock back at once
/// instead of holding it until the reservation expires.
async fn release_after_failure(state: &AppState, order: &Order, error: &ApiError) {
    let change = StatusChange::new(
        order.id.clone(),
        OrderStatus::Cancelled,
        format!("checkout failed: {}", error.code),
        Utc::now(),
    );
    if let Err(release_error) = state.store.transition_order(&change).await {
        // The expiry sweeper releases it later; nothing is lost.
        tracing::warn!(order_id = %order.id, error = %release_error, "could not release a failed checkout now");
    }
}
