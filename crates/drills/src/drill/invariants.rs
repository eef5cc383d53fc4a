//! The business invariants a drill checks after the load, in the same
//! verdict as its gates: no acknowledged order lost, no oversell, no double
//! charge, every partner webhook delivered in order, every NATS event stored
//! once. Evidence is gathered from the real parts (the order database, the
//! sandbox provider's intents, what the partner received, the JetStream
//! stream); [`check`] is a pure function of it. A payment still processing
//! at the provider is an unknown outcome: it makes the double-charge check
//! indeterminate where it could tip it, as Jepsen treats an `:info` operation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use holdfast_domain::OrderStatus;
use holdfast_sandbox::payments::IntentStatus;
use holdfast_sandbox::{Delivery, PaymentIntent};
use holdfast_store::{Order, SharedStore};

use super::journal::{InvariantResult, InvariantStatus};
use super::rig::{PARTNER_HOOK, Rig};
use super::scenario::Scenario;
use super::traffic::{Acked, Catalogue};
use crate::coldpath::{self, StockLevel};
use crate::load::Driver;

/// An event as stored in the JetStream stream.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub sequence: u64,
    /// The `Nats-Msg-Id` header: the outbox event id.
    pub msg_id: String,
    pub event_type: Option<String>,
    pub order_id: Option<String>,
}

/// Everything the invariants are checked against, read once the load is over
/// and the cold path had its chance to drain.
#[derive(Debug, Default)]
pub struct Evidence {
    pub acknowledged: Vec<Acked>,
    /// Every order with the statuses of its timeline, oldest first.
    pub orders: Vec<(Order, Vec<OrderStatus>)>,
    pub levels: Vec<StockLevel>,
    pub intents: Vec<PaymentIntent>,
    /// What the partner received; `None` when the drill has no partner.
    pub deliveries: Option<Vec<Delivery>>,
    /// The stream's events; `None` when the drill has no NATS.
    pub stream: Option<Vec<StreamEvent>>,
    /// Whether the cold path drained before the evidence was read: stock that
    /// does not add up while work is still queued is unsettled, not oversold.
    pub drained: bool,
}

/// Reads the evidence from the rig's real parts.
pub async fn gather(
    rig: &Rig,
    store: &SharedStore,
    acknowledged: Vec<Acked>,
    catalogue: &Catalogue,
    admin: &Driver,
    drained: bool,
) -> anyhow::Result<Evidence> {
    let orders = coldpath::orders_with_timelines(store).await?;
    let mut levels = Vec::new();
    for (sku, initial) in &catalogue.initial {
        // Through the order node's API: in remote mode the stock lives on the
        // inventory node, and this reads it there.
        let answer = admin.get(&format!("/api/v1/inventory/{sku}")).await?;
        anyhow::ensure!(
            answer.status == 200,
            "reading the stock of {sku}: HTTP {} {}",
            answer.status,
            answer.raw
        );
        let field = |key: &str| answer.body[key].as_i64().unwrap_or(i64::MIN);
        levels.push(StockLevel {
            sku: sku.clone(),
            initial: *initial,
            on_hand: field("on_hand"),
            reserved: field("reserved"),
            available: field("available"),
        });
    }
    let deliveries = rig.partner.as_ref().map(|p| p.receiver.deliveries(PARTNER_HOOK));
    let stream = match rig.nats_urls.first() {
        Some(url) => Some(read_stream(url, &rig.stream).await?),
        None => None,
    };
    Ok(Evidence {
        acknowledged,
        orders,
        levels,
        intents: rig.payments.intents(),
        deliveries,
        stream,
        drained,
    })
}

/// Every event in `stream`, by sequence number.
pub async fn read_stream(url: &str, stream: &str) -> anyhow::Result<Vec<StreamEvent>> {
    let client = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(url))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to NATS at {url}: no answer within 10 s"))?
        .map_err(|e| anyhow::anyhow!("connecting to NATS at {url}: {e}"))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut handle = match jetstream.get_stream(stream).await {
        Ok(handle) => handle,
        // No event was ever published: the stream was never created.
        Err(error) if error.to_string().contains("not found") => return Ok(Vec::new()),
        Err(error) => anyhow::bail!("reading JetStream stream {stream}: {error}"),
    };
    let info = handle
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("reading JetStream stream {stream}: {e}"))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut events = Vec::new();
    for sequence in first.max(1)..=last {
        let message = handle
            .get_raw_message(sequence)
            .await
            .map_err(|e| anyhow::anyhow!("reading message {sequence} of {stream}: {e}"))?;
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap_or_default();
        events.push(StreamEvent {
            sequence,
            msg_id: message
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
            event_type: body["type"].as_str().map(str::to_owned),
            order_id: body["data"]["id"].as_str().map(str::to_owned),
        });
    }
    Ok(events)
}

