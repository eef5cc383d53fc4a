//! The transactional outbox and its NATS JetStream sink, driven one worker
//! step at a time: a rolled-back checkout publishes nothing, and a publish
//! repeated after a crash reaches a JetStream consumer once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use holdfast_service::Role;
use holdfast_service::providers::events::EventPublisher;
use holdfast_service::workers::{events, relay};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{nats_url, order, spawn_app_as};
use crate::steps::worker_context;

both_backends!(
    events_reach_jetstream_once_even_when_a_publish_repeats,
    |backend| async move {
        let Some(url) = nats_url().await else { return };
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let stream_name = format!("HOLDFAST_TEST_{suffix}");
        // Only the API runs: the test is the worker.
        let app = spawn_app_as(backend, Role::Api, |config| {
            config.events.nats_url = url.clone();
            config.events.stream = stream_name.clone();
            config.events.subject_prefix = format!("holdfast-test.{suffix}");
        })
        .await;
        app.create_product("BELL", 1_500, 1).await;
        let placed = app
            .shop
            .checkout(&order(&[("BELL", 1)], "pm_card_visa"), "nats-1")
            .await;
        assert_eq!(placed.status, 201, "{}", placed.body);
        let order_id = placed.body["order_id"].as_str().expect("order id").to_owned();
        // Out of stock: its transaction rolls back, and with it its event.
        let refused = app
            .shop
            .checkout(&order(&[("BELL", 1)], "pm_card_visa"), "nats-2")
            .await;
        assert_eq!(refused.status, 409, "{}", refused.body);

        let publisher = EventPublisher::connect(&app.config.events, Duration::from_secs(5))
            .await
            .expect("nats client");
        let ctx = worker_context(&app, "test-worker", Some(Arc::new(publisher)));
        let now = Utc::now();
        assert_eq!(
            relay::relay_once(&ctx, now).await.expect("relay"),
            1,
            "one committed event"
        );
        assert_eq!(
            relay::relay_once(&ctx, now).await.expect("relay"),
            0,
            "published events are not relayed again"
        );
        assert_eq!(app.store.outbox().lag(now).await.expect("lag").unpublished, 0);

        // A worker publishes, then dies before completing its job.
        let claimed = app
            .store
            .queue()
            .claim_batch(events::QUEUE, "doomed-worker", 10, now)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        let event_id = claimed[0].job.payload["event_id"]
            .as_str()
            .expect("event id")
            .to_owned();
        let event = app.store.outbox().event(&event_id).await.expect("read").expect("event");
        let publisher = ctx.events.clone().expect("publisher");
        let first = publisher.publish(&event).await.expect("published");
        assert!(!first.duplicate);

        // Nothing is claimable until the lease runs out; then the job is
        // published again and JetStream recognises the event id.
        assert_eq!(ctx.run_queue_once(events::QUEUE, now).await.expect("run"), 0);
        let later = now + TimeDelta::seconds(31);
        assert_eq!(ctx.run_queue_once(events::QUEUE, later).await.expect("run"), 1);
        let stats = app.store.queue().stats(later).await.expect("stats");
        assert!(
            stats.iter().all(|q| q.queue != events::QUEUE),
            "the job completed: {stats:?}"
        );

        let client = async_nats::connect(url.as_str()).await.expect("nats");
        let jetstream = async_nats::jetstream::new(client);
        let mut stream = jetstream.get_stream(&stream_name).await.expect("stream exists");
        let info = stream.info().await.expect("info");
        assert_eq!(
            info.state.messages, 1,
            "the repeated publish was dropped as a duplicate"
        );
        let message = stream.get_raw_message(1).await.expect("the event");
        assert_eq!(
            message.headers.get("Nats-Msg-Id").map(|v| v.to_string()),
            Some(event_id.clone())
        );
        assert_eq!(
            message.subject.as_str(),
            format!("holdfast-test.{suffix}.order.pending_payment")
        );
        let body: Value = serde_json::from_slice(&message.payload).expect("json");
        assert_eq!(body["id"], event_id.as_str());
        assert_eq!(body["data"]["id"], order_id.as_str());
        jetstream.delete_stream(&stream_name).await.expect("cleanup");
        app.stop().await;
    }
);
