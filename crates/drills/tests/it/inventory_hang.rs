//! A hung inventory node, for real: the order node calls a separate inventory node through
//! the fault proxy, and the inventory node hangs (accepts, never answers).
//! Checkout must not hang with it: every request ends within its deadline,
//! the breaker opens and later calls fail fast, reads stay fast, and after
//! the heal half-open probes close the breaker, checkout succeeds again and
//! the orders taken meanwhile complete with exactly the stock they hold.

use std::time::{Duration, Instant};

use holdfast_domain::OrderStatus;
use holdfast_drills::harness::Database;
use holdfast_drills::topology::RemoteInventory;
use holdfast_resilience::OnUnavailable;
use holdfast_service::config::Config;
use serde_json::{Value, json};

use crate::support::{TestResult, postgres_admin_url, within};

/// The order node's whole budget for one request.
const REQUEST_DEADLINE_MS: u64 = 3000;
/// The inventory dependency's budget per call.
const INVENTORY_DEADLINE_MS: u64 = 400;
/// Slack for a loaded 2-core machine on top of a deadline.
const MARGIN_MS: u64 = 700;
const BUYERS: usize = 200;
const ON_HAND: i64 = 1000;

fn tighten(config: &mut Config) {
    config.server.request_deadline_ms = REQUEST_DEADLINE_MS;
    config.database.statement_timeout_ms = 2000;
    let inventory = &mut config.dependencies.inventory;
    inventory.deadline_ms = INVENTORY_DEADLINE_MS;
    inventory.max_concurrency = 256;
    inventory.breaker.min_calls = 20;
    inventory.breaker.failure_rate = 0.5;
    inventory.breaker.slow_call_ms = 300;
    inventory.breaker.open_s = 2;
    inventory.breaker.half_open_probes = 3;
    inventory.on_unavailable = OnUnavailable::Queue;
    config.queues.checkout.concurrency = 16;
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
        let response = request.bearer_auth(&self.key).send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> Result<(u16, Value), reqwest::Error> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn checkout(&self, sku: &str) -> Result<(u16, Value, Duration), reqwest::Error> {
        let body = json!({
            "items": [{"sku": sku, "qty": 1}],
            "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
            "shipping_address": {"line1": "1 Main St", "city": "Portland", "postal_code": "97201", "country": "US"},
            "payment_method": "pm_card_visa",
        });
        let started = Instant::now();
        let request = self
            .http
            .post(format!("{}/api/v1/orders", self.base))
            .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
            .json(&body);
        let (status, body) = self.send(request).await?;
        Ok((status, body, started.elapsed()))
    }

    async fn breaker(&self) -> Result<String, Box<dyn std::error::Error>> {
        let (status, body) = self.get("/api/v1/ops/breakers").await?;
        assert_eq!(status, 200, "{body}");
        let inventory = body["data"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["name"] == "inventory"))
            .ok_or("no inventory breaker")?;
        Ok(inventory["state"].as_str().unwrap_or_default().to_owned())
    }
}

async fn run(database: Database) -> TestResult {
    let topology = RemoteInventory::start(&database, tighten).await?;
    let result = scenario(&topology).await;
    topology.stop().await?;
    result
}

