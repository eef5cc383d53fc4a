//! After the demo's load: waits until every paid order has shipped and the
//! partner has received every event, then compares what the partner got with
//! each order's timeline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use holdfast_domain::{OrderId, OrderStatus};
use holdfast_sandbox::{Delivery, WebhookReceiver};
use holdfast_store::{Order, OrderFilter, SharedStore};
use indicatif::{ProgressBar, ProgressStyle};

use crate::partner::{self, Received};

/// How often the wait looks again, and how often it prints a line when no
/// progress bar can be drawn (CI logs).
const POLL: Duration = Duration::from_millis(200);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Every order with its timeline, once the cold path had its chance to finish.
pub struct Drained {
    /// Each order and the statuses of its timeline, oldest first.
    pub orders: Vec<(Order, Vec<OrderStatus>)>,
    /// One outbox event per timeline entry: what the partner must receive.
    pub expected_events: usize,
    /// Everything shipped and arrived before the deadline.
    pub in_time: bool,
    /// From the end of the load until the partner had every event.
    pub elapsed: Duration,
}

/// Waits (until `deadline`) for paid orders to ship, then for the partner's
/// `hook` to accept every event of every order's timeline.
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
    let mut shipped = false;
    let mut last_log = Instant::now();
    while Instant::now() < deadline {
        let in_flight = count(store, &[OrderStatus::Paid, OrderStatus::Fulfilling]).await?;
        let message = format!("shipping paid orders: {in_flight} still paid or fulfilling");
        log_progress(&progress, &message, &mut last_log);
        if in_flight == 0 {
            shipped = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // Timelines are final once nothing is left to ship (payment settlement was
    // waited for before), so their total is the number of events to expect.
    let orders = orders_with_timelines(store).await?;
    let expected_events = orders.iter().map(|(_, timeline)| timeline.len()).sum();
    let mut delivered = false;
    loop {
        let accepted = receiver.counts(hook).accepted;
        // The cheap counter first; distinct ids (duplicates excluded) only
        // once it says there may be enough.
        if accepted >= expected_events && Received::of(&receiver.deliveries(hook)).events.len() >= expected_events {
            delivered = true;
            break;
        }
        let message = format!("partner webhooks: {accepted}/{expected_events} events accepted");
        log_progress(&progress, &message, &mut last_log);
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    progress.finish_and_clear();
    let elapsed = since.elapsed();
    if !(shipped && delivered) {
        println!(
            "Gave up waiting after {:.1} s: see the invariants below.",
            elapsed.as_secs_f64()
        );
    }
    Ok(Drained {
        orders,
        expected_events,
        in_time: shipped && delivered,
        elapsed,
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

async fn count(store: &SharedStore, statuses: &[OrderStatus]) -> anyhow::Result<i64> {
    Ok(store
        .order_counts()
        .await?
        .into_iter()
        .filter(|(status, _)| statuses.contains(status))
        .map(|(_, n)| n)
        .sum())
}

/// Every order (paged by id) and its timeline.
async fn orders_with_timelines(store: &SharedStore) -> anyhow::Result<Vec<(Order, Vec<OrderStatus>)>> {
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

pub fn check(drained: &Drained, deliveries: &[Delivery]) -> WebhookFindings {
    let received = Received::of(deliveries);
    let mut findings = WebhookFindings {
        received: deliveries.len(),
        verified: deliveries.len() - received.unverified,
        events: received.events.len(),
        expected: drained.expected_events,
        duplicates: received.duplicates,
        ..WebhookFindings::default()
    };
    let mut by_order: HashMap<&str, Vec<&str>> = HashMap::new();
    for delivery in &received.events {
        match (partner::data_id(delivery), partner::event_type(delivery)) {
            (Some(id), Some(kind)) => by_order.entry(id).or_default().push(kind),
            _ => findings.unexpected += 1,
        }
    }
    for (order, timeline) in &drained.orders {
        let expected: Vec<String> = timeline.iter().map(|status| status.event_type()).collect();
        let got = by_order.remove(order.id.as_str()).unwrap_or_default();
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

/// Matches one order's accepted events against its timeline: each must be
/// the timeline's next entry after the previous one matched.
fn compare(order: &Order, expected: &[String], got: &[&str], findings: &mut WebhookFindings) {
    let mut matched = vec![false; expected.len()];
    let mut next = 0;
    let mut in_order = true;
    for kind in got {
        if let Some(offset) = expected[next..].iter().position(|e| e == kind) {
            matched[next + offset] = true;
            next += offset + 1;
        } else if let Some(at) = (0..expected.len()).find(|&i| !matched[i] && expected[i] == *kind) {
            matched[at] = true;
            in_order = false;
        } else {
            findings.unexpected += 1;
        }
    }
    let missing = matched.iter().filter(|m| !**m).count();
    findings.missing += missing;
    if missing > 0 {
        sample(
            findings,
            format!("{}: timeline {expected:?}, partner got {got:?}", order.id),
        );
    }
    if !in_order {
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
