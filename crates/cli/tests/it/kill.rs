//! `kill -9` in the middle of a fulfillment: the worker dies while its
//! warehouse call is in flight, a second process takes the job once the lease
//! runs out, and the order ships exactly once with the shipment's tracking id.
//!
//! The sandbox warehouse finishes a call whose client has gone, so the dead
//! process's shipment does get created: only the idempotency key stops the
//! second process from creating another.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use holdfast_domain::{Address, Currency, Email, Money, OrderId, OrderStatus, Quantity, Sku, address};
use holdfast_sandbox::{SandboxWarehouse, WarehouseConfig};
use holdfast_service::Config;
use holdfast_service::config::Secret;
use holdfast_service::workers::fulfillment;
use holdfast_store::{JobTemplate, NewOrder, NewProduct, SharedStore, StatusChange};
use tokio::sync::oneshot;

use crate::served::{Deadline, Served};
use holdfast_testkit::postgres_admin_url;

/// Long enough that the first process is surely killed while its call is
/// still waiting in the warehouse.
const WAREHOUSE_LATENCY: Duration = Duration::from_millis(1500);

/// Short, so the second process gets the job soon after the first one dies.
const VISIBILITY_TIMEOUT_S: u64 = 2;

/// Start-up, the lease running out and the shipment fit well within this.
const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_killed_worker_ships_the_order_exactly_once() {
    let dir = std::env::temp_dir().join(format!("holdfast-kill-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}/holdfast.db", dir.display());
    let outcome = tokio::spawn(killed_worker_ships_once(url, dir.clone())).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_worker_ships_the_order_exactly_once() {
    let Some(admin) = postgres_admin_url().await else {
        return;
    };
    let url = holdfast_store::scratch::create_database(&admin, "kill")
        .await
        .expect("scratch database");
    let dir = std::env::temp_dir().join(format!("holdfast-kill-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Run in a task so the scratch database is dropped even when it panics.
    let outcome = tokio::spawn(killed_worker_ships_once(url.clone(), dir.clone())).await;
    let _ = std::fs::remove_dir_all(&dir);
    holdfast_store::scratch::drop_database(&admin, &url)
        .await
        .expect("drop scratch database");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn killed_worker_ships_once(database_url: String, dir: PathBuf) {
    let config = test_config(&database_url);
    let store = open_store(&config).await;
    let order_id = paid_order(&store, &config.queues.fulfillment.template(fulfillment::QUEUE)).await;
    let warehouse = SandboxWarehouse::new(WarehouseConfig {
        latency: WAREHOUSE_LATENCY,
        ..WarehouseConfig::default()
    });
    let (warehouse_url, _stop_warehouse) = serve_warehouse(&warehouse).await;
    let node = |name: &str| worker_node(name, &database_url, &warehouse_url, &dir);

    let mut first = node("a");
    let waiting = Deadline::start("the first process calls the warehouse", LIMIT);
    while warehouse.stats().api_calls == 0 {
        first.assert_running();
        waiting.tick().await;
    }
    // The call is now waiting out the warehouse's latency: the shipment is
    // about to exist, but the order is still `paid` and nobody will hear of it.
    first.kill_9();
    let order = get_order(&store, &order_id).await;
    assert_eq!(order.status, OrderStatus::Paid, "killed mid-call: {order:?}");
    assert_eq!(order.tracking_number, None);

    warehouse.set_latency(Duration::ZERO);
    let mut second = node("b");
    let waiting = Deadline::start("the second process ships the order and completes its job", LIMIT);
    while get_order(&store, &order_id).await.status != OrderStatus::Shipped || !fulfillment_queue_is_empty(&store).await
    {
        second.assert_running();
        waiting.tick().await;
    }

    assert_shipped_once(&store, &warehouse, &order_id).await;
    drop(second);
}

async fn assert_shipped_once(store: &SharedStore, warehouse: &SandboxWarehouse, order_id: &OrderId) {
    let stats = warehouse.stats();
    assert_eq!(stats.shipments_created, 1, "{stats:?}");
    let shipments = warehouse.shipments();
    assert_eq!(shipments.len(), 1, "{shipments:?}");
    assert_eq!(shipments[0].order_id, order_id.as_str());
    let order = get_order(store, order_id).await;
    assert_eq!(
        order.tracking_number.as_deref(),
        Some(shipments[0].tracking_id.as_str()),
        "{order:?}"
    );
    let events = store.order_events(order_id).await.expect("timeline");
    let entered = |status: OrderStatus| events.iter().filter(|event| event.to == status).count();
    assert_eq!(entered(OrderStatus::Shipped), 1, "{events:?}");
    // The order entered `fulfilling` once, when the second process got the shipment.
    assert_eq!(entered(OrderStatus::Fulfilling), 1, "{events:?}");
}

/// A `holdfast serve --role workers` process on `database_url`.
fn worker_node(name: &str, database_url: &str, warehouse_url: &str, dir: &Path) -> Served {
    let env = [
        ("HOLDFAST_DATABASE__URL", database_url.to_owned()),
        ("HOLDFAST_WAREHOUSE__URL", warehouse_url.to_owned()),
        (
            "HOLDFAST_QUEUES__FULFILLMENT__VISIBILITY_TIMEOUT_S",
            VISIBILITY_TIMEOUT_S.to_string(),
        ),
        ("HOLDFAST_WORKERS__POLL_INTERVAL_MS", "100".to_owned()),
        ("HOLDFAST_LOG__LEVEL", "info".to_owned()),
    ];
    Served::start(name, &["--role", "workers"], &env, dir)
}

async fn serve_warehouse(warehouse: &SandboxWarehouse) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(warehouse.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

fn test_config(database_url: &str) -> Config {
    let mut config = Config::defaults().expect("defaults");
    config.database.url = Secret::new(database_url);
    // The visibility timeout is stored with each job, so the job this test
    // enqueues must carry the short one, not the default.
    config.queues.fulfillment.visibility_timeout_s = VISIBILITY_TIMEOUT_S;
    config
}

async fn open_store(config: &Config) -> SharedStore {
    let store = holdfast_store::connect(&config.connect_options())
        .await
        .expect("database reachable");
    store.migrate().await.expect("migrations");
    store
}

/// A paid order of one unit, with its fulfillment job enqueued in the same
/// transaction, as the payment inbox leaves it.
async fn paid_order(store: &SharedStore, template: &JobTemplate) -> OrderId {
    let now = Utc::now();
    let sku = Sku::parse("KILL-TENT").expect("sku");
    let price = Money::new(25_000, Currency::USD).expect("price");
    store
        .create_product(&NewProduct {
            sku: sku.clone(),
            name: "Tent".into(),
            price,
            on_hand: 5,
            created_at: now,
        })
        .await
        .expect("product");
    let order = NewOrder {
        id: OrderId::generate(),
        email: Email::parse("kill@example.com").expect("email"),
        name: None,
        address: Address::parse(address::AddressFields {
            line1: "1 Crash Lane",
            city: "Bend",
            postal_code: "97701",
            country: "US",
            ..Default::default()
        })
        .expect("address"),
        lines: vec![(sku, Quantity::parse(1).expect("qty"), price)],
        total: price,
        payment_method: "pm_card_visa".into(),
        status: OrderStatus::PendingPayment,
        expires_at: now + chrono::Duration::minutes(15),
        now,
        cause: "test".into(),
    };
    let placed = store.place_order(&order).await.expect("order placed");
    let paid = StatusChange::new(placed.id.clone(), OrderStatus::Paid, "test: payment succeeded", now)
        .enqueue(fulfillment::job(template, &placed.id, now));
    store.transition_order(&paid).await.expect("paid");
    placed.id
}

async fn get_order(store: &SharedStore, order_id: &OrderId) -> holdfast_store::Order {
    store
        .get_order(order_id)
        .await
        .expect("read order")
        .expect("order exists")
}

async fn fulfillment_queue_is_empty(store: &SharedStore) -> bool {
    let stats = store.queue().stats(Utc::now()).await.expect("queue stats");
    stats
        .iter()
        .filter(|queue| queue.queue == fulfillment::QUEUE)
        .all(|queue| queue.ready == 0 && queue.in_flight == 0 && queue.delayed == 0 && queue.dead == 0)
}

/// A name no other run uses, for the temporary directory.
fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}
