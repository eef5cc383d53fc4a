//! Checkout: validate → price from the catalogue → reserve all stock and
//! record the order in one transaction → create the payment intent.

use chrono::{DateTime, Utc};
use holdfast_domain::{
    Address, Cart, CustomerName, Email, FieldError, Money, OrderId, OrderStatus, Quantity, Sku, ValidationErrors,
};
use holdfast_store::{NewOrder, Order, PaymentIntentRef, PlaceOrderError, StatusChange, StoreError};

use super::queues;
use super::remote::{self, HoldRefused};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::providers::inventory::RemoteInventory;
use crate::providers::payments::{IntentRequest, PaymentProvider, ProviderError};
use holdfast_resilience::{CallError, CallOptions, Classify, OnUnavailable, Policy, Registry};

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

/// What checkout did with an order.
pub enum Checkout {
    /// Stock reserved and the payment intent created: `201`.
    Placed(Placed),
    /// Inventory or payments were unavailable: the order is `accepted`
    /// (or `pending_payment` without its intent) and a worker completes it
    /// later (`202`).
    Accepted(Order),
}

/// Runs the transactional part and the provider call. `order_id` comes from
/// the idempotency record, so a retry after a crash resumes the same order.
pub async fn checkout(
    state: &AppState,
    order_id: OrderId,
    request: &CheckoutRequest,
    priced: PricedCart,
    now: DateTime<Utc>,
) -> Result<Checkout, ApiError> {
    let order = reserve_and_record(state, order_id, request, priced, now).await?;
    if order.status == OrderStatus::Accepted {
        return Ok(Checkout::Accepted(order));
    }
    let intent = match request_intent(&state.dependencies, state.payments.as_ref(), &order).await {
        Ok(intent) => intent,
        Err(error) => {
            if let Some(later) = intent_for_later(state, &order, &error).await {
                return later;
            }
            let error = intent_error(error);
            release_after_failure(state, &order, &error).await;
            return Err(error);
        }
    };
    state.store.attach_payment_intent(&order.id, &intent).await?;
    Ok(Checkout::Placed(Placed {
        order,
        client_secret: intent.client_secret,
    }))
}

/// A reservation's failure as the inventory policy sees it: the database
/// timing out or unreachable is the dependency being unavailable; out of
/// stock is inventory answering.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Reservation(PlaceOrderError);

impl holdfast_resilience::Classify for Reservation {
    fn is_transient(&self) -> bool {
        matches!(&self.0, PlaceOrderError::Store(error) if error.is_retryable())
    }
}

/// Step 1: reserve every line, all or nothing, and write the order with its
/// timeline and outbox rows, in one transaction — under the inventory
/// policy, so a locked stock table costs at most its deadline. When
/// inventory is unavailable the order is taken as `accepted` instead
/// (`on_unavailable = "queue"`), or refused with 503.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn reserve_and_record(
    state: &AppState,
    order_id: OrderId,
    request: &CheckoutRequest,
    priced: PricedCart,
    now: DateTime<Utc>,
) -> Result<Order, ApiError> {
    let new_order = NewOrder {
        id: order_id.clone(),
        email: request.email.clone(),
        name: request.name.clone(),
        address: request.address.clone(),
        lines: priced.lines,
        total: priced.total,
        payment_method: request.payment_method.as_str().to_owned(),
        status: OrderStatus::PendingPayment,
        expires_at: now + reservation_ttl(&state.config),
        now,
        cause: "checkout: stock reserved".to_owned(),
    };
    let inventory = policy(&state.dependencies, "inventory").map_err(ApiError::internal)?;
    if let Some(remote) = &state.inventory {
        return hold_remotely(state, &inventory, remote, new_order).await;
    }
    let options = CallOptions::non_idempotent().with_deadline(crate::deadline::request_deadline());
    let placed = inventory
        .call(options, || async {
            state.store.place_order(&new_order).await.map_err(Reservation)
        })
        .await;
    match placed {
        Ok(order) => Ok(order),
        Err(CallError::Failed(Reservation(PlaceOrderError::Store(StoreError::Conflict(_))))) => {
            resume(state, &order_id).await
        }
        Err(CallError::Failed(Reservation(error))) if !matches!(&error, PlaceOrderError::Store(e) if e.is_retryable()) => {
            Err(error.into())
        }
        Err(unavailable) => take_for_later(state, &inventory, new_order, unavailable).await,
    }
}

