//! Creator subscriptions over HTTP: creators and plans (admin), the
//! subscriptions themselves (any key; creating one needs an
//! `Idempotency-Key`), and test clocks (admin, and only with
//! `subscriptions.test_clocks = true`). The routes' steps are
//! `pipeline::subscriptions`; this layer parses and answers.

pub mod clocks;
pub mod creators;
pub mod plans;
#[allow(
    clippy::module_inception,
    reason = "the folder holds the subscription resources: creators, plans, subscriptions, clocks"
)]
pub mod subscriptions;

use holdfast_domain::Money;
use utoipa_axum::router::OpenApiRouter;

use super::state::AppState;
use super::types::MoneyIo;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(creators::router())
        .merge(plans::router())
        .merge(subscriptions::router())
        .merge(clocks::router())
}

pub(crate) fn money_out(money: Money) -> MoneyIo {
    MoneyIo {
        amount: money.amount(),
        currency: money.currency().code().to_owned(),
    }
}

/// A `price` field in, with the path of a bad part.
pub(crate) fn parse_money(
    errors: &mut holdfast_domain::ValidationErrors,
    path: &str,
    money: &MoneyIo,
) -> Option<Money> {
    let currency = errors.collect(
        &format!("{path}.currency"),
        holdfast_domain::Currency::parse(&money.currency),
    );
    currency.and_then(|currency| errors.collect(path, Money::new(money.amount, currency)))
}

/// A display name: 1 to 200 characters once trimmed.
pub(crate) fn parse_name(errors: &mut holdfast_domain::ValidationErrors, raw: &str) -> Option<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(holdfast_domain::FieldError::new("name", "must be 1 to 200 characters"));
        return None;
    }
    Some(name.to_owned())
}
