//! The demo's subscriptions act: a year of creator subscriptions in seconds
//! of wall time. A few creators with monthly and yearly plans, a few hundred
//! subscribers made concurrently over HTTP (some replayed with their
//! idempotency key), all on one test clock anchored at a month's end. The
//! clock is advanced a month at a time and each step waits until the real
//! scheduler, payment worker and dunning have settled what it made due.
//! Some subscribers' cards start declining in the spring: their renewals go
//! through dunning's retries to `past_due`, then `unpaid` or `canceled`.
//! Finance's audit then recomputes every period that should exist and checks
//! that none was under-charged or charged twice; a finding fails the demo
//! like a broken invariant.
//!
//! The declining subscribers are each the only subscriber of a small
//! creator. Renewals run in one FIFO group per creator, so a retry waiting
//! out its dunning delay holds its creator's later renewals behind it (the
//! price of grouping by creator, in docs/architecture-details.md); on a
//! shared creator the clock would stay `advancing` until the next advance
//! brought the retry forward.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Months, Utc};
use futures::StreamExt;
use holdfast_domain::SubscriptionStatus;
use holdfast_service::Config;
use holdfast_service::pipeline::subscriptions::audit::{self, AuditReport};
use holdfast_store::{ChargeStatus, SharedStore, SubscriptionFilter};
use serde_json::{Value, json};

use crate::coldpath as drain;
use crate::load::{Answer, Driver};

/// The clock's start: the last day of a month, so later months clamp.
const ANCHOR: &str = "2026-01-31T00:00:00Z";
/// Months the clock is advanced through.
const MONTHS: u32 = 12;
/// Subscriptions created at once.
const CONCURRENCY: usize = 16;
/// Longest wait for the clock to be `ready` after one advance.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// One subscriber in this many has a card that starts declining.
const FAILING_EVERY: u64 = 7;
/// The month after whose renewals those cards start declining.
const FAILING_FROM: u32 = 4;
/// The declining card: it can be saved, and every off-session charge fails.
const FAILING_CARD: &str = "pm_card_chargeCustomerFail";
/// One subscriber in this many is created twice with the same key.
const REPLAY_EVERY: u64 = 10;
/// Attempts per request when the service sheds load.
const SHED_ATTEMPTS: u32 = 4;

/// A creator and its plan: (creator, plan, price in cents, interval, what
/// dunning ends in).
type PlanSpec<'a> = (&'a str, &'a str, i64, &'a str, &'a str);

/// The creators most subscribers subscribe to.
const PLANS: [PlanSpec<'static>; 6] = [
    ("Ada's Workshop", "Supporter", 500, "month", "unpaid"),
    ("Lin's Lab", "Lab notes", 1200, "month", "canceled"),
    ("Grace's Garden", "Seed club", 300, "month", "unpaid"),
    ("Mo's Music", "Backstage", 800, "month", "canceled"),
    ("Noor's Notebook", "Reader", 600, "month", "unpaid"),
    ("Kay's Kiln", "Annual patron", 9000, "year", "canceled"),
];

/// What the act needs of the service's configuration: test clocks, and a
/// scheduler that looks for due periods soon after each advance.
pub fn configure(config: &mut Config) {
    config.subscriptions.test_clocks = true;
    config.subscriptions.scheduler_interval_ms = 100;
}

/// The clock did not settle within [`STEP_TIMEOUT`].
pub struct Timeout {
    /// The clock time it was advanced to.
    pub to: DateTime<Utc>,
    /// The clock's last answer.
    pub clock: String,
    pub pending: drain::Pending,
}

/// Everything the act's report shows.
pub struct Outcome {
    pub subscribers: u64,
    pub created: u64,
    /// Creation answers other than 201, and replays that differed.
    pub unexpected: Vec<String>,
    pub replays: u64,
    pub charges: BTreeMap<&'static str, u64>,
    pub by_status: BTreeMap<&'static str, u64>,
    /// Wall time of the year: from the first advance to the last `ready`.
    pub year: Duration,
    /// Wall time of the whole act, setup and audit included.
    pub act: Duration,
    /// Months the clock got through.
    pub months: u32,
    pub timeout: Option<Timeout>,
    /// The audit, when the year settled.
    pub audit: Option<AuditReport>,
}

