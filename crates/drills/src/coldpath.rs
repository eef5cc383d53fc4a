//! After a load (the demo's, a drill's): waits until every paid order has
//! shipped and the partner has received every event, then compares what the
//! partner got with each order's timeline, and each SKU's stock with what the
//! orders hold.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use holdfast_domain::{OrderId, OrderStatus};
use holdfast_sandbox::{Delivery, WebhookReceiver};
use holdfast_store::{Order, OrderFilter, QueueStats, SharedStore};
use indicatif::{ProgressBar, ProgressStyle};

use crate::partner::{self, Received};

/// How often the wait looks again, and how often it prints a line when no
/// progress bar can be drawn (CI logs).
const POLL: Duration = Duration::from_millis(200);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// How the wait for the cold path ended.
pub struct Drained {
    /// The outbox was relayed, every queue emptied and every paid order
    /// shipped before the deadline.
    pub in_time: bool,
    /// From the end of the load until then (or until the wait gave up).
    pub elapsed: Duration,
}

/// What was still to do when the wait gave up.
pub struct Pending {
    pub queues: Vec<QueueStats>,
    pub unpublished_events: i64,
    pub orders: Vec<(OrderStatus, i64)>,
}

impl Pending {
    pub fn print(&self) {
        println!("  outbox events not yet relayed   {:>8}", self.unpublished_events);
        println!(
            "  {:<14} {:>8} {:>10} {:>8} {:>6}",
            "queue", "ready", "in flight", "delayed", "dead"
        );
        for q in &self.queues {
            println!(
                "  {:<14} {:>8} {:>10} {:>8} {:>6}",
                q.queue, q.ready, q.in_flight, q.delayed, q.dead
            );
        }
        let orders: Vec<String> = self
            .orders
            .iter()
            .map(|(status, n)| format!("{} {n}", status.as_str()))
            .collect();
        println!("  orders by status: {}", orders.join(", "));
    }
}

/// Waits (until `deadline`) for the cold path to finish: every payment
/// confirmed by the provider's webhook, every outbox event relayed, every
/// queue empty (dead letters aside) and no order left paid or fulfilling. It only watches; what the partner received is judged
/// afterwards, from one snapshot.
pub async fn wait(
    store: &SharedStore,
    receiver: &WebhookReceiver,
    hook: &str,
    since: Instant,
    deadline: Instant,
) -> anyhow::Result<Drained> {
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut last_log = Instant::now();
    let mut in_time = false;
    loop {
        let work = pending(store).await?;
        let queued: i64 = work.queues.iter().map(|q| q.ready + q.in_flight + q.delayed).sum();
        let count = |wanted: &[OrderStatus]| -> i64 {
            work.orders
                .iter()
                .filter(|(status, _)| wanted.contains(status))
                .map(|(_, n)| n)
                .sum()
        };
        let settling = count(&[OrderStatus::PendingPayment]);
        let shipping = count(&[OrderStatus::Paid, OrderStatus::Fulfilling]);
        if queued == 0 && settling == 0 && shipping == 0 && work.unpublished_events == 0 {
            in_time = true;
            break;
        }
        let message = format!(
            "cold path: {settling} payments to confirm, {shipping} orders to ship, {queued} jobs queued, {} events to relay, {} deliveries accepted by the partner",
            work.unpublished_events,
            receiver.counts(hook).accepted
        );
        log_progress(&progress, &message, &mut last_log);
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    progress.finish_and_clear();
    Ok(Drained {
        in_time,
        elapsed: since.elapsed(),
    })
}

/// The work still queued, unrelayed or unshipped.
pub async fn pending(store: &SharedStore) -> anyhow::Result<Pending> {
    let now = chrono::Utc::now();
    Ok(Pending {
        queues: store.queue().stats(now).await?,
        unpublished_events: store.outbox().lag(now).await?.unpublished,
        orders: store.order_counts().await?,
    })
}

/// Every order with its timeline and every delivery the partner received,
/// read together once nothing runs any more.
pub struct Snapshot {
    /// Each order and the statuses of its timeline, oldest first.
    pub orders: Vec<(Order, Vec<OrderStatus>)>,
    pub deliveries: Vec<Delivery>,
}

pub async fn snapshot(store: &SharedStore, receiver: &WebhookReceiver, hook: &str) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        orders: orders_with_timelines(store).await?,
        deliveries: receiver.deliveries(hook),
    })
}

fn log_progress(progress: &ProgressBar, message: &str, last_log: &mut Instant) {
    progress.set_message(message.to_owned());
    progress.tick();
    if progress.is_hidden() && last_log.elapsed() >= LOG_EVERY {
        println!("  … {message}");
        *last_log = Instant::now();
    }
}

