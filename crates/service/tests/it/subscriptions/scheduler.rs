//! Renewals without a leader: two nodes' schedulers and payment workers
//! race over one database and every period is charged exactly once; a
//! replayed provider event changes nothing; the audit finds a charge row
//! that was deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use holdfast_service::pipeline::queues;
use holdfast_service::pipeline::subscriptions::audit::{self, FindingKind};
use holdfast_store::ChargeStatus;
use serde_json::json;
use sqlx::Connection;

use super::{Subs, at, drive, id, spawn};
use crate::both_backends;
use crate::helpers::Backend;

/// Creators and subscribers per creator: 200 subscriptions on PostgreSQL
/// (directly or through PgBouncer), where two nodes share one server, and
/// fewer on SQLite, whose one writer two real nodes would not share.
fn population(backend: Backend) -> (usize, usize) {
    match backend {
        Backend::Sqlite => (8, 6),
        _ => (10, 20),
    }
}
const PERIODS: u32 = 12;

/// Runs the payment worker of `ctx` in a loop, and its scheduler whenever
/// the queue has nothing for it (as the real scheduler runs on a tick, not
/// per job), until the clock is ready. Every racer finds the queue empty at
/// once, so their schedulers race over the same due periods each round.
async fn race(subs: Arc<Subs>, ctx: Arc<holdfast_service::workers::WorkerContext>, clock: String) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut handled = 0;
    loop {
        let claimed = ctx
            .run_queue_once(queues::SUBSCRIPTION_PAYMENTS, Utc::now())
            .await
            .expect("payments");
        handled += claimed;
        if claimed == 0 && ctx.schedule_renewals_once(Utc::now()).await.expect("schedule") == 0 {
            let state = subs.app.admin.get(&format!("/api/v1/test-clocks/{clock}")).await;
            if state.body["status"] == "ready" {
                return handled;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "the clock never became ready");
    }
}

both_backends!(
    two_nodes_racing_charge_every_period_exactly_once,
    |backend| async move {
        let subs = Arc::new(spawn(backend, |_| {}).await);
        let clock = subs.clock("2026-01-31T00:00:00Z").await;
        let mut ids = Vec::new();
        let (creators, per_creator) = population(backend);
        for _ in 0..creators {
            let creator = subs.creator().await;
            let plan = subs.plan(&creator, 1_000).await;
            for _ in 0..per_creator {
                ids.push(id(&subs.subscribe(&plan, Some(&clock), "pm_card_visa").await));
            }
        }
        // Eleven months on: periods 0 to 11 are due, every one of them caught up.
        subs.advance(&clock, at("2026-12-31T00:00:00Z")).await;
        let started = std::time::Instant::now();
        let nodes = [Arc::new(subs.worker("node-a")), Arc::new(subs.worker("node-b"))];
        let racers: Vec<_> = (0..8)
            .map(|n| tokio::spawn(race(subs.clone(), nodes[n % 2].clone(), clock.clone())))
            .collect();
        let mut handled = 0;
        for racer in racers {
            handled += racer.await.expect("racer");
        }
        let elapsed = started.elapsed();
        let expected = ids.len() * PERIODS as usize;
        println!("{expected} charges by two racing nodes in {elapsed:?} ({handled} receives)");
        let store = subs.app.store.subscriptions();
        for sub in &ids {
            let charges = store
                .charges(&holdfast_domain::SubscriptionId::parse(sub).expect("id"))
                .await
                .expect("charges");
            let mut by_period: BTreeMap<u32, usize> = BTreeMap::new();
            for charge in &charges {
                assert_eq!(charge.status, ChargeStatus::Succeeded, "{charge:?}");
                *by_period.entry(charge.period_index).or_default() += 1;
            }
            assert_eq!(
                by_period,
                (0..PERIODS).map(|p| (p, 1)).collect::<BTreeMap<_, _>>(),
                "{sub}: one charge per period"
            );
        }
        assert_eq!(
            subs.sandbox.stats().intents_created,
            expected as u64,
            "the provider saw one intent per period"
        );
        let report = audit::run(&subs.app.store, None, Utc::now()).await.expect("audit");
        assert_eq!(report.findings, [], "the audit agrees");
        assert_eq!(report.succeeded_charges, expected as u64);
        match Arc::try_unwrap(subs) {
            Ok(subs) => subs.app.stop().await,
            Err(_) => panic!("racers still hold the app"),
        }
    }
);

