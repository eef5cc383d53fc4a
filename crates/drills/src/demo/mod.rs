//! `holdfast demo`: the service on a fresh embedded database with the
//! sandbox payment provider, a catalogue, a partner receiving every event as
//! a signed webhook, and concurrent shoppers — some racing for the last
//! units, some retrying, some sending bad requests. It waits for the cold
//! path (fulfillment, webhook delivery) to drain, checks the invariants and
//! exits non-zero if one breaks. Then a year of subscriptions on a test
//! clock (see [`subscriptions`]), checked by Finance's audit.

mod subscriptions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use holdfast_domain::{OrderStatus, Sku};
use holdfast_store::Order;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use tokio::sync::Mutex;

use crate::coldpath::{self as drain, Drained, StockLevel, WebhookFindings};
use crate::harness::{self, Database};
use crate::load::{Answer, Driver, Latencies, order_body};
use crate::partner::{self, Partner};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many checkouts to attempt.
    #[arg(long, default_value_t = 3000)]
    pub orders: u64,
    /// Concurrent simulated shoppers.
    #[arg(long, default_value_t = 32)]
    pub shoppers: u64,
    /// Run on this PostgreSQL server (a scratch database is created) instead of SQLite.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Seconds to wait after the load for paid orders to ship and the partner
    /// to receive every event.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout_s: u64,
    /// Make the partner answer every delivery with 503, to see how the demo
    /// reports a cold path that cannot drain (it exits 1, naming what is
    /// still pending).
    #[arg(long)]
    pub partner_down: bool,
    /// Subscribers in the subscriptions act, a year of renewals on a test
    /// clock (0 skips it).
    #[arg(long, default_value_t = 300)]
    pub subscribers: u64,
}

const REGULAR: usize = 12;
const REGULAR_STOCK: i64 = 1_000_000;
/// Two SKUs with only a few units, so shoppers race for the last ones.
const SCARCE: [&str; 2] = ["LAST-UNITS-A", "LAST-UNITS-B"];
const SCARCE_STOCK: i64 = 40;
/// The partner's receiver path: `/hooks/partner`.
const PARTNER_HOOK: &str = "partner";

/// What kind of shopper one checkout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Regular,
    Declined,
    LastUnits,
    Retry,
    BadRequest,
}

