//! The two-node topology working normally: the order node keeps the
//! catalogue and prices, the inventory node the stock. Products and warehouse
//! syncs reach the inventory node through the order node; checkout holds
//! stock there; payment, failure (expiry and rejection alike) and shipment reach the hold through
//! the order node's outbox and its `inventory` queue.

use std::time::{Duration, Instant};

use holdfast_domain::Sku;
use holdfast_drills::harness::Database;
use holdfast_drills::load::{Driver, order_body};
use holdfast_drills::topology::RemoteInventory;
use serde_json::json;

use crate::support::{TestResult, postgres_admin_url, within};

async fn level(topology: &RemoteInventory, sku: &str) -> Result<(i64, i64, i64), Box<dyn std::error::Error>> {
    let sku = Sku::parse(sku).map_err(|e| e.message)?;
    let level = topology.inventory.store.get_inventory(&sku).await?.ok_or("no stock")?;
    Ok((level.on_hand, level.reserved, level.available))
}

async fn wait_for(shop: &Driver, order_id: &str, status: &str) -> TestResult {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = shop.get(&format!("/api/v1/orders/{order_id}")).await?;
        if answer.body["status"] == status {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("order {order_id} never reached {status}: {}", answer.body).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the inventory node shows `expected` (on_hand, reserved, available).
async fn wait_for_level(topology: &RemoteInventory, sku: &str, expected: (i64, i64, i64)) -> TestResult {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let now = level(topology, sku).await?;
        if now == expected {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("{sku} stayed at {now:?}, expected {expected:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(database: Database) -> TestResult {
    let topology = RemoteInventory::start(&database, |_| {}).await?;
    let result = scenario(&topology).await;
    topology.stop().await?;
    result
}

async fn scenario(topology: &RemoteInventory) -> TestResult {
    let admin = Driver::new(&topology.orders.base_url, &topology.orders.admin_key)?;
    admin.create_product("SAIL", 12_000, 10).await?;
    // The order node keeps no stock of its own; the inventory node has it all.
    assert_eq!(level(topology, "SAIL").await?, (10, 0, 10));
    let read = admin.get("/api/v1/inventory/SAIL").await?;
    assert_eq!(
        (read.status, &read.body["available"]),
        (200, &json!(10)),
        "{}",
        read.body
    );
    let shop = admin.with_key(&admin.storefront_key().await?);
    let checkout = |n: &str, qty: u32, method: &str| {
        let body = order_body(&[("SAIL".into(), qty)], &format!("{n}@example.com"), method);
        let shop = shop.clone();
        let key = format!("{n}-{}", uuid::Uuid::now_v7().simple());
        async move { shop.post("/api/v1/orders", &body, Some(&key)).await }
    };

    // Paid: the hold is committed, then consumed when the order ships.
    let paid = checkout("paid", 2, "pm_card_visa").await?;
    assert_eq!(paid.status, 201, "{}", paid.body);
    let paid_id = paid.body["order_id"].as_str().ok_or("order id")?.to_owned();
    wait_for(&shop, &paid_id, "shipped").await?;
    wait_for_level(topology, "SAIL", (8, 0, 8)).await?;

    // Declined: payment_failed releases the hold.
    let declined = checkout("declined", 3, "pm_card_declined").await?;
    assert_eq!(declined.status, 201, "{}", declined.body);
    let declined_id = declined.body["order_id"].as_str().ok_or("order id")?.to_owned();
    wait_for(&shop, &declined_id, "payment_failed").await?;
    wait_for_level(topology, "SAIL", (8, 0, 8)).await?;

    // More than the inventory node has: 409 with the SKU, nothing held.
    let greedy = checkout("greedy", 9, "pm_card_visa").await?;
    assert_eq!(greedy.status, 409, "{}", greedy.body);
    assert_eq!(greedy.body["code"], "out_of_stock", "{}", greedy.body);
    assert_eq!(greedy.body["stock"]["sku"], "SAIL", "{}", greedy.body);

    // A warehouse sync reaches the inventory node through the order node.
    let sync = admin
        .post(
            "/api/v1/inventory/sync",
            &json!({"batch_id": "count-1", "levels": [{"sku": "SAIL", "on_hand": 20}]}),
            None,
        )
        .await?;
    assert_eq!(sync.status, 200, "{}", sync.body);
    assert_eq!(sync.body["updated"], json!(["SAIL"]), "{}", sync.body);
    wait_for_level(topology, "SAIL", (20, 0, 20)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_inventory_sqlite() -> TestResult {
    within(Duration::from_secs(120), run(Database::Sqlite)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_inventory_postgres() -> TestResult {
    let Some(admin_url) = postgres_admin_url().await else {
        return Ok(());
    };
    within(Duration::from_secs(120), run(Database::Postgres { admin_url })).await
}
