//! The outbox relay racing itself: many relays at once (as on many nodes)
//! fan each committed event out exactly once, in sequence order per endpoint,
//! and a rolled-back write leaves no event behind.

use std::collections::HashSet;

use chrono::Utc;
use holdfast_domain::address::AddressFields;
use holdfast_domain::{Address, Currency, Email, Money, OrderId, OrderStatus, Quantity, Sku, WebhookEndpointId};
use holdfast_store::{
    JobTemplate, NewOrder, NewProduct, NewWebhookEndpoint, PlaceOrderError, RelayOptions, SharedStore,
};

use crate::both_backends;
use crate::helpers::open;

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
        store
            .create_product(&NewProduct {
                sku: Sku::parse("RELAY").expect("sku"),
                name: "Relay".into(),
                price: Money::new(1_000, Currency::USD).expect("price"),
                on_hand: 60,
                created_at: Utc::now(),
            })
            .await
            .expect("product");
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