both_backends!(
    a_replayed_provider_event_is_a_no_op_and_the_audit_finds_a_deleted_charge,
    |backend| async move {
        let subs = spawn(backend, |_| {}).await;
        let ctx = subs.worker("replay");
        let creator = subs.creator().await;
        let plan = subs.plan(&creator, 700).await;
        let clock = subs.clock("2026-03-30T09:00:00Z").await;
        let sub = id(&subs.subscribe(&plan, Some(&clock), "pm_card_visa").await);
        subs.advance(&clock, at("2026-05-30T09:00:00Z")).await;
        assert_eq!(drive(&ctx, Utc::now()).await, 3, "periods 0, 1 and 2");
        // The sandbox's own events for the three charges arrive: duplicates.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while subs.sandbox.stats().webhooks_sent < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the provider's events never came"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(holdfast_service::workers::inbox::tick(&ctx).await.expect("inbox") >= 3);
        let before = (subs.charges(&sub).await, subs.event_types(&sub).await);

        // The provider sends a success again under a new event id.
        let charge = subs.app.shop.get(&format!("/api/v1/subscriptions/{sub}/charges")).await;
        let first = &charge.body["data"][0];
        let event = json!({
            "id": "evt_replayed_1", "object": "event", "type": "payment_intent.succeeded",
            "created": Utc::now().timestamp(),
            "data": {"object": {"id": first["intent_id"], "metadata": {"charge_id": first["id"], "subscription_id": sub}}}
        })
        .to_string();
        let secret = subs.app.config.payments.webhook_secret.expose().to_owned();
        let signature = holdfast_signing::stripe_signature_header(&secret, Utc::now().timestamp(), &event);
        let delivered = subs
            .app
            .shop
            .anonymous()
            .send(
                subs.app
                    .shop
                    .anonymous()
                    .request(reqwest::Method::POST, "/api/v1/payments/webhook")
                    .header("Content-Type", "application/json")
                    .header("Stripe-Signature", signature)
                    .body(event),
            )
            .await;
        assert_eq!(delivered.status, 200, "{}", delivered.body);
        assert_eq!(holdfast_service::workers::inbox::tick(&ctx).await.expect("inbox"), 1);
        let after = (subs.charges(&sub).await, subs.event_types(&sub).await);
        assert_eq!(before, after, "the replayed event changed nothing");

        // Finance's audit: clean, then a charge row goes missing.
        let report = audit::run(&subs.app.store, None, Utc::now()).await.expect("audit");
        assert_eq!(report.findings, []);
        let charge_id = charge.body["data"][1]["id"].as_str().expect("id").to_owned();
        delete_charge(&subs, backend, &charge_id).await;
        let report = audit::run(&subs.app.store, None, Utc::now()).await.expect("audit");
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        let finding = &report.findings[0];
        assert_eq!(
            (finding.kind, finding.subscription_id.as_str(), finding.period_index),
            (FindingKind::UnderCharge, sub.as_str(), 1)
        );
        let since = audit::run(&subs.app.store, Some(at("2026-05-01T00:00:00Z")), Utc::now())
            .await
            .expect("audit");
        assert_eq!(since.findings, [], "--since leaves the earlier period out");
        subs.app.stop().await;
    }
);

/// Deletes a charge and its ledger entry behind the service's back.
async fn delete_charge(subs: &Subs, backend: Backend, charge: &str) {
    let statements = [
        "DELETE FROM ledger_entries WHERE charge_id = $1",
        "DELETE FROM subscription_charges WHERE id = $1",
    ];
    match backend {
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(subs.app.database_url())
                .await
                .expect("connect");
            for statement in statements {
                sqlx::query(statement)
                    .bind(charge)
                    .execute(&mut db)
                    .await
                    .expect("delete");
            }
        }
        Backend::Postgres | Backend::PgBouncer => {
            let mut db = sqlx::PgConnection::connect(subs.app.database_url())
                .await
                .expect("connect");
            for statement in statements {
                sqlx::query(statement)
                    .bind(charge)
                    .execute(&mut db)
                    .await
                    .expect("delete");
            }
        }
    }
}
