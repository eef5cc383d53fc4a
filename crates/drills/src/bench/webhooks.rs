//! `holdfast bench webhooks`: partner webhook deliveries per second to a
//! local receiver, with order per endpoint and completeness verified, beside
//! the receiver's own accept rate under a plain HTTP client of the same
//! concurrency, measured in the same run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use holdfast_domain::Sku;
use holdfast_sandbox::{Delivery, WebhookReceiver};
use holdfast_signing::{SignedHeaders, WebhookSecret};
use holdfast_store::{PlaceOrderError, SharedStore, StoreError};
use indicatif::{ProgressBar, ProgressStyle};

use super::bench_order;
use crate::harness::{self, Database};
use crate::load::Driver;
use crate::partner::{Partner, Received};

/// This benchmark's goals, in deliveries per second: one
/// endpoint (strictly in order, so one delivery at a time) and many.
const GOAL_ONE_ENDPOINT: f64 = 1_000.0;
const GOAL_MANY_ENDPOINTS: f64 = 5_000.0;

fn goal(endpoints: u32) -> f64 {
    if endpoints == 1 {
        GOAL_ONE_ENDPOINT
    } else {
        GOAL_MANY_ENDPOINTS
    }
}
/// Tasks placing the burst of orders: enough to create it much faster than
/// it is delivered, so the figure measures delivery, not creation.
const CREATORS: u64 = 8;

