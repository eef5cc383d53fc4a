//! The drill's invariant checker against a real rig: an order deleted from
//! the database behind the service's back is reported lost, and a second
//! successful charge made at the provider for an order already paid is
//! reported as a double charge, each by the order's id.

use std::path::PathBuf;
use std::time::Duration;

use holdfast_drills::coldpath;
use holdfast_drills::drill::invariants;
use holdfast_drills::drill::journal::{InvariantResult, InvariantStatus, Journal};
use holdfast_drills::drill::rig::{DatabaseChoice, Rig, RigOptions};
use holdfast_drills::drill::scenario::Scenario;
use holdfast_drills::drill::traffic::{self, Traffic};
use holdfast_drills::load::Driver;
use sqlx::Connection;

const SCENARIO: &str = r#"
name = "invariant-check"
summary = "No fault: a short load, then the evidence is tampered with."
incident = "The checker must see what the service did not."
[load]
checkouts_per_s = 20
reads_per_s = 0
declined_share = 0.2
[phases]
baseline_s = 1
fault_s = 1
recovery_s = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_reports_a_lost_order_and_a_double_charge() {
    let scenario = Scenario::parse(SCENARIO, "test").expect("scenario");
    let dir = std::env::temp_dir().join(format!("holdfast-invariants-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let journal = Journal::create(&dir.join("journal.jsonl")).expect("journal");
    let options = RigOptions {
        holdfast: PathBuf::from(env!("CARGO_BIN_EXE_holdfast")),
        database: DatabaseChoice::Sqlite,
        overrides: vec![("server.rate_limit_per_key_per_s".into(), "0".into())],
        logs: dir.join("logs"),
    };
    let mut rig = Rig::start(&scenario, &options, &journal).await.expect("rig");
    // Stop the rig whatever the checks do; assert afterwards.
    let checked = tamper_and_check(&scenario, &rig, &journal).await;
    rig.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (results, lost, doubled) = checked.expect("the checks ran");
    let find = |name: &str| -> &InvariantResult {
        results
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} in {results:#?}"))
    };
    let lost_check = find("no_lost_orders");
    assert_eq!(lost_check.status, InvariantStatus::Broken, "{lost_check:#?}");
    assert!(lost_check.observed.starts_with("1 of "), "{lost_check:#?}");
    assert!(lost_check.samples.iter().any(|s| s.contains(&lost)), "{lost_check:#?}");
    let charge_check = find("no_double_charge");
    assert_eq!(charge_check.status, InvariantStatus::Broken, "{charge_check:#?}");
    assert!(
        charge_check
            .samples
            .iter()
            .any(|s| s.contains(&doubled) && s.contains("charged 2 times")),
        "{charge_check:#?}"
    );
}

type Checked = Result<(Vec<InvariantResult>, String, String), Box<dyn std::error::Error>>;

/// A short load, then: one settled order deleted from the database, and a
/// second charge for another at the provider, as a buggy retry without an
/// idempotency key would make.
async fn tamper_and_check(scenario: &Scenario, rig: &Rig, journal: &Journal) -> Checked {
    let admin = rig.orders[0].admin()?;
    let catalogue = traffic::prepare_catalogue(&admin, &scenario.load).await?;
    let shop = Driver::new(&rig.orders[0].base_url, &admin.storefront_key().await?)?;
    let load = Traffic::start(vec![shop], &scenario.load, &catalogue, 7, journal);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acked = load.stop().await;
    assert!(acked.len() >= 20, "{} orders acknowledged", acked.len());

    let config = rig.orders_config()?;
    let store = holdfast_store::connect(&config.connect_options()).await?;
    let since = std::time::Instant::now();
    let receiver = rig.partner.as_ref().map(|p| p.receiver.clone()).unwrap_or_default();
    let drained = coldpath::wait(&store, &receiver, "partner", since, since + Duration::from_secs(30)).await?;
    assert!(drained.in_time, "the cold path did not drain");

    let orders = coldpath::orders_with_timelines(&store).await?;
    let status_of = |wanted: &str| {
        orders
            .iter()
            .find(|(o, _)| o.status.as_str() == wanted && acked.iter().any(|a| a.order_id == o.id.as_str()))
            .map(|(o, _)| o.id.to_string())
    };
    // A declined order holds no stock, so deleting it breaks nothing but the
    // order itself; a shipped one has a succeeded intent to double.
    let lost = status_of("payment_failed").ok_or("no declined order in the load")?;
    let doubled = status_of("shipped").ok_or("no shipped order in the load")?;

    let mut db = sqlx::SqliteConnection::connect(&rig.orders[0].database_url).await?;
    for statement in [
        "DELETE FROM stock_reservations WHERE order_id = ?",
        "DELETE FROM order_events WHERE order_id = ?",
        "DELETE FROM orders WHERE id = ?",
    ] {
        sqlx::query(statement).bind(&lost).execute(&mut db).await?;
    }
    db.close().await?;

    let form = [
        ("amount", "1000".to_owned()),
        ("currency", "usd".to_owned()),
        ("payment_method", "pm_card_visa".to_owned()),
        ("confirm", "true".to_owned()),
        ("metadata[order_id]", doubled.clone()),
    ];
    let charged = reqwest::Client::new()
        .post(format!("{}/v1/payment_intents", rig.payments_url))
        .bearer_auth("sk_test_second_charge")
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .form(&form)
        .send()
        .await?;
    assert!(charged.status().is_success(), "{}", charged.text().await?);
    // The sandbox settles the intent (succeeded) shortly after it is created.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let evidence = invariants::gather(rig, &store, acked, &catalogue, &admin, true).await?;
    Ok((invariants::check(&evidence, scenario), lost, doubled))
}
