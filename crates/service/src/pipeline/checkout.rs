//! Checkout: validate → price from the catalogue → claim the idempotency
//! key, reserve all stock and record the order in one transaction → create
//! the payment intent → record it with the answer in a second transaction.

use chrono::{DateTime, Utc};
use holdfast_domain::{
    Address, Cart, CustomerName, Email, FieldError, Money, OrderId, OrderStatus, Quantity, Sku, ValidationErrors,
};
use holdfast_resilience::{CallError, CallOptions, OnUnavailable};
use holdfast_store::{
    CheckoutBegin, CheckoutFinish, CheckoutStart, IdempotentRequest, NewOrder, Order, PaymentIntentRef, StatusChange,
    Stock, StoredResponse,
};

use super::deps::Deps;
use super::error::{Error, Unavailable};
use super::idempotency::Claim;
use super::queues;
use super::reservation::{self, reservation_ttl};
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

/// How the API answers a checkout's outcome: given by the HTTP layer, so
/// that the answer is stored for the idempotency key in the same
/// transaction as the writes it reports.
pub type Render = dyn Fn(&Checkout) -> StoredResponse + Send + Sync;

/// A checkout's answer: the request's own, or one stored before.
#[derive(Debug)]
pub enum Answered {
    First(StoredResponse),
    Replayed(StoredResponse),
}

/// Places an order idempotently, in two write transactions: the key, the
/// reservation and the order in the first; then the provider call; then the
/// intent and the stored answer in the second. An order taken for later is
/// one transaction. Errors worth retrying (`5xx`) leave either nothing
/// written or the key open and bound to its order, so the client's retry
/// resumes that order; other errors are for the caller to store.
pub async fn place(
    deps: &Deps,
    claim: &Claim,
    request: &CheckoutRequest,
    priced: PricedCart,
    now: DateTime<Utc>,
    render: &Render,
) -> Result<Answered, Error> {
    let order = new_order(deps, OrderId::generate(), request, priced, now);
    let key = claim.request(deps, &order.id, now);
    let begun = match reservation::begin(deps, &key, &order).await {
        Err(Error::Unavailable(why)) => match take_for_later(deps, claim, &key, order, why, render).await? {
            Later::Answered(answer) => return Ok(Answered::First(answer)),
            Later::Begun(begun) => *begun,
        },
        begun => begun?,
    };
    match begun {
        CheckoutBegin::Placed(order) | CheckoutBegin::Resumed(order) => complete(deps, claim, order, render).await,
        CheckoutBegin::Replay(answer) => Ok(Answered::Replayed(answer)),
        CheckoutBegin::InProgress => Err(Error::IdempotencyInProgress),
        CheckoutBegin::Mismatch => Err(Error::IdempotencyMismatch),
    }
}

fn new_order(
    deps: &Deps,
    order_id: OrderId,
    request: &CheckoutRequest,
    priced: PricedCart,
    now: DateTime<Utc>,
) -> NewOrder {
    NewOrder {
        id: order_id,
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
    }
}

/// What taking an order for later came to.
enum Later {
    /// Taken, and its `202` stored.
    Answered(StoredResponse),
    /// The key had been used: what it holds.
    Begun(Box<CheckoutBegin>),
}

