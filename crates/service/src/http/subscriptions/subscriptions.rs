//! Subscriptions: create one (with an `Idempotency-Key`), read, list, its
//! charges and timeline, cancel, pause, resume and a new payment method.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use holdfast_domain::{
    CreatorId, CustomerName, Email, PlanId, SubscriptionId, SubscriptionStatus, TestClockId, ValidationErrors,
};
use holdfast_store::{
    Charge, NewSubscription, StoredResponse, Subscription, SubscriptionEventRecord, SubscriptionFilter,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::money_out;
use crate::http::auth::Storefront;
use crate::http::error::{ApiError, ApiResult, Problem};
use crate::http::extract::{ApiJson, ApiQuery, idempotency_key, stored};
use crate::http::state::AppState;
use crate::http::types::{CustomerOut, MoneyIo};
use crate::pipeline::checkout::PaymentMethod;
use crate::pipeline::idempotency::{self, Begun, Claim};
use crate::pipeline::subscriptions::{self as steps, Cancel};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberIn {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionIn {
    pub plan_id: String,
    pub customer: SubscriberIn,
    /// A saved provider payment method, charged off-session: "pm_card_visa".
    pub payment_method: String,
    /// A test clock (`clock_…`) the subscription lives on; only with
    /// `subscriptions.test_clocks = true`.
    #[serde(default)]
    pub test_clock: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionOut {
    pub id: String,
    /// incomplete, trialing, active, past_due, unpaid, canceled, paused
    pub status: &'static str,
    pub creator_id: String,
    pub plan_id: String,
    /// The plan's price version this subscription pays.
    pub price_version: u32,
    pub price: MoneyIo,
    pub interval: &'static str,
    pub interval_count: u32,
    pub customer: CustomerOut,
    pub payment_method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_clock: Option<String>,
    pub current_period_index: u32,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub past_due_since: Option<DateTime<Utc>>,
    pub paused_at: Option<DateTime<Utc>>,
    pub resumes_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    /// The sequence of the last event in its timeline.
    pub sequence: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Subscription> for SubscriptionOut {
    fn from(s: Subscription) -> Self {
        Self {
            id: s.id.to_string(),
            status: s.status.as_str(),
            creator_id: s.creator_id.to_string(),
            plan_id: s.plan_id.to_string(),
            price_version: s.price_version,
            price: money_out(s.price),
            interval: s.interval.unit().as_str(),
            interval_count: s.interval.count(),
            customer: CustomerOut {
                email: s.email.as_str().to_owned(),
                name: s.name.map(|name| name.as_str().to_owned()),
            },
            payment_method: s.payment_method,
            test_clock: s.test_clock.map(|clock| clock.to_string()),
            current_period_index: s.current_period.index,
            current_period_start: s.current_period.start,
            current_period_end: s.current_period.end,
            cancel_at_period_end: s.cancel_at_period_end,
            canceled_at: s.canceled_at,
            past_due_since: s.past_due_since,
            paused_at: s.paused_at,
            resumes_at: s.resumes_at,
            started_at: s.started_at,
            sequence: s.sequence,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A subscription request, parsed.
struct Subscriber {
    plan_id: PlanId,
    email: Email,
    name: Option<CustomerName>,
    payment_method: String,
    test_clock: Option<TestClockId>,
}

impl SubscriptionIn {
    fn parse(&self, test_clocks: bool) -> Result<Subscriber, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let plan = errors.collect("plan_id", PlanId::parse(&self.plan_id));
        let email = errors.collect("customer.email", Email::parse(&self.customer.email));
        let name = match &self.customer.name {
            Some(raw) => errors.collect("customer.name", CustomerName::parse(raw)),
            None => None,
        };
        let method = errors.collect("payment_method", PaymentMethod::parse(&self.payment_method));
        let clock = match &self.test_clock {
            None => None,
            Some(_) if !test_clocks => {
                errors.push(holdfast_domain::FieldError::new(
                    "test_clock",
                    "test clocks are off on this service (subscriptions.test_clocks = false)",
                ));
                None
            }
            Some(raw) => errors.collect("test_clock", TestClockId::parse(raw)),
        };
        match (plan, email, method) {
            (Some(plan_id), Some(email), Some(method)) if errors.is_empty() => Ok(Subscriber {
                plan_id,
                email,
                name,
                payment_method: method.as_str().to_owned(),
                test_clock: clock,
            }),
            _ => Err(errors),
        }
    }
}

/// Subscribe a customer to a plan. The first period is charged by the
/// workers at once (after the trial, when the plan has one); the status says
/// how far it got.
#[utoipa::path(post, path = "/api/v1/subscriptions", tag = "subscriptions", request_body = SubscriptionIn,
    params(("Idempotency-Key" = String, Header, description = "Required; same key and body replay the first response")),
    responses(
        (status = 201, body = SubscriptionOut),
        (status = 400, body = Problem, description = "idempotency_key_missing or idempotency_key_invalid"),
        (status = 404, body = Problem, description = "the plan or test clock does not exist"),
        (status = 409, body = Problem, description = "idempotency_conflict or idempotency_in_progress"),
        (status = 422, body = Problem, description = "invalid_subscription"),
    ))]
pub async fn create_subscription(
    State(state): State<AppState>,
    Storefront(principal): Storefront,
    headers: HeaderMap,
    json: ApiJson<SubscriptionIn>,
) -> ApiResult<Response> {
    let deps = &state.deps;
    let key = idempotency_key(&headers, "POST /api/v1/subscriptions")?;
    let subscriber = json
        .body
        .parse(deps.config.subscriptions.test_clocks)
        .map_err(|errors| ApiError::validation("invalid_subscription", errors))?;
    let now = Utc::now();
    // Subscriptions' keys live apart from checkout's, so one client key
    // used for both never replays an order as a subscription.
    let claim = Claim {
        scope: format!("subscriptions:{}", principal.key_id),
        key,
        request_hash: json.canonical_hash.clone(),
    };
    let id = SubscriptionId::generate().to_string();
    let id = match idempotency::begin_resource(deps, &claim, id, now).await? {
        Begun::New(id) => SubscriptionId::from_trusted(id),
        Begun::Replay(response) => return Ok(stored(response, true)),
    };
    let subscriptions = deps.store.subscriptions();
    // A retry after a crash between the subscription's commit and the key's
    // completion finds the subscription the first attempt made.
    let created = match subscriptions.subscription(&id).await {
        Ok(Some(existing)) => Ok(existing),
        Ok(None) => {
            subscriptions
                .create_subscription(&NewSubscription {
                    id,
                    plan_id: subscriber.plan_id,
                    email: subscriber.email,
                    name: subscriber.name,
                    payment_method: subscriber.payment_method,
                    test_clock: subscriber.test_clock,
                    now,
                })
                .await
        }
        Err(error) => Err(error),
    };
    let (status, body) = match created {
        Ok(subscription) => (
            StatusCode::CREATED,
            serde_json::to_string(&SubscriptionOut::from(subscription)).map_err(ApiError::internal)?,
        ),
        Err(error) => {
            let error = ApiError::from(error);
            if error.status.is_server_error() {
                idempotency::release(deps, &claim).await;
                return Err(error);
            }
            (error.status, error.body())
        }
    };
    let response = StoredResponse {
        status: status.as_u16(),
        body,
    };
    idempotency::complete(deps, &claim, &response).await?;
    Ok(stored(response, false))
}

#[utoipa::path(get, path = "/api/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = SubscriptionOut), (status = 404, body = Problem)))]
pub async fn get_subscription(
    State(state): State<AppState>,
    _key: Storefront,
    Path(id): Path<String>,
) -> ApiResult<Json<SubscriptionOut>> {
    let id = parse_id(&id)?;
    Ok(Json(steps::find(&state.deps, &id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub creator_id: Option<String>,
    /// incomplete, trialing, active, past_due, unpaid, canceled or paused.
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub data: Vec<SubscriptionOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Subscriptions oldest first, filtered by creator and status.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "subscriptions", params(ListQuery),
    responses((status = 200, body = SubscriptionList), (status = 422, body = Problem)))]
pub async fn list_subscriptions(
    State(state): State<AppState>,
    _key: Storefront,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<SubscriptionList>> {
    let mut errors = ValidationErrors::default();
    let creator_id = query
        .creator_id
        .as_deref()
        .and_then(|raw| errors.collect("creator_id", CreatorId::parse(raw)));
    let status = query
        .status
        .as_deref()
        .and_then(|raw| errors.collect("status", SubscriptionStatus::parse(raw)));
    let after = query
        .cursor
        .as_deref()
        .and_then(|raw| errors.collect("cursor", SubscriptionId::parse(raw)));
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        errors.push(holdfast_domain::FieldError::new("limit", "must be between 1 and 100"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation("invalid_query", errors));
    }
    let page = state
        .deps
        .store
        .subscriptions()
        .list_subscriptions(&SubscriptionFilter {
            creator_id,
            status,
            after,
            limit,
        })
        .await?;
    let full = page.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = full.then(|| page.last().map(|s| s.id.to_string())).flatten();
    Ok(Json(SubscriptionList {
        data: page.into_iter().map(SubscriptionOut::from).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeOut {
    pub id: String,
    pub period_index: u32,
    /// 1 for the period's first attempt, then 2, 3, …
    pub attempt: u32,
    pub amount: MoneyIo,
    /// pending, succeeded, failed, or duplicate (taken for a period already
    /// paid, to be refunded).
    pub status: &'static str,
    pub payment_method: String,
    pub intent_id: Option<String>,
    pub failure_code: Option<String>,
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub attempted_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<Charge> for ChargeOut {
    fn from(charge: Charge) -> Self {
        Self {
            id: charge.id.to_string(),
            period_index: charge.period_index,
            attempt: charge.attempt,
            amount: money_out(charge.amount),
            status: charge.status.as_str(),
            payment_method: charge.payment_method,
            intent_id: charge.intent_id,
            failure_code: charge.failure_code,
            decline_code: charge.decline_code,
            failure_message: charge.failure_message,
            attempted_at: charge.attempted_at,
            completed_at: charge.completed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeList {
    pub data: Vec<ChargeOut>,
}

/// Every charge attempt, by period and attempt.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}/charges", tag = "subscriptions",
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = ChargeList), (status = 404, body = Problem)))]
pub async fn list_charges(
    State(state): State<AppState>,
    _key: Storefront,
    Path(id): Path<String>,
) -> ApiResult<Json<ChargeList>> {
    let subscription = steps::find(&state.deps, &parse_id(&id)?).await?;
    let charges = state.deps.store.subscriptions().charges(&subscription.id).await?;
    Ok(Json(ChargeList {
        data: charges.into_iter().map(ChargeOut::from).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    /// 1, 2, 3, … with no gaps.
    pub sequence: u32,
    /// The outbox event's id: the `webhook-id` of its partner deliveries.
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub from_status: Option<&'static str>,
    pub to_status: &'static str,
    pub period_index: Option<u32>,
    pub charge_id: Option<String>,
    pub cause: String,
    pub at: DateTime<Utc>,
}

impl From<SubscriptionEventRecord> for EventOut {
    fn from(record: SubscriptionEventRecord) -> Self {
        Self {
            sequence: record.sequence,
            event_id: record.event_id,
            event_type: record.event.as_str(),
            from_status: record.from_status.map(SubscriptionStatus::as_str),
            to_status: record.to_status.as_str(),
            period_index: record.period_index,
            charge_id: record.charge_id.map(|id| id.to_string()),
            cause: record.cause,
            at: record.at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<EventOut>,
}

/// The timeline: every status change and charge outcome, in sequence.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}/events", tag = "subscriptions",
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = EventList), (status = 404, body = Problem)))]
pub async fn list_events(
    State(state): State<AppState>,
    _key: Storefront,
    Path(id): Path<String>,
) -> ApiResult<Json<EventList>> {
    let subscription = steps::find(&state.deps, &parse_id(&id)?).await?;
    let events = state
        .deps
        .store
        .subscriptions()
        .subscription_events(&subscription.id)
        .await?;
    Ok(Json(EventList {
        data: events.into_iter().map(EventOut::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelIn {
    /// true: cancel when the current period ends (it is not renewed);
    /// false: now, voiding the open period and its pending retries.
    #[serde(default)]
    pub at_period_end: bool,
}

#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/cancel", tag = "subscriptions", request_body = CancelIn,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = SubscriptionOut), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "invalid_transition: canceled already")))]
pub async fn cancel(
    State(state): State<AppState>,
    _key: Storefront,
    Path(id): Path<String>,
    json: ApiJson<CancelIn>,
) -> ApiResult<Json<SubscriptionOut>> {
    let id = parse_id(&id)?;
    let how = if json.body.at_period_end {
        Cancel::AtPeriodEnd
    } else {
        Cancel::Now
    };
    Ok(Json(steps::cancel(&state.deps, &id, how, Utc::now()).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseIn {
    /// When the pause ends by itself, on the subscription's clock; never
    /// when absent.
    #[serde(default)]
    pub resumes_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/pause", tag = "subscriptions", request_body = PauseIn,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = SubscriptionOut), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "invalid_transition"), (status = 422, body = Problem)))]
pub async fn pause(
    State(state): State<AppState>,
    _key: Storefront,
    Path(id): Path<String>,
    json: ApiJson<PauseIn>,
) -> ApiResult<Json<SubscriptionOut>> {
    let id = parse_id(&id)?;
    let paused = steps::pause(&state.deps, &id, json.body.resumes_at, Utc::now()).await?;
    Ok(Json(paused.into()))
}

#[utoipa::path(post, path = "/api/v1/subscriptions/{id}/resume", tag = "subscriptions",
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = SubscriptionOut), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "invalid_transition: not paused")))]
pub async fn resume(
    State(state): State<AppState>,
    _key: Storefront,
    Path(id): Path<String>,
) -> ApiResult<Json<SubscriptionOut>> {
    let id = parse_id(&id)?;
    Ok(Json(steps::resume(&state.deps, &id, Utc::now()).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethodIn {
    pub payment_method: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethodOut {
    #[serde(flatten)]
    pub subscription: SubscriptionOut,
    /// Payment jobs brought forward: the open period is charged with the new
    /// method at once.
    pub redriven: u32,
}

#[utoipa::path(put, path = "/api/v1/subscriptions/{id}/payment-method", tag = "subscriptions",
    request_body = PaymentMethodIn,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = PaymentMethodOut), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "canceled"), (status = 422, body = Problem)))]
pub async fn change_payment_method(
    State(state): State<AppState>,
    _key: Storefront,
    Path(id): Path<String>,
    json: ApiJson<PaymentMethodIn>,
) -> ApiResult<Json<PaymentMethodOut>> {
    let id = parse_id(&id)?;
    let method = PaymentMethod::parse(&json.body.payment_method)
        .map_err(|e| ApiError::validation("invalid_request", ValidationErrors(vec![e.under("payment_method")])))?;
    let (subscription, redriven) = steps::change_payment_method(&state.deps, &id, method.as_str(), Utc::now()).await?;
    Ok(Json(PaymentMethodOut {
        subscription: subscription.into(),
        redriven,
    }))
}

fn parse_id(raw: &str) -> ApiResult<SubscriptionId> {
    SubscriptionId::parse(raw).map_err(|_| ApiError::not_found("subscription"))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_subscription, list_subscriptions))
        .routes(routes!(get_subscription))
        .routes(routes!(list_charges))
        .routes(routes!(list_events))
        .routes(routes!(cancel))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(change_payment_method))
}