/// Checks every invariant that applies to `scenario`.
pub fn check(evidence: &Evidence, scenario: &Scenario) -> Vec<InvariantResult> {
    let mut results = Vec::new();
    if scenario.checks("no_lost_orders") {
        results.push(no_lost_orders(evidence));
    }
    if scenario.checks("no_oversell") {
        results.push(no_oversell(evidence));
    }
    if scenario.checks("no_double_charge") {
        results.push(no_double_charge(evidence));
    }
    if scenario.checks("webhooks_delivered_in_order")
        && let Some(deliveries) = &evidence.deliveries
    {
        results.push(webhooks_in_order(evidence, deliveries));
    }
    if scenario.checks("nats_events_once")
        && let Some(stream) = &evidence.stream
    {
        results.push(nats_once(evidence, stream));
    }
    results
}

fn result(name: &str, status: InvariantStatus, observed: String, samples: Vec<String>) -> InvariantResult {
    InvariantResult {
        name: name.to_owned(),
        status,
        observed,
        ok: status == InvariantStatus::Holds,
        samples: samples.into_iter().take(10).collect(),
    }
}

fn holds_if(broken: bool) -> InvariantStatus {
    if broken {
        InvariantStatus::Broken
    } else {
        InvariantStatus::Holds
    }
}

fn no_lost_orders(evidence: &Evidence) -> InvariantResult {
    let known: HashSet<&str> = evidence.orders.iter().map(|(o, _)| o.id.as_str()).collect();
    let lost: Vec<String> = evidence
        .acknowledged
        .iter()
        .filter(|a| !known.contains(a.order_id.as_str()))
        .map(|a| format!("{} (answered {}) is not in the database", a.order_id, a.status))
        .collect();
    result(
        "no_lost_orders",
        holds_if(!lost.is_empty()),
        format!(
            "{} of {} acknowledged orders lost",
            lost.len(),
            evidence.acknowledged.len()
        ),
        lost,
    )
}

/// Oversold: a SKU's stock went below zero, or its orders hold or shipped
/// more than it had. Stock that merely does not add up (reserved or on hand
/// differ from what the orders say) breaks the invariant once the cold path
/// has drained, and is indeterminate while stock effects are still queued.
fn no_oversell(evidence: &Evidence) -> InvariantResult {
    let mismatches = coldpath::stock_mismatches(&evidence.orders, &evidence.levels);
    let mut sold: HashMap<&str, i64> = HashMap::new();
    for (order, _) in &evidence.orders {
        if order.status.holds_stock() || order.status == OrderStatus::Shipped {
            for line in &order.lines {
                *sold.entry(line.sku.as_str()).or_default() += i64::from(line.qty);
            }
        }
    }
    let mut oversold: Vec<String> = evidence
        .levels
        .iter()
        .filter(|l| l.available < 0 || sold.get(l.sku.as_str()).copied().unwrap_or(0) > l.initial)
        .map(|l| {
            format!(
                "{}: {} units held or shipped of {}, available {}",
                l.sku,
                sold.get(l.sku.as_str()).copied().unwrap_or(0),
                l.initial,
                l.available
            )
        })
        .collect();
    let status = if !oversold.is_empty() || (evidence.drained && !mismatches.is_empty()) {
        InvariantStatus::Broken
    } else if mismatches.is_empty() {
        InvariantStatus::Holds
    } else {
        InvariantStatus::Indeterminate
    };
    let scarce = evidence
        .levels
        .iter()
        .find(|l| l.sku == super::traffic::SCARCE_SKU)
        .map(|l| {
            format!(
                "; {} has {} units held or shipped of its {}",
                l.sku,
                sold.get(l.sku.as_str()).copied().unwrap_or(0),
                l.initial
            )
        })
        .unwrap_or_default();
    let oversold_count = oversold.len();
    oversold.extend(mismatches.iter().cloned());
    result(
        "no_oversell",
        status,
        format!(
            "{oversold_count} of {} SKUs oversold, {} with stock that does not add up{}{scarce}",
            evidence.levels.len(),
            mismatches.len(),
            if evidence.drained {
                ""
            } else {
                " (stock effects still queued)"
            }
        ),
        oversold,
    )
}

fn no_double_charge(evidence: &Evidence) -> InvariantResult {
    let known: HashSet<&str> = evidence.orders.iter().map(|(o, _)| o.id.as_str()).collect();
    // Per order: (succeeded, outcome unknown).
    let mut per_order: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for intent in &evidence.intents {
        let Some(order) = intent.metadata.get("order_id") else {
            continue;
        };
        let counts = per_order.entry(order.as_str()).or_default();
        match intent.status {
            IntentStatus::Succeeded => counts.0 += 1,
            IntentStatus::Processing => counts.1 += 1,
            _ => {}
        }
    }
    let mut samples = Vec::new();
    let (mut doubled, mut unknown, mut orphans, mut charged) = (0, 0, 0, 0);
    for (order, (succeeded, processing)) in &per_order {
        if *succeeded >= 1 {
            charged += 1;
        }
        if *succeeded > 1 {
            doubled += 1;
            samples.push(format!("{order} was charged {succeeded} times"));
        } else if succeeded + processing > 1 {
            unknown += 1;
            samples.push(format!(
                "{order}: {succeeded} charge(s) succeeded and {processing} still processing"
            ));
        }
        if *succeeded >= 1 && !known.contains(order) {
            orphans += 1;
            samples.push(format!("{order} was charged but is not in the database"));
        }
    }
    let status = if doubled > 0 || orphans > 0 {
        InvariantStatus::Broken
    } else if unknown > 0 {
        InvariantStatus::Indeterminate
    } else {
        InvariantStatus::Holds
    };
    result(
        "no_double_charge",
        status,
        format!(
            "{charged} orders charged, {doubled} more than once, {orphans} charged without an order, \
             {unknown} with an outcome still unknown ({} intents)",
            evidence.intents.len()
        ),
        samples,
    )
}