/// Inventory is unavailable: take the order as `accepted`, with the job
/// that completes it and the `202` stored for its key, in one transaction
/// that touches no stock table.
async fn take_for_later(
    deps: &Deps,
    claim: &Claim,
    key: &IdempotentRequest,
    mut order: NewOrder,
    why: Unavailable,
    render: &Render,
) -> Result<Later, Error> {
    if deps.dependencies.inventory.config().on_unavailable == OnUnavailable::Reject {
        return Err(why.into());
    }
    // Per order at info: during an outage the breaker's own warning and
    // `holdfast_dependency_errors_total` say it once, not once per order.
    tracing::info!(order_id = %order.id, reason = why.reason, "inventory unavailable: order accepted for later");
    order.status = OrderStatus::Accepted;
    order.cause = format!("accepted while inventory was unavailable ({})", why.reason);
    let job = checkout_job(deps, &order.id, order.now);
    let answer = |accepted: &Order| render(&Checkout::Accepted(accepted.clone()));
    let start = CheckoutStart {
        key,
        order: &order,
        stock: Stock::Untouched,
        jobs: std::slice::from_ref(&job),
        answer: Some(&answer),
    };
    Ok(match deps.store.checkouts().begin(&start).await? {
        CheckoutBegin::Placed(accepted) => Later::Answered(render(&Checkout::Accepted(accepted))),
        // A retry of a checkout that failed, while inventory is still
        // unavailable: its order is `accepted`; leave it to the worker too.
        CheckoutBegin::Resumed(resumed) if resumed.status == OrderStatus::Accepted => {
            Later::Answered(leave_to_worker(deps, claim, &resumed, render).await?)
        }
        // This request's own first transaction may have committed just as
        // the inventory policy cut it off: then the key and the order (whose
        // id only this request knows) are its own.
        CheckoutBegin::InProgress => match deps.store.get_order(&order.id).await? {
            Some(own) => Later::Begun(Box::new(CheckoutBegin::Resumed(own))),
            None => Later::Begun(Box::new(CheckoutBegin::InProgress)),
        },
        other => Later::Begun(Box::new(other)),
    })
}

fn checkout_job(deps: &Deps, order_id: &OrderId, now: DateTime<Utc>) -> holdfast_store::NewJob {
    let template = deps.config.queues.checkout.template(queues::CHECKOUT);
    queues::checkout_job(&template, order_id, now)
}

/// Step 2, after the first transaction: the payment intent, then the
/// second transaction with the intent and the answer. An order that is not
/// awaiting payment (a resumed one that moved on, or one `accepted` while
/// inventory stays unavailable) is answered as it is.
#[tracing::instrument(skip_all, fields(order_id = %order.id))]
async fn complete(deps: &Deps, claim: &Claim, order: Order, render: &Render) -> Result<Answered, Error> {
    match order.status {
        OrderStatus::PendingPayment => {}
        OrderStatus::Accepted => return Ok(Answered::First(leave_to_worker(deps, claim, &order, render).await?)),
        _ => {
            let answer = render(&Checkout::Accepted(order.clone()));
            finish(deps, claim, &order, None, &[], &answer).await?;
            return Ok(Answered::First(answer));
        }
    }
    let intent = match request_intent(deps, &order).await {
        Ok(intent) => intent,
        Err(error) => return intent_failed(deps, claim, &order, error, render).await,
    };
    let answer = render(&Checkout::Placed(Placed {
        order: order.clone(),
        client_secret: intent.client_secret.clone(),
    }));
    if let Err(error) = finish(deps, claim, &order, Some(&intent), &[], &answer).await {
        // The intent exists and the order keeps its stock: the retry needs
        // only the key, and gets the same intent again.
        reopen(deps, claim, &order, None).await;
        return Err(error);
    }
    Ok(Answered::First(answer))
}

/// The second transaction: the intent or the jobs, and the stored answer.
async fn finish(
    deps: &Deps,
    claim: &Claim,
    order: &Order,
    intent: Option<&PaymentIntentRef>,
    jobs: &[holdfast_store::NewJob],
    answer: &StoredResponse,
) -> Result<(), Error> {
    let finish = CheckoutFinish {
        scope: &claim.scope,
        key: &claim.key,
        order_id: &order.id,
        intent,
        jobs,
        answer,
    };
    Ok(deps.store.checkouts().finish(&finish).await?)
}

/// An `accepted` order is completed by the checkout worker: its job and the
/// `202`, in one transaction.
async fn leave_to_worker(deps: &Deps, claim: &Claim, order: &Order, render: &Render) -> Result<StoredResponse, Error> {
    let answer = render(&Checkout::Accepted(order.clone()));
    let job = checkout_job(deps, &order.id, Utc::now());
    finish(deps, claim, order, None, std::slice::from_ref(&job), &answer).await?;
    Ok(answer)
}