impl Kind {
    fn of(n: u64) -> Self {
        match n % 100 {
            0..=2 => Kind::BadRequest,
            3..=7 => Kind::Retry,
            8..=17 => Kind::LastUnits,
            18..=25 => Kind::Declined,
            _ => Kind::Regular,
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies: Latencies,
    by_status: BTreeMap<(Kind, u16), u64>,
    server_errors: Vec<String>,
    /// Checkouts shed with 503 + `Retry-After` and then retried.
    shed: u64,
    broken_replays: Vec<String>,
    unexpected: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.merge(&other.latencies);
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        self.server_errors.extend(other.server_errors);
        self.shed += other.shed;
        self.broken_replays.extend(other.broken_replays);
        self.unexpected.extend(other.unexpected);
    }
}

/// Everything the final report shows.
struct Outcome {
    tally: Tally,
    counts: Vec<(OrderStatus, i64)>,
    oversells: u64,
    settled: bool,
    elapsed: Duration,
    drained: Drained,
    /// What was still in the queues when the drain gave up.
    pending: Option<drain::Pending>,
    webhooks: WebhookFindings,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let database = Database::from_flag(args.database_url.as_deref());
    println!(
        "Starting Holdfast on a fresh {} database with the sandbox payment provider…",
        match database {
            Database::Sqlite => "SQLite",
            Database::Postgres { .. } => "PostgreSQL",
        }
    );
    let service = harness::start(&database, |config| {
        if args.subscribers > 0 {
            subscriptions::configure(config);
        }
    })
    .await?;
    let admin = Driver::new(&service.base_url, &service.admin_key)?;
    for i in 0..REGULAR {
        admin
            .create_product(&regular_sku(i), 500 + 250 * i as i64, REGULAR_STOCK)
            .await?;
    }
    for sku in SCARCE {
        admin.create_product(sku, 9_900, SCARCE_STOCK).await?;
    }
    let partner = Partner::start().await?;
    partner.register(&admin, PARTNER_HOOK, &["*"]).await?;
    if args.partner_down {
        partner
            .receiver
            .set_default(PARTNER_HOOK, holdfast_sandbox::Respond::status(503));
    }
    let shop = admin.with_key(&admin.storefront_key().await?);
    println!(
        "Catalogue: {REGULAR} SKUs with {REGULAR_STOCK} units, {} SKUs with {SCARCE_STOCK} units.",
        SCARCE.len()
    );
    println!(
        "Partner webhooks: every event, signed, to {}/hooks/{PARTNER_HOOK}, which verifies each signature.",
        partner.base_url
    );
    println!("{} checkouts from {} shoppers:", args.orders, args.shoppers);
    let (tally, elapsed) = drive_shoppers(&shop, &args).await?;
    let drain_started = Instant::now();
    let deadline = drain_started + Duration::from_secs(args.drain_timeout_s);
    let drained = drain::wait(&service.store, &partner.receiver, PARTNER_HOOK, drain_started, deadline).await?;
    let pending = if drained.in_time {
        None
    } else {
        Some(drain::pending(&service.store).await?)
    };
    let subscribed = if args.subscribers > 0 {
        Some(subscriptions::run(&admin, &shop, &service.store, args.subscribers).await?)
    } else {
        None
    };
    // Every invariant is computed from one snapshot, taken once the service
    // has stopped: nothing moves stock, orders or deliveries while it is read.
    let mut service = service;
    service.halt().await?;
    let store = service.store.clone();
    let mut snapshot = drain::snapshot(&store, &partner.receiver, PARTNER_HOOK).await?;
    // The partner also hears of subscriptions and settlements; the checks
    // here are about orders, and the audit is the subscriptions' check.
    snapshot
        .deliveries
        .retain(|delivery| partner::event_type(delivery).is_none_or(|kind| kind.starts_with("order.")));
    let webhooks = drain::check(&snapshot);
    let oversells = check_stock(&store, &snapshot.orders).await?;
    let counts = store.order_counts().await?;
    let settled = !counts
        .iter()
        .any(|(status, n)| *status == OrderStatus::PendingPayment && *n > 0);
    drop(store);
    service.stop().await?;
    let mut broken = report(&Outcome {
        tally,
        counts,
        oversells,
        settled,
        elapsed,
        drained,
        pending,
        webhooks,
    });
    if let Some(subscribed) = &subscribed {
        broken |= subscriptions::report(subscribed);
    }
    if broken {
        println!("\nAn invariant broke: see above.");
    } else {
        println!("\nAll invariants held.");
    }
    partner.stop().await?;
    Ok(if broken { 1 } else { 0 })
}

/// Runs every checkout from `args.shoppers` concurrent shoppers; returns
/// what they saw and how long the load took.
async fn drive_shoppers(shop: &Driver, args: &DemoArgs) -> anyhow::Result<(Tally, Duration)> {
    let progress = ProgressBar::new(args.orders);
    progress.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} checkouts {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut shoppers = Vec::new();
    for _ in 0..args.shoppers {
        let (shop, next, tally, progress, total) =
            (shop.clone(), next.clone(), tally.clone(), progress.clone(), args.orders);
        shoppers.push(tokio::spawn(async move {
            let mut local = Tally::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                if let Err(error) = shop_once(&shop, n, &mut local).await {
                    local.unexpected.push(format!("checkout {n}: {error:#}"));
                }
                progress.inc(1);
            }
            tally.lock().await.merge(local);
        }));
    }
    for shopper in shoppers {
        shopper.await?;
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("shoppers still running"))?
        .into_inner();
    Ok((tally, elapsed))
}

fn regular_sku(i: usize) -> String {
    format!("SKU-{:03}", i + 1)
}

/// One simulated shopper's checkout.
async fn shop_once(shop: &Driver, n: u64, tally: &mut Tally) -> anyhow::Result<()> {
    let kind = Kind::of(n);
    let email = format!("shopper{}@example.com", n % 500);
    let key = format!("demo-{n}-{}", uuid::Uuid::now_v7().simple());
    let answer = match kind {
        Kind::BadRequest => bad_request(shop, n, &key).await?,
        Kind::LastUnits => {
            let qty = rand::thread_rng().gen_range(1..=3);
            let body = order_body(&[(SCARCE[(n % 2) as usize].to_owned(), qty)], &email, "pm_card_visa");
            checkout(shop, &body, &key, tally).await?
        }
        Kind::Declined => checkout(shop, &order_body(&cart(), &email, "pm_card_declined"), &key, tally).await?,
        Kind::Regular | Kind::Retry => {
            let body = order_body(&cart(), &email, "pm_card_visa");
            let first = checkout(shop, &body, &key, tally).await?;
            if kind == Kind::Retry {
                // A client that timed out and retried with the same key must
                // get the identical answer, not a second order.
                let again = checkout(shop, &body, &key, tally).await?;
                if again.status != first.status || again.body != first.body {
                    tally.broken_replays.push(format!(
                        "{key}: {} {} then {} {}",
                        first.status, first.raw, again.status, again.raw
                    ));
                }
            }
            first
        }
    };
    tally.latencies.record(answer.elapsed);
    *tally.by_status.entry((kind, answer.status)).or_default() += 1;
    if answer.status >= 500 {
        tally
            .server_errors
            .push(format!("{kind:?}: {} {}", answer.status, answer.raw));
    }
    let expected = match kind {
        Kind::BadRequest => (400..500).contains(&answer.status),
        Kind::LastUnits => answer.status == 201 || (answer.status == 409 && answer.body["code"] == "out_of_stock"),
        _ => answer.status == 201,
    };
    if !expected {
        tally
            .unexpected
            .push(format!("{kind:?}: {} {}", answer.status, answer.raw));
    }
    Ok(())
}

