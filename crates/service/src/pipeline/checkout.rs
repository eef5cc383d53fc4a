//! Checkout: validate → price from the catalogue → reserve all stock and
//! record the order in one transaction → create the payment intent.

use chrono::{DateTime, Utc};
use holdfast_domain::{
    Address, Cart, CustomerName, Email, FieldError, Money, OrderId, OrderStatus, Quantity, Sku, ValidationErrors,
};
use holdfast_resilience::{CallError, CallOptions, OnUnavailable};
use holdfast_store::{NewOrder, Order, PaymentIntentRef, PlaceOrderError, StatusChange, StoreError};

use super::deps::Deps;
use super::error::{Error, Unavailable};
use super::queues;
use super::reservation::{self, Reserve, reservation_ttl};
use crate::providers::payments::{IntentRequest, ProviderError};

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
pub async fn price_cart(deps: &Deps, cart: &Cart) -> Result<PricedCart, Error> {
    let skus: Vec<Sku> = cart.lines().iter().map(|line| line.sku.clone()).collect();
    let products = deps.store.get_products(&skus).await?;
    let mut errors = ValidationErrors::default();
    let mut lines = Vec::with_capacity(skus.len());
    for line in cart.lines() {
        match products.iter().find(|p| p.sku == line.sku) {
            Some(product) => lines.push((line.sku.clone(), line.qty, product.price)),
            None => errors.push(FieldError::new(format!("items[sku={}].sku", line.sku), "unknown SKU")),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Invalid {
            code: "unknown_sku",
            errors,
        });
    }
    let currency = lines
        .first()
        .map(|(_, _, price)| price.currency())
        .unwrap_or(holdfast_domain::Currency::USD);
    let mut total = Money::zero(currency);
    for (sku, qty, price) in &lines {
        let subtotal = price.checked_mul(qty.get()).and_then(|s| total.checked_add(s));
        total = subtotal.map_err(|e| match e {
            holdfast_domain::MoneyError::CurrencyMismatch(..) => Error::field(
                "mixed_currency",
                &format!("items[sku={sku}]"),
                "all items of one order must be priced in the same currency",
            ),
            holdfast_domain::MoneyError::Overflow => {
                Error::field("invalid_cart", "items", "the order total exceeds the maximum amount")
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
    deps: &Deps,
    order_id: OrderId,
    request: &CheckoutRequest,
    priced: PricedCart,
    now: DateTime<Utc>,
) -> Result<Checkout, Error> {
    let order = reserve_and_record(deps, order_id, request, priced, now).await?;
    if order.status == OrderStatus::Accepted {
        return Ok(Checkout::Accepted(order));
    }
    let intent = match request_intent(deps, &order).await {
        Ok(intent) => intent,
        Err(error) => {
            if let Some(later) = intent_for_later(deps, &order, &error).await {
                return later;
            }
            let error = intent_error(error);
            release_after_failure(deps, &order, error.code()).await;
            return Err(error);
        }
    };
    deps.store.attach_payment_intent(&order.id, &intent).await?;
    Ok(Checkout::Placed(Placed {
        order,
        client_secret: intent.client_secret,
    }))
}

/// Step 1: reserve every line, all or nothing, and write the order with its
/// timeline and outbox rows (see `reservation`). When inventory is
/// unavailable the order is taken as `accepted` instead
/// (`on_unavailable = "queue"`), or refused with 503.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn reserve_and_record(
    deps: &Deps,
    order_id: OrderId,
    request: &CheckoutRequest,
    priced: PricedCart,
    now: DateTime<Utc>,
) -> Result<Order, Error> {
    let new_order = NewOrder {
        id: order_id.clone(),
        email: request.email.clone(),
        name: request.name.clone(),
        address: request.address.clone(),
        lines: priced.lines,
        total: priced.total,
        payment_method: request.payment_method.as_str().to_owned(),
        status: OrderStatus::PendingPayment,
        expires_at: now + reservation_ttl(&deps.config),
        now,
        cause: "checkout: stock reserved".to_owned(),
    };
    match reservation::reserve(deps, Reserve::New(&new_order)).await {
        Ok(order) => Ok(order),
        Err(Error::Store(StoreError::Conflict(_))) => resume(deps, &order_id).await,
        Err(Error::Unavailable(why)) => take_for_later(deps, new_order, why).await,
        Err(refused) => Err(refused),
    }
}

/// The id exists: an earlier attempt with this idempotency key placed (or
/// accepted) the order and then died. Resume it.
async fn resume(deps: &Deps, order_id: &OrderId) -> Result<Order, Error> {
    deps.store.get_order(order_id).await?.ok_or(Error::NotFound("order"))
}

/// Inventory is unavailable: take the order as `accepted`, with the job
/// that completes it, in a transaction that touches no stock table.
async fn take_for_later(deps: &Deps, mut order: NewOrder, why: Unavailable) -> Result<Order, Error> {
    if deps.dependencies.inventory.config().on_unavailable == OnUnavailable::Reject {
        return Err(why.into());
    }
    // Per order at info: during an outage the breaker's own warning and
    // `holdfast_dependency_errors_total` say it once, not once per order.
    tracing::info!(order_id = %order.id, reason = why.reason, "inventory unavailable: order accepted for later");
    order.status = OrderStatus::Accepted;
    order.cause = format!("accepted while inventory was unavailable ({})", why.reason);
    let template = deps.config.queues.checkout.template(queues::CHECKOUT);
    let job = queues::checkout_job(&template, &order.id, order.now);
    match deps.store.accept_order(&order, std::slice::from_ref(&job)).await {
        Ok(accepted) => Ok(accepted),
        Err(PlaceOrderError::Store(StoreError::Conflict(_))) => resume(deps, &order.id).await,
        Err(error) => Err(error.into()),
    }
}

/// Step 2: the payment intent, keyed by the order id so retries never
/// create a second one.
#[tracing::instrument(skip_all, fields(order_id = %order.id))]
pub async fn create_payment_intent(deps: &Deps, order: &Order) -> Result<PaymentIntentRef, Error> {
    request_intent(deps, order).await.map_err(intent_error)
}

fn intent_error(error: CallError<ProviderError>) -> Error {
    match error {
        CallError::Failed(ProviderError::Rejected { code, message }) => Error::PaymentRefused { code, message },
        unavailable => Unavailable::new("payments", "the payment provider", unavailable).into(),
    }
}

/// The provider is unavailable and `dependencies.payments.on_unavailable =
/// "queue"`: the order keeps its stock and a `checkout` job creates its
/// intent once the provider answers (`202`, status `pending_payment`; the
/// client gets the intent from `POST /api/v1/payments/intent` or by polling
/// the order). `None` when the order must fail now instead.
async fn intent_for_later(
    deps: &Deps,
    order: &Order,
    error: &CallError<ProviderError>,
) -> Option<Result<Checkout, Error>> {
    if matches!(error, CallError::Failed(ProviderError::Rejected { .. })) {
        return None;
    }
    if deps.dependencies.payments.config().on_unavailable != OnUnavailable::Queue {
        return None;
    }
    crate::telemetry::dependency_failed("payments", error);
    let template = deps.config.queues.checkout.template(queues::CHECKOUT);
    let job = queues::checkout_job(&template, &order.id, Utc::now());
    match deps.store.queue().enqueue(&job).await {
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
pub async fn request_intent(deps: &Deps, order: &Order) -> Result<PaymentIntentRef, CallError<ProviderError>> {
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
    // Idempotent: the intent's key is derived from the order id.
    let options = CallOptions::idempotent().with_deadline(crate::deadline::request_deadline());
    let intent = deps
        .dependencies
        .payments
        .call(options, || deps.payments.create_intent(&request))
        .await?;
    Ok(PaymentIntentRef {
        intent_id: intent.id,
        client_secret: intent.client_secret,
    })
}

/// A checkout that cannot get its intent gives its stock back at once
/// instead of holding it until the reservation expires. The release runs in
/// a task of its own, outside the request's deadline (which may be what ran
/// out), so it finishes even when the request is cut off meanwhile.
async fn release_after_failure(deps: &Deps, order: &Order, code: &str) {
    let change = StatusChange::new(
        order.id.clone(),
        OrderStatus::Cancelled,
        format!("checkout failed: {code}"),
        Utc::now(),
    );
    let store = deps.store.clone();
    let release = tokio::spawn(async move { store.transition_order(&change).await });
    let failed = match release.await {
        Ok(Ok(_)) => return,
        Ok(Err(error)) => error.to_string(),
        Err(join) => join.to_string(),
    };
    // The expiry sweeper releases it later; nothing is lost.
    tracing::warn!(order_id = %order.id, error = failed, "could not release a failed checkout now");
}
