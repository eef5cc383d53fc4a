//! The outbox relay racing itself: many relays at once (as on many nodes)
//! fan each committed event out exactly once, in sequence order per endpoint,
//! and a rolled-back write leaves no event behind.

use std::collections::HashSet;

use chrono::Utc;
use holdfast_domain::address::AddressFields;
use holdfast_domain::{Address, Currency, Email, Money, OrderId, OrderStatus, Quantity, Sku, WebhookEndpointId};
use holdfast_store::{JobTemplate, NewOrder, NewWebhookEndpoint, PlaceOrderError, RelayOptions, SharedStore};

use crate::both_backends;
use crate::helpers::{open, product};

pub fn new_order(sku: &str, qty: i64) -> NewOrder {
    let now = Utc::now();
    let price = Money::new(1_000, Currency::USD).expect("price");
    NewOrder {
        id: OrderId::generate(),
        email: Email::parse("relay@example.com").expect("email"),
        name: None,
        address: Address::parse(AddressFields {
            line1: "1 Relay Road",
            city: "Salem",
            postal_code: "97301",
            country: "US",
            ..Default::default()
        })
        .expect("address"),
        lines: vec![(Sku::parse(sku).expect("sku"), Quantity::parse(qty).expect("qty"), price)],
        total: price,
        payment_method: "pm_card_visa".into(),
        status: OrderStatus::PendingPayment,
        expires_at: now + chrono::TimeDelta::minutes(15),
        now,
        cause: "test".into(),
    }
}