/// Runs the act: `admin` and `shop` talk to the service, `store` is its
/// database.
pub async fn run(admin: &Driver, shop: &Driver, store: &SharedStore, subscribers: u64) -> anyhow::Result<Outcome> {
    let act = Instant::now();
    let mut plans = Vec::new();
    for plan in PLANS {
        plans.push(creator_with_plan(admin, plan).await?);
    }
    let anchor = DateTime::parse_from_rfc3339(ANCHOR)?.with_timezone(&Utc);
    let clock = created(
        admin
            .post("/api/v1/test-clocks", &json!({"frozen_time": anchor}), None)
            .await?,
        "test clock",
    )?;
    let failing = subscribers.div_ceil(FAILING_EVERY);
    println!(
        "\nSubscriptions on test clock {clock} from {ANCHOR}: {} subscribers of {} creators, and {failing} \
         small creators' only subscribers, whose cards start declining after month {FAILING_FROM}.",
        subscribers - failing,
        PLANS.len(),
    );
    let mut outcome = Outcome {
        subscribers,
        created: 0,
        unexpected: Vec::new(),
        replays: 0,
        charges: BTreeMap::new(),
        by_status: BTreeMap::new(),
        year: Duration::ZERO,
        act: Duration::ZERO,
        months: 0,
        timeout: None,
        audit: None,
    };
    let answers: Vec<anyhow::Result<Subscribed>> = futures::stream::iter(0..subscribers)
        .map(|n| subscribe(admin, shop, &plans, &clock, n))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut declining = Vec::new();
    for answer in answers {
        match answer {
            Ok(subscribed) => {
                outcome.replays += u64::from(subscribed.replayed);
                match subscribed.problem {
                    None => outcome.created += 1,
                    Some(problem) => outcome.unexpected.push(problem),
                }
                declining.extend(subscribed.declining);
            }
            Err(error) => outcome.unexpected.push(format!("{error:#}")),
        }
    }
    // The first periods are due at once: settle them before the year starts.
    let started = Instant::now();
    outcome.timeout = settle(admin, store, &clock, anchor).await?;
    for month in 1..=MONTHS {
        if outcome.timeout.is_some() {
            break;
        }
        if month == FAILING_FROM + 1 {
            for id in &declining {
                let path = format!("/api/v1/subscriptions/{id}/payment-method");
                let changed = shop.put(&path, &json!({"payment_method": FAILING_CARD})).await?;
                if changed.status != 200 {
                    outcome
                        .unexpected
                        .push(format!("{id}: new card: HTTP {} {}", changed.status, changed.raw));
                }
            }
        }
        let to = anchor
            .checked_add_months(Months::new(month))
            .ok_or_else(|| anyhow::anyhow!("{ANCHOR} + {month} months"))?;
        let moved = admin
            .post(
                &format!("/api/v1/test-clocks/{clock}/advance"),
                &json!({"frozen_time": to}),
                None,
            )
            .await?;
        anyhow::ensure!(
            moved.status == 200,
            "advancing the clock to {to}: HTTP {} {}",
            moved.status,
            moved.raw
        );
        outcome.timeout = settle(admin, store, &clock, to).await?;
        if outcome.timeout.is_none() {
            outcome.months = month;
        }
    }
    outcome.year = started.elapsed();
    tally(store, &mut outcome).await?;
    if outcome.timeout.is_none() {
        outcome.audit = Some(audit::run(store, None, Utc::now()).await?);
    }
    outcome.act = act.elapsed();
    Ok(outcome)
}

/// The id of what a 201 answer created.
fn created(answer: Answer, what: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        answer.status == 201,
        "creating a {what}: HTTP {} {}",
        answer.status,
        answer.raw
    );
    answer.body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no id in {}", answer.raw))
}