#[derive(Debug, Args)]
pub struct WebhooksArgs {
    /// A PostgreSQL server URL (a scratch database is created on it); SQLite when absent.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Partner endpoints, each subscribed to every event at its own path; a
    /// list runs once per count, each on a fresh database (one endpoint
    /// measures how fast one partner is served strictly in order).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 50])]
    pub endpoints: Vec<u32>,
    /// Events in the burst (one order each); each goes to every endpoint.
    #[arg(long, default_value_t = 400)]
    pub events: u64,
    /// Deliveries one node works on at once (`queues.webhooks.concurrency`);
    /// the plain client measuring the ceiling uses as many connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u32,
    /// `workers.poll_interval_ms`; the service default when absent.
    #[arg(long)]
    pub poll_interval_ms: Option<u64>,
    /// `database.pools.worker.max_connections`; the service default when absent.
    #[arg(long)]
    pub worker_connections: Option<u32>,
    /// Longest wait for every delivery, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

/// What the receiver's records say about one run.
#[derive(Debug, Default)]
struct Verdict {
    delivered: usize,
    duplicates: usize,
    unverified: usize,
    missing: usize,
    /// Endpoints that received some event before an older one.
    out_of_order: Vec<String>,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    /// Deliveries accepted after the burst was placed: the backlog worked
    /// off with nothing else writing.
    after_burst: usize,
}

/// Fewer deliveries than this left after the burst make no figure of their own.
const BACKLOG_SAMPLE: usize = 200;

pub async fn run(args: WebhooksArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(!args.endpoints.is_empty(), "--endpoints needs at least one count");
    let mut worst = 0;
    for &endpoints in &args.endpoints {
        worst = worst.max(run_one(&args, endpoints).await?);
    }
    Ok(worst)
}

async fn run_one(args: &WebhooksArgs, endpoints: u32) -> anyhow::Result<u8> {
    anyhow::ensure!(endpoints > 0, "--endpoints must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let database = Database::from_flag(args.database_url.as_deref());
    let service = harness::start(&database, |config| {
        config.queues.webhooks.concurrency = args.concurrency;
        if let Some(poll) = args.poll_interval_ms {
            config.workers.poll_interval_ms = poll;
        }
        if let Some(connections) = args.worker_connections {
            config.database.pools.worker.max_connections = connections;
        }
    })
    .await?;
    let admin = Driver::new(&service.base_url, &service.admin_key)?;
    admin.create_product("WEBHOOK-BENCH", 1_000, 1_000_000_000).await?;
    let partner = Partner::start().await?;
    let names: Vec<String> = (0..endpoints).map(|i| format!("e{i}")).collect();
    for name in &names {
        partner.register(&admin, name, &["*"]).await?;
    }
    let expected = names.len() * usize::try_from(args.events).unwrap_or(usize::MAX);
    println!(
        "bench webhooks: {} endpoints x {} events = {expected} deliveries, delivery concurrency {}, {}",
        endpoints,
        args.events,
        args.concurrency,
        if matches!(database, Database::Postgres { .. }) {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let created = create_burst(&service.store, args.events).await?;
    let burst_end = Utc::now();
    println!(
        "  burst                  {:>9} order.pending_payment events placed in {:.2} s",
        args.events,
        created.as_secs_f64()
    );
    let complete = wait_for_deliveries(&partner.receiver, &names, expected, Duration::from_secs(args.timeout_s)).await;
    let verdict = judge(&service.store, &partner.receiver, &names, args.events, burst_end).await?;
    // One delivery in flight per endpoint, so fewer endpoints than the
    // concurrency leave slots idle.
    let slots = names.len().min(usize::try_from(args.concurrency).unwrap_or(usize::MAX));
    let rate = report_deliveries(&verdict, expected, slots, &service.base_url).await?;
    report_backlog(&verdict, burst_end, goal(endpoints));
    let ceiling = receiver_ceiling(&partner, &names, expected, args.concurrency).await?;
    println!(
        "  receiver ceiling       {:>9} requests in {:.2} s = {:>8.0} requests/s (plain client, {} connections, same run)",
        expected,
        ceiling.1.as_secs_f64(),
        ceiling.0,
        args.concurrency
    );
    println!("  ratio to ceiling       {:>9.2}", rate / ceiling.0);
    // A benchmark below its goal is a finding, not a failure of the command.
    println!(
        "  ratio to goal          {:>9.2}   goal >= {:.0} deliveries/s, order per endpoint kept -> {}",
        rate / goal(endpoints),
        goal(endpoints),
        verdict_text(&verdict, rate, goal(endpoints))
    );
    service.stop().await?;
    partner.stop().await?;
    let correct = complete && verdict.missing == 0 && verdict.unverified == 0 && verdict.out_of_order.is_empty();
    Ok(if correct { 0 } else { 1 })
}

fn verdict_text(verdict: &Verdict, rate: f64, goal: f64) -> &'static str {
    if verdict.out_of_order.is_empty() && verdict.missing == 0 {
        super::verdict(rate >= goal)
    } else {
        "order or completeness broken"
    }
}

/// Places `events` orders straight through the store from a few tasks: each
/// commits one `order.pending_payment` outbox event, which the relay fans
/// out to every endpoint while the burst is still being written.
async fn create_burst(store: &SharedStore, events: u64) -> anyhow::Result<Duration> {
    let sku = Sku::parse("WEBHOOK-BENCH").map_err(|e| anyhow::anyhow!("{e}"))?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CREATORS)
        .map(|_| {
            let (store, sku, next) = (store.clone(), sku.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= events {
                        return anyhow::Ok(());
                    }
                    place_with_retry(&store, &sku, n).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// Places one order, retrying a timed-out attempt: on SQLite the relay's
/// fan-out of a large batch holds the one write lock for a while, and a
/// timed-out transaction was rolled back, so trying again places one order.
async fn place_with_retry(store: &SharedStore, sku: &Sku, n: u64) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        match store.place_order(&bench_order(sku, n)?).await {
            Ok(_) => return Ok(()),
            Err(PlaceOrderError::Store(StoreError::Timeout(_))) if attempt < 5 => attempt += 1,
            Err(other) => return Err(other.into()),
        }
    }
}

/// Waits until the endpoints accepted `expected` deliveries in all, or
/// `timeout` passes; returns whether they did.
async fn wait_for_deliveries(receiver: &WebhookReceiver, names: &[String], expected: usize, timeout: Duration) -> bool {
    let progress = ProgressBar::new(u64::try_from(expected).unwrap_or(u64::MAX));
    progress.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} deliveries {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let deadline = Instant::now() + timeout;
    let accepted = || names.iter().map(|name| receiver.counts(name).accepted).sum::<usize>();
    let done = loop {
        let now = accepted();
        progress.set_position(u64::try_from(now).unwrap_or(u64::MAX));
        if now >= expected {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    progress.finish_and_clear();
    if !done {
        println!(
            "  gave up after {} s with {} of {expected} accepted",
            timeout.as_secs(),
            accepted()
        );
    }
    done
}

/// Checks every endpoint's deliveries: each event once, verified, in outbox
/// order (the sequence the relay fans out in, looked up per event id).
async fn judge(
    store: &SharedStore,
    receiver: &WebhookReceiver,
    names: &[String],
    events: u64,
    burst_end: DateTime<Utc>,
) -> anyhow::Result<Verdict> {
    let mut seqs: HashMap<String, i64> = HashMap::new();
    let mut verdict = Verdict::default();
    for name in names {
        let deliveries = receiver.deliveries(name);
        let received = Received::of(&deliveries);
        verdict.delivered += received.events.len();
        verdict.duplicates += received.duplicates;
        verdict.unverified += received.unverified;
        verdict.missing += usize::try_from(events)
            .unwrap_or(usize::MAX)
            .saturating_sub(received.events.len());
        let mut previous = i64::MIN;
        let mut in_order = true;
        for delivery in &received.events {
            let seq = outbox_seq(store, &mut seqs, delivery).await?;
            in_order &= seq > previous;
            previous = seq;
        }
        if !in_order {
            verdict.out_of_order.push(name.clone());
        }
        span(&mut verdict, &deliveries);
        verdict.after_burst += deliveries
            .iter()
            .filter(|d| d.is_accepted() && d.received_at > burst_end)
            .count();
    }
    Ok(verdict)
}

/// The outbox sequence of a delivered event, looked up once per id.
async fn outbox_seq(store: &SharedStore, seqs: &mut HashMap<String, i64>, delivery: &Delivery) -> anyhow::Result<i64> {
    let id = delivery.webhook_id.clone().unwrap_or_default();
    if let Some(seq) = seqs.get(&id) {
        return Ok(*seq);
    }
    let event = store
        .outbox()
        .event(&id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("delivered event {id:?} is not in the outbox"))?;
    seqs.insert(id, event.seq);
    Ok(event.seq)
}

/// Widens the measured window to the first delivery and the last accepted one.
fn span(verdict: &mut Verdict, deliveries: &[Delivery]) {
    let first = deliveries.iter().map(|d| d.received_at).min();
    let last = deliveries
        .iter()
        .filter(|d| d.is_accepted())
        .map(|d| d.received_at)
        .max();
    verdict.first = verdict.first.into_iter().chain(first).min();
    verdict.last = verdict.last.into_iter().chain(last).max();
}

/// Prints how fast the backlog left when the burst was placed went out, with
/// nothing else writing to the database, when enough was left to measure.
fn report_backlog(verdict: &Verdict, burst_end: DateTime<Utc>, goal: f64) {
    let Some(last) = verdict.last else {
        return;
    };
    if verdict.after_burst < BACKLOG_SAMPLE {
        println!(
            "  backlog after burst    {:>9} deliveries left when the burst was placed (fewer than {BACKLOG_SAMPLE}: no figure)",
            verdict.after_burst
        );
        return;
    }
    let window = (last - burst_end).to_std().unwrap_or_default();
    let rate = verdict.after_burst as f64 / window.as_secs_f64().max(1e-3);
    println!(
        "  backlog after burst    {:>9} in {:.2} s = {rate:>8.0} deliveries/s (nothing else writing)   goal >= {goal:.0} -> {}",
        verdict.after_burst,
        window.as_secs_f64(),
        super::verdict(rate >= goal)
    );
}

/// Prints the delivery figures and returns deliveries/s.
async fn report_deliveries(verdict: &Verdict, expected: usize, slots: usize, base_url: &str) -> anyhow::Result<f64> {
    let window = match (verdict.first, verdict.last) {
        (Some(first), Some(last)) => (last - first).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let rate = verdict.delivered as f64 / window.as_secs_f64().max(1e-3);
    println!(
        "  deliveries             {:>9} in {:.2} s = {rate:>8.0} deliveries/s (first delivery to last accepted)",
        verdict.delivered,
        window.as_secs_f64()
    );
    println!(
        "  per endpoint           {:>9} missing, {} duplicates, {} unverified, order broken on {} endpoints{}",
        verdict.missing,
        verdict.duplicates,
        verdict.unverified,
        verdict.out_of_order.len(),
        if verdict.delivered == expected {
            ""
        } else {
            " (INCOMPLETE)"
        }
    );
    if let Some(http) = mean_send_seconds(base_url).await? {
        // Each of `slots` concurrent deliveries spends `slot` per delivery;
        // the HTTP send is part of it, the rest is the queue, the delivery log
        // and waiting for the batch's slowest job.
        let slot = slots as f64 * window.as_secs_f64() / verdict.delivered.max(1) as f64;
        println!(
            "  time per delivery      {:>9.2} ms per slot, of which {:.2} ms HTTP send (mean)",
            slot * 1e3,
            http * 1e3
        );
    }
    for name in verdict.out_of_order.iter().take(5) {
        println!("  ! endpoint {name} received an event before an older one");
    }
    Ok(rate)
}

/// The mean HTTP time of one delivery, from the service's own histogram.
async fn mean_send_seconds(base_url: &str) -> anyhow::Result<Option<f64>> {
    let text = reqwest::get(format!("{base_url}/metrics")).await?.text().await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Ok(
        match (
            value("holdfast_webhook_delivery_duration_seconds_sum"),
            value("holdfast_webhook_delivery_duration_seconds_count"),
        ) {
            (Some(sum), Some(count)) if count > 0.0 => Some(sum / count),
            _ => None,
        },
    )
}

/// The receiver's accept rate when a plain client sends it `total` signed
/// requests over `concurrency` connections, to names of its own (`c…`) with
/// the endpoints' secrets, so it does the same verification work.
async fn receiver_ceiling(
    partner: &Partner,
    names: &[String],
    total: usize,
    concurrency: u32,
) -> anyhow::Result<(f64, Duration)> {
    let body = partner
        .receiver
        .deliveries(&names[0])
        .first()
        .map(|delivery| delivery.body_text())
        .unwrap_or_else(|| r#"{"type":"order.pending_payment","data":{}}"#.to_owned());
    let secrets: Arc<Vec<(String, WebhookSecret)>> = Arc::new(
        (0..names.len())
            .map(|i| {
                let secret = WebhookSecret::generate();
                partner.receiver.set_secret(&format!("c{i}"), secret.clone());
                (format!("{}/hooks/c{i}", partner.base_url), secret)
            })
            .collect(),
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::try_from(concurrency).unwrap_or(32))
        .timeout(Duration::from_secs(30))
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let total = u64::try_from(total).unwrap_or(u64::MAX);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, secrets, next, body) = (http.clone(), secrets.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return anyhow::Ok(());
                    }
                    let (url, secret) = &secrets[usize::try_from(n).unwrap_or(0) % secrets.len()];
                    let id = format!("msg_{n}");
                    let signed = SignedHeaders::sign(secret, &id, Utc::now().timestamp(), &body);
                    let mut request = http.post(url).header("content-type", "application/json");
                    for (header, value) in signed.pairs() {
                        request = request.header(header, value);
                    }
                    let response = request.body(body.clone()).send().await?;
                    anyhow::ensure!(
                        response.status().is_success(),
                        "receiver answered {}",
                        response.status()
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    Ok((total as f64 / elapsed.as_secs_f64(), elapsed))
}