/// Remote inventory: hold the stock on the inventory node (keyed by the
/// order id, so a retry finds the same hold), then write the order here
/// without touching any stock table. A hold whose order is never written
/// (this node died, or its database failed in between) is released by the
/// inventory node when it expires.
async fn hold_remotely(
    state: &AppState,
    inventory: &Policy,
    remote: &RemoteInventory,
    new_order: NewOrder,
) -> Result<Order, ApiError> {
    let lines: Vec<(Sku, Quantity)> = new_order
        .lines
        .iter()
        .map(|(sku, qty, _)| (sku.clone(), *qty))
        .collect();
    let held = remote::hold(
        &state.config,
        &state.dependencies,
        remote,
        &new_order.id,
        &lines,
        new_order.expires_at,
    )
    .await;
    match held {
        Ok(()) => match state.store.accept_order(&new_order, &[]).await {
            Ok(order) => Ok(order),
            Err(PlaceOrderError::Store(StoreError::Conflict(_))) => resume(state, &new_order.id).await,
            Err(error) => Err(error.into()),
        },
        Err(HoldRefused::Stock(refused)) => Err(refused.into()),
        Err(HoldRefused::Unavailable(unavailable)) => take_for_later(state, inventory, new_order, unavailable).await,
    }
}

/// The id exists: an earlier attempt with this idempotency key placed (or
/// accepted) the order and then died. Resume it.
async fn resume(state: &AppState, order_id: &OrderId) -> Result<Order, ApiError> {
    state
        .store
        .get_order(order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))
}

/// Inventory is unavailable: take the order as `accepted`, with the job
/// that completes it, in a transaction that touches no stock table.
async fn take_for_later<E: Classify + std::error::Error + Send + Sync + 'static>(
    state: &AppState,
    inventory: &Policy,
    mut order: NewOrder,
    why: CallError<E>,
) -> Result<Order, ApiError> {
    if inventory.config().on_unavailable == OnUnavailable::Reject {
        return Err(ApiError::dependency("inventory", "inventory", why));
    }
    crate::telemetry::dependency_failed("inventory", &why);
    // Per order at info: during an outage the breaker's own warning and
    // `holdfast_dependency_errors_total` say it once, not once per order.
    tracing::info!(order_id = %order.id, reason = why.reason(), "inventory unavailable: order accepted for later");
    order.status = OrderStatus::Accepted;
    order.cause = format!("accepted while inventory was unavailable ({})", why.reason());
    let template = state.config.queues.checkout.template(queues::CHECKOUT);
    let job = queues::checkout_job(&template, &order.id, order.now);
    match state.store.accept_order(&order, std::slice::from_ref(&job)).await {
        Ok(accepted) => Ok(accepted),
        Err(PlaceOrderError::Store(StoreError::Conflict(_))) => resume(state, &order.id).await,
        Err(error) => Err(error.into()),
    }
}

pub fn reservation_ttl(config: &crate::config::Config) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(config.checkout.reservation_ttl_s).unwrap_or(900))
}

/// A dependency's policy; every configured dependency has one.
pub fn policy(dependencies: &Registry, name: &str) -> anyhow::Result<Policy> {
    dependencies
        .breaker_for(name)
        .ok_or_else(|| anyhow::anyhow!("no policy for the {name} dependency"))
}

/// Step 2: the payment intent, keyed by the order id so retries never
/// create a second one.
#[tracing::instrument(skip_all, fields(order_id = %order.id))]
pub async fn create_payment_intent(state: &AppState, order: &Order) -> Result<PaymentIntentRef, ApiError> {
    request_intent(&state.dependencies, state.payments.as_ref(), order)
        .await
        .map_err(intent_error)
}