/// Makes a creator and its plan; returns the plan's id.
async fn creator_with_plan(admin: &Driver, spec: PlanSpec<'_>) -> anyhow::Result<String> {
    let (creator, plan, amount, interval, exhausted) = spec;
    let made = created(
        admin
            .post("/api/v1/creators", &json!({"name": creator, "fee_bps": 800}), None)
            .await?,
        "creator",
    )?;
    let body = json!({"creator_id": made, "name": plan, "price": {"amount": amount, "currency": "USD"},
                      "interval": interval, "interval_count": 1, "on_dunning_exhausted": exhausted});
    created(admin.post("/api/v1/plans", &body, None).await?, "plan")
}

/// What became of one subscriber.
struct Subscribed {
    replayed: bool,
    /// What went wrong, if anything.
    problem: Option<String>,
    /// Its subscription, when its card is to start declining.
    declining: Option<String>,
}

/// Subscriber `n`; one whose card is to decline gets a creator of its own.
async fn subscribe(admin: &Driver, shop: &Driver, plans: &[String], clock: &str, n: u64) -> anyhow::Result<Subscribed> {
    let failing = n.is_multiple_of(FAILING_EVERY);
    let plan = if failing {
        let name = format!("Studio {n}");
        let exhausted = if n.is_multiple_of(2) { "unpaid" } else { "canceled" };
        creator_with_plan(admin, (&name, "Monthly", 400, "month", exhausted)).await?
    } else {
        plans[(n % plans.len() as u64) as usize].clone()
    };
    let body = json!({"plan_id": plan, "customer": {"email": format!("subscriber{n}@example.com"),
                      "name": format!("Subscriber {n}")}, "payment_method": "pm_card_visa", "test_clock": clock});
    let key = format!("demo-sub-{n}-{}", uuid::Uuid::now_v7().simple());
    let first = post(shop, &body, &key).await?;
    let mut subscribed = Subscribed {
        replayed: false,
        problem: None,
        declining: None,
    };
    if first.status != 201 {
        subscribed.problem = Some(format!("subscriber {n}: HTTP {} {}", first.status, first.raw));
        return Ok(subscribed);
    }
    if failing {
        subscribed.declining = first.body["id"].as_str().map(str::to_owned);
    }
    if n % REPLAY_EVERY == 5 {
        // A client that timed out and retried must get the same subscription.
        let again = post(shop, &body, &key).await?;
        subscribed.replayed = true;
        if again.status != first.status || again.body["id"] != first.body["id"] {
            subscribed.problem = Some(format!(
                "subscriber {n} replayed: {} then HTTP {} {}",
                first.raw, again.status, again.raw
            ));
        }
    }
    Ok(subscribed)
}

/// Posts a subscription, waiting as asked and retrying with the same key
/// when the service sheds load.
async fn post(shop: &Driver, body: &Value, key: &str) -> anyhow::Result<Answer> {
    let mut attempt = 1;
    loop {
        let answer = shop.post("/api/v1/subscriptions", body, Some(key)).await?;
        match answer.retry_after {
            Some(after) if answer.status == 503 && attempt < SHED_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(after).await;
            }
            _ => return Ok(answer),
        }
    }
}