fn webhooks_in_order(evidence: &Evidence, deliveries: &[Delivery]) -> InvariantResult {
    let snapshot = coldpath::Snapshot {
        orders: evidence.orders.clone(),
        deliveries: deliveries.to_vec(),
    };
    let findings = coldpath::check(&snapshot);
    let broken = findings.missing > 0 || findings.out_of_order > 0 || findings.unexpected > 0;
    result(
        "webhooks_delivered_in_order",
        holds_if(broken),
        format!(
            "{} of {} events delivered, {} missing, {} orders out of order, {} unexpected, {} repeats",
            findings.events - findings.unexpected.min(findings.events),
            findings.expected,
            findings.missing,
            findings.out_of_order,
            findings.unexpected,
            findings.duplicates
        ),
        findings.samples,
    )
}

fn nats_once(evidence: &Evidence, stream: &[StreamEvent]) -> InvariantResult {
    let mut copies: HashMap<&str, u32> = HashMap::new();
    let mut by_order: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in stream {
        *copies.entry(event.msg_id.as_str()).or_default() += 1;
        if let (Some(order), Some(kind)) = (&event.order_id, &event.event_type) {
            by_order.entry(order.as_str()).or_default().push(kind.as_str());
        }
    }
    let mut samples: Vec<String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("event {id} is in the stream {n} times"))
        .collect();
    let repeated = samples.len();
    let (mut missing, mut expected, mut out_of_order) = (0, 0, 0);
    for (order, timeline) in &evidence.orders {
        let wanted: Vec<String> = timeline.iter().map(|s| s.event_type()).collect();
        expected += wanted.len();
        let mut got = by_order.remove(order.id.as_str()).unwrap_or_default();
        // Repeats are counted above; the sequence check looks at first copies.
        let mut seen = HashSet::new();
        got.retain(|kind| seen.insert(*kind));
        let sequence = coldpath::compare_sequence(&wanted, &got);
        missing += sequence.missing;
        if sequence.missing > 0 || !sequence.in_order {
            out_of_order += usize::from(!sequence.in_order);
            samples.push(format!("{}: timeline {wanted:?}, stream has {got:?}", order.id));
        }
    }
    let strays = by_order.values().map(Vec::len).sum::<usize>();
    result(
        "nats_events_once",
        holds_if(repeated > 0 || missing > 0 || out_of_order > 0 || strays > 0),
        format!(
            "{} events in the stream for {expected} timeline entries: {missing} missing, {repeated} stored more than once, \
             {out_of_order} orders out of order, {strays} about unknown orders",
            stream.len()
        ),
        samples,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(order: &str, status: IntentStatus) -> PaymentIntent {
        PaymentIntent {
            id: format!("pi_{}", uuid::Uuid::now_v7().simple()),
            object: "payment_intent".into(),
            amount: 100,
            amount_received: 0,
            currency: "usd".into(),
            status,
            client_secret: String::new(),
            payment_method: Some("pm_card_visa".into()),
            metadata: [("order_id".to_owned(), order.to_owned())].into(),
            created: 0,
            canceled_at: None,
            cancellation_reason: None,
            last_payment_error: None,
            livemode: false,
        }
    }

    #[test]
    fn an_unknown_outcome_is_indeterminate_and_a_second_success_is_a_double_charge() {
        let mut evidence = Evidence {
            intents: vec![intent("ord_a", IntentStatus::Succeeded)],
            ..Evidence::default()
        };
        // ord_a is not in `orders`: a charge without an order.
        assert_eq!(no_double_charge(&evidence).status, InvariantStatus::Broken);
        evidence.intents.push(intent("ord_a", IntentStatus::Processing));
        let result = no_double_charge(&evidence);
        assert!(
            result.samples.iter().any(|s| s.contains("still processing")),
            "{result:?}"
        );
        evidence.intents.push(intent("ord_a", IntentStatus::Succeeded));
        let result = no_double_charge(&evidence);
        assert_eq!(result.status, InvariantStatus::Broken);
        assert!(result.observed.contains("1 more than once"), "{}", result.observed);
    }
}