async fn scenario(topology: &RemoteInventory) -> TestResult {
    let http = reqwest::Client::builder().pool_max_idle_per_host(BUYERS).build()?;
    let orders = Api {
        http: http.clone(),
        base: topology.orders.base_url.clone(),
        key: topology.orders.admin_key.clone(),
    };
    let sku = "HANG-1";
    let product = json!({"sku": sku, "name": "Hung", "price": {"amount": 1500, "currency": "USD"}, "on_hand": ON_HAND});
    let (status, body) = orders.post("/api/v1/products", &product).await?;
    assert_eq!(status, 201, "{body}");
    // Stock lives on the inventory node; the order node reads it through.
    let (status, level) = orders.get(&format!("/api/v1/inventory/{sku}")).await?;
    assert_eq!((status, level["available"].as_i64()), (200, Some(ON_HAND)), "{level}");

    let (status, before, _) = orders.checkout(sku).await?;
    assert_eq!(status, 201, "a healthy checkout holds stock remotely: {before}");
    let first_order = before["order_id"].as_str().ok_or("order id")?.to_owned();
    let (status, _) = orders.get(&format!("/api/v1/orders/{first_order}")).await?;
    assert_eq!(status, 200);

    topology.hang()?;
    let buyers: Vec<_> = (0..BUYERS)
        .map(|_| {
            let orders = Api {
                http: http.clone(),
                base: orders.base.clone(),
                key: orders.key.clone(),
            };
            tokio::spawn(async move { orders.checkout(sku).await })
        })
        .collect();
    // Reads never touch inventory: they stay fast while checkouts wait on it.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _) = orders.get(&format!("/api/v1/orders/{first_order}")).await?;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(MARGIN_MS),
            "GET took {:?} while inventory hung",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut accepted = Vec::new();
    let mut slowest = Duration::ZERO;
    for buyer in buyers {
        let (status, body, took) = buyer.await??;
        slowest = slowest.max(took);
        match status {
            202 => {
                assert_eq!(body["status"], "accepted", "{body}");
                accepted.push(body["order_id"].as_str().ok_or("order id")?.to_owned());
            }
            503 => assert!(
                matches!(body["code"].as_str(), Some("dependency_unavailable" | "overloaded")),
                "{body}"
            ),
            other => panic!("a checkout against a hung inventory answered {other}: {body}"),
        }
    }
    assert!(
        slowest < Duration::from_millis(REQUEST_DEADLINE_MS + MARGIN_MS),
        "the slowest checkout took {slowest:?}; the deadline is {REQUEST_DEADLINE_MS} ms"
    );
    eprintln!(
        "{BUYERS} checkouts against a hung inventory: {} accepted, slowest {slowest:?}",
        accepted.len()
    );
    assert!(!accepted.is_empty(), "queue mode takes orders while inventory hangs");
    assert_eq!(
        orders.breaker().await?,
        "open",
        "200 hung calls open the inventory breaker"
    );

    // Open: no call waits on the hung node any more.
    let (status, body, took) = orders.checkout(sku).await?;
    assert_eq!(status, 202, "{body}");
    accepted.push(body["order_id"].as_str().ok_or("order id")?.to_owned());
    assert!(
        took < Duration::from_millis(INVENTORY_DEADLINE_MS),
        "with the breaker open a checkout took {took:?}"
    );

    topology.heal();
    // After open_s, half-open probes reach the healed node and close it.
    let healed_by = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body, _) = orders.checkout(sku).await?;
        if status == 201 {
            break;
        }
        assert_eq!(status, 202, "{body}");
        accepted.push(body["order_id"].as_str().ok_or("order id")?.to_owned());
        assert!(Instant::now() < healed_by, "checkout never succeeded after the heal");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed_by = Instant::now() + Duration::from_secs(10);
    while orders.breaker().await? != "closed" {
        assert!(Instant::now() < closed_by, "the breaker did not close after the heal");
        let (status, body, _) = orders.checkout(sku).await?;
        assert_eq!(status, 201, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every order taken meanwhile leaves `accepted`: a worker holds its
    // stock on the inventory node (the same hold if a hung call had made
    // it) and it goes on to payment.
    let settled_by = Instant::now() + Duration::from_secs(90);
    for order_id in &accepted {
        loop {
            let (status, body) = orders.get(&format!("/api/v1/orders/{order_id}")).await?;
            assert_eq!(status, 200, "{body}");
            if matches!(body["status"].as_str(), Some("paid" | "fulfilling" | "shipped")) {
                break;
            }
            assert!(
                Instant::now() < settled_by,
                "order {order_id} taken during the hang never completed: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The inventory node holds exactly one unit per order that holds stock
    // and has given up one per shipped order: none lost, none held twice
    // (hung calls that did reach it included). Fulfillment keeps moving
    // orders along, so both sides are read until they agree.
    let sku_id = holdfast_domain::Sku::parse(sku).map_err(|e| e.message)?;
    let settled_by = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = topology.orders.store.order_counts().await?;
        let count =
            |wanted: &[OrderStatus]| -> i64 { counts.iter().filter(|(s, _)| wanted.contains(s)).map(|(_, n)| n).sum() };
        let holding = count(&[OrderStatus::PendingPayment, OrderStatus::Paid, OrderStatus::Fulfilling]);
        let shipped = count(&[OrderStatus::Shipped]);
        let level = topology
            .inventory
            .store
            .get_inventory(&sku_id)
            .await?
            .ok_or("no stock")?;
        assert_eq!(level.on_hand, level.available + level.reserved, "{level:?}");
        if level.reserved == holding && level.on_hand + shipped == ON_HAND {
            break;
        }
        assert!(
            Instant::now() < settled_by,
            "inventory {level:?} does not match {holding} orders holding stock and {shipped} shipped"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_inventory_sqlite() -> TestResult {
    within(Duration::from_secs(240), run(Database::Sqlite)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_inventory_postgres() -> TestResult {
    let Some(admin_url) = postgres_admin_url().await else {
        return Ok(());
    };
    within(Duration::from_secs(240), run(Database::Postgres { admin_url })).await
}