/// Waits until the clock says `ready`; a timeout is returned with what is
/// still pending.
async fn settle(
    admin: &Driver,
    store: &SharedStore,
    clock: &str,
    to: DateTime<Utc>,
) -> anyhow::Result<Option<Timeout>> {
    let started = Instant::now();
    loop {
        let state = admin.get(&format!("/api/v1/test-clocks/{clock}")).await?;
        anyhow::ensure!(
            state.status == 200,
            "reading the test clock: HTTP {} {}",
            state.status,
            state.raw
        );
        if state.body["status"] == "ready" {
            return Ok(None);
        }
        if started.elapsed() >= STEP_TIMEOUT {
            return Ok(Some(Timeout {
                to,
                clock: state.raw,
                pending: drain::pending(store).await?,
            }));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Counts the subscriptions by status and their charges by outcome.
async fn tally(store: &SharedStore, outcome: &mut Outcome) -> anyhow::Result<()> {
    const PAGE: i64 = 500;
    let subscriptions = store.subscriptions();
    let mut after = None;
    loop {
        let page = subscriptions
            .list_subscriptions(&SubscriptionFilter {
                creator_id: None,
                status: None,
                after: after.clone(),
                limit: PAGE,
            })
            .await?;
        for subscription in &page {
            *outcome.by_status.entry(subscription.status.as_str()).or_default() += 1;
            for charge in subscriptions.charges(&subscription.id).await? {
                let word = match charge.status {
                    ChargeStatus::Pending => "pending",
                    ChargeStatus::Succeeded => "succeeded",
                    ChargeStatus::Failed => "failed",
                    ChargeStatus::Duplicate => "duplicate",
                };
                *outcome.charges.entry(word).or_default() += 1;
            }
        }
        if page.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            return Ok(());
        }
        after = page.last().map(|subscription| subscription.id.clone());
    }
}

/// Prints the act's section of the summary; true if something broke.
pub fn report(outcome: &Outcome) -> bool {
    println!("\nSubscriptions on the test clock");
    println!(
        "  subscribers               {:>8} of {}",
        outcome.created, outcome.subscribers
    );
    println!("  replays with the same key {:>8}", outcome.replays);
    let charges = |word| outcome.charges.get(word).copied().unwrap_or(0);
    println!("  charges succeeded         {:>8}", charges("succeeded"));
    println!(
        "  charges failed            {:>8} (declined renewals and their retries)",
        charges("failed")
    );
    for word in ["pending", "duplicate"] {
        if charges(word) > 0 {
            println!("  charges {word:<17} {:>8}", charges(word));
        }
    }
    println!("  by status");
    for status in SubscriptionStatus::ALL {
        let n = outcome.by_status.get(status.as_str()).copied().unwrap_or(0);
        if n > 0
            || matches!(
                status,
                SubscriptionStatus::Active
                    | SubscriptionStatus::PastDue
                    | SubscriptionStatus::Unpaid
                    | SubscriptionStatus::Canceled
            )
        {
            println!("    {:<22} {:>8}", status.as_str(), n);
        }
    }
    println!(
        "  the year's wall time      {:>8.2} s ({} of {MONTHS} months advanced and settled)",
        outcome.year.as_secs_f64(),
        outcome.months
    );
    println!(
        "  the act's wall time       {:>8.2} s (subscribing, the year, the audit)",
        outcome.act.as_secs_f64()
    );
    let mut broken = false;
    if let Some(timeout) = &outcome.timeout {
        println!(
            "\nThe clock did not settle within {:.0} s after advancing to {}: still advancing when it gave up",
            STEP_TIMEOUT.as_secs_f64(),
            timeout.to
        );
        println!("  clock: {}", timeout.clock);
        timeout.pending.print();
        println!("  audit                     not run: the year did not settle");
        broken = true;
    }
    if let Some(audit) = &outcome.audit {
        println!("  periods                   {:>8}", audit.periods);
        println!(
            "  audit                     {:>8} findings ({} under-charges, {} double charges) over {} subscriptions, {} succeeded charges  {}",
            audit.findings.len(),
            audit.under_charges(),
            audit.double_charges(),
            audit.subscriptions,
            audit.succeeded_charges,
            if audit.findings.is_empty() { "ok" } else { "BROKEN" }
        );
        for finding in audit.findings.iter().take(10) {
            println!(
                "  ! {:?} {} period {}: {}",
                finding.kind, finding.subscription_id, finding.period_index, finding.detail
            );
        }
        broken |= !audit.findings.is_empty();
    }
    if !outcome.unexpected.is_empty() {
        println!("  unexpected answers        {:>8}  BROKEN", outcome.unexpected.len());
        for line in outcome.unexpected.iter().take(10) {
            println!("  ! {line}");
        }
        broken = true;
    }
    broken
}