/// Every order (paged by id) and its timeline.
pub async fn orders_with_timelines(store: &SharedStore) -> anyhow::Result<Vec<(Order, Vec<OrderStatus>)>> {
    const PAGE: i64 = 1000;
    let mut orders = Vec::new();
    let mut before: Option<OrderId> = None;
    loop {
        let filter = OrderFilter {
            before: before.clone(),
            limit: PAGE,
            ..OrderFilter::default()
        };
        let page = store.list_orders(&filter).await?;
        before = page.last().map(|order| order.id.clone());
        let full = i64::try_from(page.len()).unwrap_or(i64::MAX) == PAGE;
        orders.extend(page);
        if !full {
            break;
        }
    }
    // A few timelines at a time: enough to hide query latency, few enough to
    // leave read connections to the service.
    futures::stream::iter(orders)
        .map(|order| async move {
            let timeline = store.order_events(&order.id).await?;
            anyhow::Ok((order, timeline.into_iter().map(|event| event.to).collect()))
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// What the partner received, judged against the timelines.
#[derive(Debug, Default)]
pub struct WebhookFindings {
    pub received: usize,
    pub verified: usize,
    /// Distinct events accepted (2xx).
    pub events: usize,
    pub expected: usize,
    pub duplicates: usize,
    /// Timeline entries the partner never accepted.
    pub missing: usize,
    /// Orders whose events the partner accepted out of timeline order.
    pub out_of_order: usize,
    /// Accepted events that match no timeline entry.
    pub unexpected: usize,
    /// Paid orders that did not end `shipped` with a tracking number.
    pub unshipped: usize,
    /// A few examples for the report.
    pub samples: Vec<String>,
}

pub fn check(snapshot: &Snapshot) -> WebhookFindings {
    let deliveries = &snapshot.deliveries;
    let received = Received::of(deliveries);
    let mut findings = WebhookFindings {
        received: deliveries.len(),
        verified: deliveries.len() - received.unverified,
        events: received.events.len(),
        expected: snapshot.orders.iter().map(|(_, timeline)| timeline.len()).sum(),
        duplicates: received.duplicates,
        ..WebhookFindings::default()
    };
    let mut by_order: HashMap<String, Vec<String>> = HashMap::new();
    for delivery in &received.events {
        match (partner::data_id(delivery), partner::event_type(delivery)) {
            (Some(id), Some(kind)) => by_order.entry(id).or_default().push(kind),
            _ => findings.unexpected += 1,
        }
    }
    for (order, timeline) in &snapshot.orders {
        let expected: Vec<String> = timeline.iter().map(|status| status.event_type()).collect();
        let got = by_order.remove(order.id.as_str()).unwrap_or_default();
        let got: Vec<&str> = got.iter().map(String::as_str).collect();
        compare(order, &expected, &got, &mut findings);
        let paid = timeline.contains(&OrderStatus::Paid);
        let shipped =
            order.status == OrderStatus::Shipped && order.tracking_number.as_deref().is_some_and(|t| !t.is_empty());
        if paid && !shipped {
            findings.unshipped += 1;
            sample(&mut findings, format!("{} was paid but is {}", order.id, order.status));
        }
    }
    // Events about orders that do not exist.
    findings.unexpected += by_order.values().map(Vec::len).sum::<usize>();
    findings
}

/// How one order's received events compare with its timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceFindings {
    /// Timeline entries never received.
    pub missing: usize,
    /// Whether what was received came in timeline order.
    pub in_order: bool,
    /// Received events that match no timeline entry.
    pub unexpected: usize,
}

/// Matches received event types against the timeline's: each must be the
/// timeline's next entry after the previous one matched.
pub fn compare_sequence(expected: &[String], got: &[&str]) -> SequenceFindings {
    let mut matched = vec![false; expected.len()];
    let mut next = 0;
    let mut findings = SequenceFindings {
        in_order: true,
        ..SequenceFindings::default()
    };
    for kind in got {
        if let Some(offset) = expected[next..].iter().position(|e| e == kind) {
            matched[next + offset] = true;
            next += offset + 1;
        } else if let Some(at) = (0..expected.len()).find(|&i| !matched[i] && expected[i] == *kind) {
            matched[at] = true;
            findings.in_order = false;
        } else {
            findings.unexpected += 1;
        }
    }
    findings.missing = matched.iter().filter(|m| !**m).count();
    findings
}

/// Matches one order's accepted events against its timeline.
fn compare(order: &Order, expected: &[String], got: &[&str], findings: &mut WebhookFindings) {
    let sequence = compare_sequence(expected, got);
    findings.unexpected += sequence.unexpected;
    findings.missing += sequence.missing;
    if sequence.missing > 0 {
        sample(
            findings,
            format!("{}: timeline {expected:?}, partner got {got:?}", order.id),
        );
    }
    if !sequence.in_order {
        findings.out_of_order += 1;
        sample(
            findings,
            format!(
                "{}: timeline {expected:?}, partner got {got:?} (out of order)",
                order.id
            ),
        );
    }
}

fn sample(findings: &mut WebhookFindings, line: String) {
    if findings.samples.len() < 10 {
        findings.samples.push(line);
    }
}

/// One SKU's stock as read after the load, beside what it started with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StockLevel {
    pub sku: String,
    pub initial: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// SKUs whose stock does not add up, one line each: stock can never go
/// negative, what shipped left on-hand stock, and what open orders hold is
/// reserved.
pub fn stock_mismatches(orders: &[(Order, Vec<OrderStatus>)], levels: &[StockLevel]) -> Vec<String> {
    // Units per SKU consumed by shipped orders and held by open ones.
    let mut consumed: BTreeMap<&str, i64> = BTreeMap::new();
    let mut held: BTreeMap<&str, i64> = BTreeMap::new();
    for (order, _) in orders {
        let bucket = match order.status {
            OrderStatus::Shipped => &mut consumed,
            status if status.holds_stock() => &mut held,
            _ => continue,
        };
        for line in &order.lines {
            *bucket.entry(line.sku.as_str()).or_default() += i64::from(line.qty);
        }
    }
    let mut mismatches = Vec::new();
    for level in levels {
        let shipped = consumed.get(level.sku.as_str()).copied().unwrap_or(0);
        let reserved = held.get(level.sku.as_str()).copied().unwrap_or(0);
        if level.available < 0 || level.on_hand != level.initial - shipped || level.reserved != reserved {
            mismatches.push(format!(
                "{}: started with {}, {shipped} shipped, {reserved} held by open orders, now on hand {}, reserved {}, available {}",
                level.sku, level.initial, level.on_hand, level.reserved, level.available
            ));
        }
    }
    mismatches
}