/// Attempts per checkout when the service sheds load.
const SHED_ATTEMPTS: u32 = 4;

/// Posts a checkout as the client SDK does: a 503 with `Retry-After` is load
/// shedding (the service failed fast instead of queueing past its deadline),
/// so wait as asked and retry with the same idempotency key, a few times.
async fn checkout(shop: &Driver, body: &serde_json::Value, key: &str, tally: &mut Tally) -> anyhow::Result<Answer> {
    let mut attempt = 1;
    loop {
        let answer = shop.post("/api/v1/orders", body, Some(key)).await?;
        match answer.retry_after {
            Some(after) if answer.status == 503 && attempt < SHED_ATTEMPTS => {
                tally.shed += 1;
                attempt += 1;
                tokio::time::sleep(after).await;
            }
            _ => return Ok(answer),
        }
    }
}

fn cart() -> Vec<(String, u32)> {
    let mut rng = rand::thread_rng();
    let lines = rng.gen_range(1..=3);
    (0..lines)
        .map(|_| (regular_sku(rng.gen_range(0..REGULAR)), rng.gen_range(1..=4)))
        .collect()
}

async fn bad_request(shop: &Driver, n: u64, key: &str) -> anyhow::Result<Answer> {
    let email = "bad@example.com";
    match (n / 100) % 4 {
        0 => shop.post_raw("/api/v1/orders", "{\"items\": [", Some(key)).await,
        1 => {
            shop.post(
                "/api/v1/orders",
                &order_body(&[(regular_sku(0), 0)], email, "pm_card_visa"),
                Some(key),
            )
            .await
        }
        2 => {
            shop.post(
                "/api/v1/orders",
                &order_body(&[("NO-SUCH-SKU".into(), 1)], email, "pm_card_visa"),
                Some(key),
            )
            .await
        }
        _ => {
            shop.post("/api/v1/orders", &order_body(&cart(), email, "pm_card_visa"), None)
                .await
        }
    }
}

/// SKUs whose stock does not add up (see [`drain::stock_mismatches`]),
/// each printed.
async fn check_stock(store: &holdfast_store::SharedStore, orders: &[(Order, Vec<OrderStatus>)]) -> anyhow::Result<u64> {
    let skus: Vec<(String, i64)> = (0..REGULAR)
        .map(|i| (regular_sku(i), REGULAR_STOCK))
        .chain(SCARCE.iter().map(|s| (s.to_string(), SCARCE_STOCK)))
        .collect();
    let mut levels = Vec::new();
    for (sku, initial) in skus {
        let level = store
            .get_inventory(&Sku::parse(&sku).map_err(|e| anyhow::anyhow!("{e}"))?)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{sku} vanished"))?;
        levels.push(StockLevel {
            sku,
            initial,
            on_hand: level.on_hand,
            reserved: level.reserved,
            available: level.available,
        });
    }
    let mismatches = drain::stock_mismatches(orders, &levels);
    for line in &mismatches {
        println!("STOCK MISMATCH {line}");
    }
    Ok(mismatches.len() as u64)
}

