//! `holdfast subscriptions audit`: Finance's check exits 0 on a clean
//! database and 1, naming the period, once a charge row has been deleted.

use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_domain::{
    CreatorId, Currency, DunningExhausted, Email, FeeBps, Money, PlanId, PlanInterval, SettlementSchedule,
    SubscriptionId,
};
use holdfast_store::{
    ChargeStart, ConnectOptions, NewCreator, NewPlan, NewSubscription, PoolOptions, Pools, SharedStore,
};
use sqlx::Connection;

use crate::holdfast;

fn audit(url: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["subscriptions", "audit"];
    all.extend_from_slice(args);
    let output = holdfast(&all, &[("HOLDFAST_DATABASE__URL", url)], Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code(), format!("{stdout}{stderr}"))
}

async fn store(url: &str) -> SharedStore {
    let pool = PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
    };
    let store = holdfast_store::connect(&ConnectOptions {
        url: url.to_owned(),
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        lock_timeout: Duration::from_secs(5),
        pgbouncer: holdfast_store::PgBouncer::Off,
        pools: Pools {
            read: pool,
            write: pool,
            worker: pool,
        },
    })
    .await
    .expect("store");
    store.migrate().await.expect("migrate");
    store
}

/// A monthly subscription started two months ago with its three periods paid.
async fn paid_subscription(store: &SharedStore, start: DateTime<Utc>) -> (SubscriptionId, Vec<String>) {
    let subs = store.subscriptions();
    let creator = CreatorId::generate();
    subs.create_creator(&NewCreator {
        id: creator.clone(),
        name: "Ada".into(),
        fee_bps: FeeBps::parse(1000).expect("fee"),
        settlement: SettlementSchedule::default(),
        created_at: start,
    })
    .await
    .expect("creator");
    let plan = PlanId::generate();
    subs.create_plan(&NewPlan {
        id: plan.clone(),
        creator_id: creator,
        name: "Monthly".into(),
        price: Money::new(900, Currency::USD).expect("price"),
        interval: PlanInterval::parse("month", 1).expect("interval"),
        trial_days: 0,
        on_dunning_exhausted: DunningExhausted::Canceled,
        created_at: start,
    })
    .await
    .expect("plan");
    let id = SubscriptionId::generate();
    subs.create_subscription(&NewSubscription {
        id: id.clone(),
        plan_id: plan,
        email: Email::parse("ada@example.com").expect("email"),
        name: None,
        payment_method: "pm_card_visa".into(),
        test_clock: None,
        now: start,
    })
    .await
    .expect("subscription");
    let mut charges = Vec::new();
    for period in 0..3 {
        let ChargeStart::Charge { charge, .. } = subs.begin_charge(&id, period, Utc::now()).await.expect("begin")
        else {
            panic!("period {period} is due");
        };
        subs.record_charge_succeeded(&charge.id, &format!("pi_{period}"), Utc::now())
            .await
            .expect("paid");
        charges.push(charge.id.to_string());
    }
    (id, charges)
}

#[tokio::test]
async fn the_audit_exits_1_on_a_deleted_charge_and_names_it() {
    let dir = std::env::temp_dir().join(format!("holdfast-audit-cli-{}", std::process::id()));
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let store = store(&url).await;
    let start = Utc::now() - chrono::TimeDelta::days(65);
    let (id, charges) = paid_subscription(&store, start).await;

    let (code, out) = audit(&url, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 under-charge(s), 0 double charge(s)"), "{out}");

    let mut db = sqlx::SqliteConnection::connect(&url).await.expect("connect");
    for statement in [
        "DELETE FROM ledger_entries WHERE charge_id = $1",
        "DELETE FROM subscription_charges WHERE id = $1",
    ] {
        sqlx::query(statement)
            .bind(&charges[1])
            .execute(&mut db)
            .await
            .expect("delete");
    }
    let (code, out) = audit(&url, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("under-charge: {id} period 1")), "{out}");
    assert!(out.contains("1 under-charge(s)"), "{out}");

    let (code, out) = audit(&url, &["--json"]);
    assert_eq!(code, Some(1), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["findings"][0]["kind"], "under_charge");

    // Only the periods since the last one's start: the deleted charge is older.
    let since = (Utc::now() - chrono::TimeDelta::days(5)).to_rfc3339();
    let (code, out) = audit(&url, &["--since", &since]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = audit(&url, &["--since", "yesterday"]);
    assert_eq!(code, Some(2), "a bad --since is a usage error: {out}");
    let _ = std::fs::remove_dir_all(dir);
}