async fn endpoint(store: &SharedStore, types: &[&str]) -> WebhookEndpointId {
    let id = WebhookEndpointId::generate();
    store
        .webhooks()
        .create_endpoint(&NewWebhookEndpoint {
            id: id.clone(),
            url: "http://127.0.0.1:9/hooks".into(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            created_at: Utc::now(),
        })
        .await
        .expect("endpoint");
    id
}

both_backends!(
    concurrent_relays_fan_each_event_out_once_in_order,
    |backend| async move {
        let db = open(backend).await;
        let store = db.store.clone();
        product(&store, "RELAY", 60).await;
        let everything = endpoint(&store, &["*"]).await;
        let paid_only = endpoint(&store, &["order.paid"]).await;
        for _ in 0..60 {
            store.place_order(&new_order("RELAY", 1)).await.expect("placed");
        }
        // Out of stock: the transaction rolls back and writes no event.
        let refused = store.place_order(&new_order("RELAY", 1)).await;
        assert!(
            matches!(refused, Err(PlaceOrderError::OutOfStock { .. })),
            "{refused:?}"
        );

        let relays: Vec<_> = (0..6)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut relayed = 0;
                    loop {
                        let options = RelayOptions {
                            limit: 7,
                            now: Utc::now(),
                            webhooks: JobTemplate::new("webhooks"),
                            events: Some(JobTemplate::new("events")),
                            inventory: None,
                        };
                        let outcome = store.outbox().relay_batch(&options).await.expect("relay");
                        relayed += outcome.events;
                        if store.outbox().lag(Utc::now()).await.expect("lag").unpublished == 0 {
                            return relayed;
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let mut total = 0;
        for relay in relays {
            total += relay.await.expect("relay task");
        }
        assert_eq!(total, 60, "each event relayed by exactly one relay");

        let deliveries = store
            .webhooks()
            .deliveries(&everything, 1_000)
            .await
            .expect("deliveries");
        let events: HashSet<_> = deliveries.iter().map(|d| d.event_id.clone()).collect();
        assert_eq!((deliveries.len(), events.len()), (60, 60), "one delivery per event");
        assert!(
            store
                .webhooks()
                .deliveries(&paid_only, 10)
                .await
                .expect("deliveries")
                .is_empty()
        );

        // The endpoint's jobs come out one at a time, in outbox sequence order.
        let mut last_seq = 0;
        for _ in 0..60 {
            let claimed = store
                .queue()
                .claim_batch("webhooks", "checker", 10, Utc::now())
                .await
                .expect("claim");
            assert_eq!(claimed.len(), 1, "one in flight per endpoint");
            let delivery_id = claimed[0].job.payload["delivery_id"].as_str().expect("delivery id");
            let delivery = store
                .webhooks()
                .delivery(&holdfast_domain::DeliveryId::parse(delivery_id).expect("id"))
                .await
                .expect("read")
                .expect("delivery");
            let seq = store
                .outbox()
                .event(&delivery.event_id)
                .await
                .expect("read")
                .expect("event")
                .seq;
            assert!(seq > last_seq, "delivered out of order: {seq} after {last_seq}");
            last_seq = seq;
            assert!(
                store
                    .queue()
                    .complete(&claimed[0].job.id, &claimed[0].lease_token)
                    .await
                    .expect("complete")
            );
        }
        let stats = store.queue().stats(Utc::now()).await.expect("stats");
        let events_queue = stats.iter().find(|q| q.queue == "events").expect("events queue");
        assert_eq!(events_queue.ready, 60, "one publish job per event");
        drop(store);
        db.drop_database().await;
    }
);

/// PostgreSQL only: there transactions commit in any order, so a row can
/// commit after one with a higher seq (SQLite has one writer, so its rows
/// commit in seq order). The relay must hold the later row until the hole
/// fills, or until PostgreSQL shows that nothing running can fill it.
mod a_hole_in_the_outbox_sequence {
    use super::*;
    use crate::helpers::{Backend, pgbouncer, postgres_admin_url};
    use sqlx::Connection;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        if postgres_admin_url().await.is_some() {
            holds_later_events_until_it_fills_or_proves_permanent(Backend::Postgres).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pgbouncer_transaction_pooling() {
        if pgbouncer().await.is_some() {
            holds_later_events_until_it_fills_or_proves_permanent(Backend::PgBouncer).await;
        }
    }

    fn relay_options() -> RelayOptions {
        RelayOptions {
            limit: 100,
            now: Utc::now(),
            webhooks: JobTemplate::new("webhooks"),
            events: None,
            inventory: None,
        }
    }

    /// Writes an event in a transaction of its own that stays open.
    async fn open_event(url: &str, id: &str) -> sqlx::PgConnection {
        let mut connection = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query("BEGIN").execute(&mut connection).await.expect("begin");
        sqlx::query(
            "INSERT INTO outbox_events (id, aggregate_id, event_type, payload, created_at) \
             VALUES ($1, 'ord_held', 'order.paid', '{}', now())",
        )
        .bind(id)
        .execute(&mut connection)
        .await
        .expect("insert");
        connection
    }

    async fn published_order(store: &SharedStore, endpoint: &WebhookEndpointId) -> Vec<String> {
        let mut events = Vec::new();
        loop {
            let claimed = store
                .queue()
                .claim_batch("webhooks", "checker", 10, Utc::now())
                .await
                .expect("claim");
            let Some(job) = claimed.first() else {
                return events;
            };
            let delivery_id = job.job.payload["delivery_id"].as_str().expect("delivery id");
            let delivery = store
                .webhooks()
                .delivery(&holdfast_domain::DeliveryId::parse(delivery_id).expect("id"))
                .await
                .expect("read")
                .expect("the job's delivery");
            assert_eq!(&delivery.endpoint_id, endpoint);
            events.push(delivery.event_id);
            assert!(
                store
                    .queue()
                    .complete(&job.job.id, &job.lease_token)
                    .await
                    .expect("complete")
            );
        }
    }

    async fn holds_later_events_until_it_fills_or_proves_permanent(backend: Backend) {
        let db = open(backend).await;
        let store = db.store.clone();
        product(&store, "HOLE", 10).await;
        let everything = endpoint(&store, &["*"]).await;

        // A transaction takes its place in the sequence and keeps running,
        // while a later checkout commits.
        let slow = open_event(&db.database_url, "evt_slow").await;
        store.place_order(&new_order("HOLE", 1)).await.expect("placed");
        for _ in 0..5 {
            let outcome = store.outbox().relay_batch(&relay_options()).await.expect("relay");
            assert_eq!((outcome.events, outcome.held), (0, true), "the later event waits");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        sqlx::query("COMMIT").execute(&mut { slow }).await.expect("commit");
        let outcome = store.outbox().relay_batch(&relay_options()).await.expect("relay");
        assert_eq!(
            (outcome.events, outcome.held, outcome.late, outcome.skipped),
            (2, false, 0, 0)
        );
        let order = published_order(&store, &everything).await;
        assert_eq!(order.len(), 2);
        assert_eq!(order[0], "evt_slow", "published in sequence order: {order:?}");

        // A transaction takes its place and rolls back: the hole is permanent,
        // and the relay steps over it once PostgreSQL shows nothing can fill it.
        let doomed = open_event(&db.database_url, "evt_doomed").await;
        store.place_order(&new_order("HOLE", 1)).await.expect("placed");
        assert!(store.outbox().relay_batch(&relay_options()).await.expect("relay").held);
        sqlx::query("ROLLBACK")
            .execute(&mut { doomed })
            .await
            .expect("rollback");
        // PostgreSQL shows it once the oldest transaction still running in
        // the cluster began after the hole: at once on a quiet server, later
        // while other databases on it run long transactions. The relay never
        // waits longer than its give-up time (10 s).
        let mut published = None;
        for _ in 0..400 {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            let outcome = store.outbox().relay_batch(&relay_options()).await.expect("relay");
            if outcome.events > 0 {
                published = Some(outcome);
                break;
            }
        }
        let outcome = published.expect("the event after a rolled-back hole is published within 12 s");
        assert_eq!((outcome.events, outcome.skipped, outcome.late), (1, 1, 0));
        assert_eq!(store.outbox().lag(Utc::now()).await.expect("lag").unpublished, 0);
        db.drop_database().await;
    }
}