fn intent_error(error: CallError<ProviderError>) -> ApiError {
    match error {
        CallError::Failed(ProviderError::Rejected { code, message }) => ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "payment_provider_error",
            format!("the payment provider refused the intent: {code}: {message}"),
        ),
        unavailable => ApiError::dependency("payments", "the payment provider", unavailable),
    }
}

/// The provider is unavailable and `dependencies.payments.on_unavailable =
/// "queue"`: the order keeps its stock and a `checkout` job creates its
/// intent once the provider answers (`202`, status `pending_payment`; the
/// client gets the intent from `POST /api/v1/payments/intent` or by polling
/// the order). `None` when the order must fail now instead.
async fn intent_for_later(
    state: &AppState,
    order: &Order,
    error: &CallError<ProviderError>,
) -> Option<Result<Checkout, ApiError>> {
    if matches!(error, CallError::Failed(ProviderError::Rejected { .. })) {
        return None;
    }
    let payments = policy(&state.dependencies, "payments").ok()?;
    if payments.config().on_unavailable != OnUnavailable::Queue {
        return None;
    }
    crate::telemetry::dependency_failed("payments", error);
    let template = state.config.queues.checkout.template(queues::CHECKOUT);
    let job = queues::checkout_job(&template, &order.id, Utc::now());
    match state.store.queue().enqueue(&job).await {
        Ok(_) | Err(StoreError::Conflict(_)) => {
            tracing::info!(order_id = %order.id, reason = error.reason(), "payments unavailable: intent left to a worker");
            Some(Ok(Checkout::Accepted(order.clone())))
        }
        // The job could not be written: fail now, giving the stock back.
        Err(enqueue_error) => {
            tracing::warn!(order_id = %order.id, error = %enqueue_error, "could not leave the intent to a worker");
            None
        }
    }
}

/// Creates (or gets again) the order's intent under the payments policy,
/// within what is left of the request's deadline, if any.
pub async fn request_intent(
    dependencies: &Registry,
    payments: &dyn PaymentProvider,
    order: &Order,
) -> Result<PaymentIntentRef, CallError<ProviderError>> {
    let amount = Money::new(order.total_amount, order.currency()).map_err(|e| {
        CallError::Failed(ProviderError::Rejected {
            code: "invalid_amount".into(),
            message: e.to_string(),
        })
    })?;
    let request = IntentRequest {
        order_id: order.id.clone(),
        amount,
        payment_method: order.payment_method.clone(),
        idempotency_key: format!("{}:intent", order.id),
    };
    let policy =
        policy(dependencies, "payments").map_err(|e| CallError::Failed(ProviderError::Unavailable(e.to_string())))?;
    // Idempotent: the intent's key is derived from the order id.
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    let intent = policy.call(options, || payments.create_intent(&request)).await?;
    Ok(PaymentIntentRef {
        intent_id: intent.id,
        client_secret: intent.client_secret,
    })
}

/// A checkout that cannot get its intent gives its stock back at once
/// instead of holding it until the reservation expires. The release runs in
/// a task of its own, outside the request's deadline (which may be what ran
/// out), so it finishes even when the request is cut off meanwhile.
async fn release_after_failure(state: &AppState, order: &Order, error: &ApiError) {
    let change = StatusChange::new(
        order.id.clone(),
        OrderStatus::Cancelled,
        format!("checkout failed: {}", error.code),
        Utc::now(),
    );
    let store = state.store.clone();
    let release = tokio::spawn(async move { store.transition_order(&change).await });
    let failed = match release.await {
        Ok(Ok(_)) => return,
        Ok(Err(error)) => error.to_string(),
        Err(join) => join.to_string(),
    };
    // The expiry sweeper releases it later; nothing is lost.
    tracing::warn!(order_id = %order.id, error = failed, "could not release a failed checkout now");
}