/// The intent could not be created. Payments unavailable with
/// `on_unavailable = "queue"`: the order keeps its stock and a worker
/// creates the intent (`202`). Refused by the provider: the order is
/// cancelled, its stock returned, and the refusal is the answer to store.
/// Otherwise the error is retryable: the order gives its stock back and
/// waits in `accepted`, and the key opens for the client's retry, which
/// resumes this order and its one intent.
async fn intent_failed(
    deps: &Deps,
    claim: &Claim,
    order: &Order,
    error: CallError<ProviderError>,
    render: &Render,
) -> Result<Answered, Error> {
    if let Some(Ok(answer)) = intent_for_later(deps, claim, order, &error, render).await {
        return Ok(Answered::First(answer));
    }
    let error = intent_error(error);
    let code = error.code();
    let (to, cause) = match &error {
        Error::PaymentRefused { .. } => (OrderStatus::Cancelled, format!("checkout failed: {code}")),
        _ => (
            OrderStatus::Accepted,
            format!("checkout failed: {code}; stock returned until the client retries"),
        ),
    };
    let change = StatusChange::new(order.id.clone(), to, cause, Utc::now());
    if to == OrderStatus::Cancelled {
        release_after_failure(deps, order, change).await;
    } else {
        reopen(deps, claim, order, Some(change)).await;
    }
    Err(error)
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
/// the order), written with the answer in the second transaction. `None`
/// when the order must fail now instead; `Some(Err)` when the job could not
/// be written, so it fails now too.
async fn intent_for_later(
    deps: &Deps,
    claim: &Claim,
    order: &Order,
    error: &CallError<ProviderError>,
    render: &Render,
) -> Option<Result<StoredResponse, Error>> {
    if matches!(error, CallError::Failed(ProviderError::Rejected { .. })) {
        return None;
    }
    if deps.dependencies.payments.config().on_unavailable != OnUnavailable::Queue {
        return None;
    }
    crate::telemetry::dependency_failed("payments", error);
    let answer = render(&Checkout::Accepted(order.clone()));
    let job = checkout_job(deps, &order.id, Utc::now());
    match finish(deps, claim, order, None, std::slice::from_ref(&job), &answer).await {
        Ok(()) => {
            tracing::info!(order_id = %order.id, reason = error.reason(), "payments unavailable: intent left to a worker");
            Some(Ok(answer))
        }
        Err(finish_error) => {
            tracing::warn!(order_id = %order.id, error = %finish_error, "could not leave the intent to a worker");
            Some(Err(finish_error))
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
/// instead of holding it until the reservation expires. The write runs in a
/// task of its own, outside the request's deadline (which may be what ran
/// out), so it finishes even when the request is cut off meanwhile.
async fn release_after_failure(deps: &Deps, order: &Order, change: StatusChange) {
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

/// Opens the key for the client's retry at once, applying `change` (the
/// order back to `accepted`, its stock returned) in the same transaction;
/// outside the request's deadline, as `release_after_failure`. If it fails,
/// the key opens when its lease runs out, and the sweeper returns the stock
/// when the reservation expires.
async fn reopen(deps: &Deps, claim: &Claim, order: &Order, change: Option<StatusChange>) {
    let store = deps.store.clone();
    let (scope, key) = (claim.scope.clone(), claim.key.clone());
    let reopened = tokio::spawn(async move {
        let at = change.as_ref().map_or_else(Utc::now, |change| change.at);
        store.checkouts().reopen(&scope, &key, change.as_ref(), at).await
    });
    let failed = match reopened.await {
        Ok(Ok(_)) => return,
        Ok(Err(error)) => error.to_string(),
        Err(join) => join.to_string(),
    };
    tracing::warn!(order_id = %order.id, error = failed, "could not open a failed checkout's key for its retry");
}