fn report(outcome: &Outcome) -> bool {
    let tally = &outcome.tally;
    println!("\nOrders by status");
    println!("  {:<18} {:>8}", "status", "orders");
    for (status, n) in &outcome.counts {
        println!("  {:<18} {:>8}", status.as_str(), n);
    }
    println!("\nResponses by shopper kind");
    println!("  {:<12} {:>6} {:>8}", "kind", "HTTP", "count");
    for ((kind, status), n) in &tally.by_status {
        println!("  {:<12} {:>6} {:>8}", format!("{kind:?}"), status, n);
    }
    let requests = tally.latencies.count();
    println!("\nLatency and throughput");
    println!("  requests           {requests:>10}");
    println!("  p50                {:>10.2} ms", tally.latencies.quantile_ms(0.50));
    println!("  p99                {:>10.2} ms", tally.latencies.quantile_ms(0.99));
    println!("  max                {:>10.2} ms", tally.latencies.max_ms());
    println!(
        "  throughput         {:>10.0} checkouts/s",
        requests as f64 / outcome.elapsed.as_secs_f64()
    );
    let hooks = &outcome.webhooks;
    println!("\nPartner webhooks");
    println!("  deliveries received       {:>8}", hooks.received);
    println!("  deliveries verified       {:>8}", hooks.verified);
    println!(
        "  events accepted           {:>8} of {} in the timelines",
        hooks.events, hooks.expected
    );
    println!(
        "  time to drain             {:>8.2} s (paid orders shipped, every event at the partner)",
        outcome.drained.elapsed.as_secs_f64()
    );
    if let Some(pending) = &outcome.pending {
        println!(
            "\nNot drained within the drain timeout ({:.1} s): still pending when it gave up",
            outcome.drained.elapsed.as_secs_f64()
        );
        pending.print();
    }
    println!("\nInvariants");
    let mut broken = false;
    for (name, verdict, value) in invariants(outcome) {
        let word = match verdict {
            Verdict::Held => "ok",
            Verdict::Broken => "BROKEN",
            Verdict::NotChecked => "not checked: the cold path did not drain",
        };
        println!("  {:<40} {:>6}  {word}", name, value);
        broken |= verdict != Verdict::Held && verdict != Verdict::NotChecked;
    }
    // Both are legal, so they are reported, not failed: at-least-once
    // delivery allows a repeat (without failures there should be none), and
    // shedding with 503 + Retry-After is how checkout degrades under load.
    let notes = [
        ("duplicate webhook deliveries (allowed)", hooks.duplicates as u64),
        ("checkouts shed with 503 (retried)", tally.shed),
    ];
    for (name, value) in notes {
        println!(
            "  {:<40} {:>6}  {}",
            name,
            value,
            if value == 0 { "ok" } else { "note" }
        );
    }
    for line in tally
        .server_errors
        .iter()
        .chain(&tally.broken_replays)
        .chain(&tally.unexpected)
        .chain(&hooks.samples)
        .take(10)
    {
        println!("  ! {line}");
    }
    broken
}

/// What one invariant check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Held,
    Broken,
    /// Its answer depends on the cold path having finished, and it had not:
    /// the drain's own line reports that failure.
    NotChecked,
}

fn verdict(ok: bool) -> Verdict {
    if ok { Verdict::Held } else { Verdict::Broken }
}

fn invariants(outcome: &Outcome) -> Vec<(&'static str, Verdict, String)> {
    let (tally, hooks) = (&outcome.tally, &outcome.webhooks);
    let drained = outcome.drained.in_time;
    let zero = |n: usize| (verdict(n == 0), n.to_string());
    // Counts that are only zero once everything has been delivered.
    let when_drained = |n: usize| {
        if drained {
            zero(n)
        } else {
            (Verdict::NotChecked, n.to_string())
        }
    };
    let mut checks = vec![
        (
            "oversells",
            verdict(outcome.oversells == 0),
            outcome.oversells.to_string(),
        ),
        (
            "5xx final answers",
            verdict(tally.server_errors.is_empty()),
            tally.server_errors.len().to_string(),
        ),
        (
            "idempotent replays that differed",
            verdict(tally.broken_replays.is_empty()),
            tally.broken_replays.len().to_string(),
        ),
        (
            "unexpected answers",
            verdict(tally.unexpected.is_empty()),
            tally.unexpected.len().to_string(),
        ),
        (
            "payments settled by webhook",
            verdict(outcome.settled),
            outcome.settled.to_string(),
        ),
    ];
    let webhook_checks = [
        ("paid orders not shipped with tracking", when_drained(hooks.unshipped)),
        ("webhook signatures not verified", zero(hooks.received - hooks.verified)),
        ("events missing at the partner", when_drained(hooks.missing)),
        ("orders with events out of timeline order", zero(hooks.out_of_order)),
        ("events matching no timeline entry", zero(hooks.unexpected)),
    ];
    checks.extend(webhook_checks.into_iter().map(|(name, (ok, value))| (name, ok, value)));
    checks.push(("cold path drained in time", verdict(drained), drained.to_string()));
    checks
}
