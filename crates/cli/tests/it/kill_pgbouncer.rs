//! `kill -9` of `holdfast serve` under checkout load through PgBouncer in
//! transaction pooling mode: every order the process acknowledged (201 or
//! 202) is in the database afterwards, stock adds up, and a second process
//! answers each acknowledged idempotency key with the same order.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use holdfast_domain::OrderId;
use holdfast_drills::load::{Driver, order_body};
use holdfast_service::Config;
use holdfast_service::config::Secret;
use holdfast_store::PgBouncer;
use holdfast_store::scratch::{PgBouncerSettings, ScratchPgBouncer};
use tokio::sync::Mutex;

use crate::free_port;
use crate::served::{Deadline, Served};
use holdfast_testkit::postgres_admin_url;

const ON_HAND: i64 = 100_000;
const CLIENTS: usize = 8;
/// Acknowledged orders before the kill.
const BEFORE_KILL: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_under_load_through_pgbouncer_loses_no_acknowledged_order() {
    let Some(admin) = postgres_admin_url().await else {
        return;
    };
    if !ScratchPgBouncer::installed() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("pgbouncer is not installed (CI=true: a test that cannot get its service fails)");
        }
        eprintln!("skipping: pgbouncer is not installed");
        return;
    }
    let bouncer = tokio::task::block_in_place(|| {
        ScratchPgBouncer::start(&admin, &PgBouncerSettings::default()).expect("pgbouncer starts")
    });
    let direct = holdfast_store::scratch::create_database(&admin, "killpgb")
        .await
        .expect("scratch database");
    let through = bouncer.url_for(&direct).expect("url through pgbouncer");
    let dir = std::env::temp_dir().join(format!("holdfast-kill-pgb-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let outcome = tokio::spawn(acknowledged_orders_survive(through, dir.clone())).await;
    let _ = std::fs::remove_dir_all(&dir);
    holdfast_store::scratch::drop_database(&admin, &direct)
        .await
        .expect("drop scratch database");
    drop(bouncer);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn acknowledged_orders_survive(database_url: String, dir: std::path::PathBuf) {
    let admin_key = holdfast_service::http::auth::generate_key();
    let mut first = node("a", &database_url, &admin_key, &dir);
    let admin = ready(&mut first, &admin_key).await;
    admin.create_product("KILL-PGB", 1_000, ON_HAND).await.expect("product");
    let shop_key = admin.storefront_key().await.expect("storefront key");
    let shop = admin.with_key(&shop_key);

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(checkouts(shop.clone(), client, acked.clone(), stop.clone())))
        .collect();
    let started = Instant::now();
    while acked.lock().await.len() < BEFORE_KILL {
        first.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too few orders before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Mid-load: requests are in flight, transactions open in PgBouncer.
    first.kill_9();
    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.await.expect("client task");
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= BEFORE_KILL);

    let mut config = Config::defaults().expect("defaults");
    config.database.url = Secret::new(database_url.clone());
    config.database.pgbouncer = PgBouncer::Transaction;
    let store = holdfast_store::connect(&config.connect_options())
        .await
        .expect("store through pgbouncer");
    for (_, order_id) in &acked {
        let order = store
            .get_order(&OrderId::from_trusted(order_id.clone()))
            .await
            .expect("read order");
        assert!(order.is_some(), "acknowledged order {order_id} is gone");
    }
    let sku = holdfast_domain::Sku::parse("KILL-PGB").expect("sku");
    let level = store.get_inventory(&sku).await.expect("inventory").expect("sku exists");
    assert_eq!(level.on_hand, ON_HAND, "nothing ships in this test: {level:?}");
    assert_eq!(level.available + level.reserved, level.on_hand, "{level:?}");

    // The keys outlive the process: a retry of any acknowledged request
    // finds its order instead of placing another.
    let mut second = node("b", &database_url, &admin_key, &dir);
    let shop = ready(&mut second, &admin_key).await.with_key(&shop_key);
    let body = order_body(&[("KILL-PGB".into(), 1)], "kill@example.com", "pm_card_visa");
    for (key, order_id) in acked.iter().step_by(10) {
        let answer = shop.post("/api/v1/orders", &body, Some(key)).await.expect("retry");
        assert!(answer.status < 300, "retry of {key}: {} {}", answer.status, answer.raw);
        assert_eq!(
            answer.body["order_id"].as_str(),
            Some(order_id.as_str()),
            "retry of {key}"
        );
    }
    second.assert_running();
    eprintln!("killed with {} acknowledged orders; all present", acked.len());
}

/// One client's checkouts until `stop` or the process is gone; keeps each
/// acknowledged (idempotency key, order id).
async fn checkouts(shop: Driver, client: usize, acked: Arc<Mutex<Vec<(String, String)>>>, stop: Arc<AtomicBool>) {
    let body = order_body(&[("KILL-PGB".into(), 1)], "kill@example.com", "pm_card_visa");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("kill-pgb-{client}-{n}");
        let Ok(answer) = shop.post("/api/v1/orders", &body, Some(&key)).await else {
            // The process is gone: this request was never acknowledged.
            return;
        };
        if matches!(answer.status, 201 | 202)
            && let Some(id) = answer.body["order_id"].as_str()
        {
            acked.lock().await.push((key, id.to_owned()));
        } else {
            // Shed load is an honest answer; anything else is a bug.
            assert_eq!(answer.status, 503, "checkout {key}: {}", answer.raw);
        }
    }
}

/// A `holdfast serve` process through PgBouncer.
fn node(name: &str, database_url: &str, admin_key: &str, dir: &Path) -> Served {
    let env = [
        ("HOLDFAST_DATABASE__URL", database_url.to_owned()),
        ("HOLDFAST_DATABASE__PGBOUNCER", "transaction".to_owned()),
        ("HOLDFAST_BOOTSTRAP_ADMIN_KEY", admin_key.to_owned()),
        // Nothing ships, so stock only moves by checkout.
        ("HOLDFAST_WAREHOUSE__URL", "http://127.0.0.1:9".to_owned()),
        ("HOLDFAST_LOG__LEVEL", "warn".to_owned()),
    ];
    Served::start(name, &[], &env, dir)
}

/// The admin API of `node`, once it is ready.
async fn ready(node: &mut Served, admin_key: &str) -> Driver {
    let admin = Driver::new(node.base_url(), admin_key).expect("driver");
    let waiting = Deadline::start("the node is ready", Duration::from_secs(30));
    loop {
        node.assert_running();
        if admin.get("/readyz").await.is_ok_and(|a| a.status == 200) {
            return admin;
        }
        waiting.tick().await;
    }
}
