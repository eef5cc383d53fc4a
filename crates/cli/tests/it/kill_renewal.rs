//! `kill -9` in the middle of a renewal charge: a node's payment worker dies
//! while its call to the provider is in flight, a second node takes the job
//! once the lease runs out, and the period is charged exactly once, with one
//! intent at the provider.
//!
//! Both nodes are real `holdfast serve` processes over one database, with the
//! subscription on a test clock and the sandbox provider in this process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_sandbox::{PaymentsConfig, SandboxPayments};
use holdfast_testkit::postgres_admin_url;
use serde_json::{Value, json};

use crate::served::{Deadline, Served};

const ADMIN_KEY: &str = "hf_kill_renewal_test_admin_key_01234567";

/// Long enough that the first node is surely killed while its call is still
/// waiting in the provider, shorter than the lease.
const PROVIDER_LATENCY: Duration = Duration::from_millis(1500);

/// Short, so the second node gets the job soon after the first one dies.
/// The job carries the lease it was enqueued with, so both nodes use it.
const VISIBILITY_TIMEOUT_S: u64 = 3;

/// Start-up, the lease running out and the charge fit well within this.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_node_killed_mid_renewal_charges_the_period_once() {
    let dir = scratch_dir();
    let url = format!("sqlite://{}/holdfast.db", dir.display());
    let outcome = tokio::spawn(killed_renewal_charges_once(url, dir.clone())).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_node_killed_mid_renewal_charges_the_period_once() {
    let Some(admin) = postgres_admin_url().await else {
        return;
    };
    let url = holdfast_store::scratch::create_database(&admin, "killrenew")
        .await
        .expect("scratch database");
    let dir = scratch_dir();
    // Run in a task so the scratch database is dropped even when it panics.
    let outcome = tokio::spawn(killed_renewal_charges_once(url.clone(), dir.clone())).await;
    let _ = std::fs::remove_dir_all(&dir);
    holdfast_store::scratch::drop_database(&admin, &url)
        .await
        .expect("drop scratch database");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn killed_renewal_charges_once(database_url: String, dir: PathBuf) {
    let sandbox = SandboxPayments::new(PaymentsConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let provider_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(sandbox.clone().serve(listener, std::future::pending()));
    let node = |name: &'static str| Node::spawn(name, &database_url, &provider_url, &dir);

    let mut first = node("a").await;
    let api = first.api();
    let creator = created(
        api.post("/api/v1/creators", json!({"name": "Ada's Workshop", "fee_bps": 1000}))
            .await,
    );
    let plan = created(
        api.post(
            "/api/v1/plans",
            json!({"creator_id": creator, "name": "Supporter", "price": {"amount": 900, "currency": "USD"},
                   "interval": "month", "interval_count": 1}),
        )
        .await,
    );
    let clock = created(
        api.post("/api/v1/test-clocks", json!({"frozen_time": "2026-01-31T12:00:00Z"}))
            .await,
    );
    let subscription = created(
        api.post_with_key(
            "/api/v1/subscriptions",
            json!({"plan_id": plan, "customer": {"email": "grace@example.com"},
                   "payment_method": "pm_card_visa", "test_clock": clock}),
            "kill-renewal-subscribe",
        )
        .await,
    );
    let waiting = Deadline::start("the first period is paid", LIMIT);
    while api.get(&format!("/api/v1/subscriptions/{subscription}")).await["status"] != "active" {
        first.assert_running();
        waiting.tick().await;
    }

    // The renewal: a month on, the first node charges period 1, slowly.
    sandbox.set_latency(PROVIDER_LATENCY);
    let calls_before = sandbox.stats().api_calls;
    let moved = api
        .post(
            &format!("/api/v1/test-clocks/{clock}/advance"),
            json!({"frozen_time": "2026-02-28T13:00:00Z"}),
        )
        .await;
    assert_eq!(moved.0, 200, "{}", moved.1);
    let waiting = Deadline::start("the first node calls the provider for the renewal", LIMIT);
    while sandbox.stats().api_calls == calls_before {
        first.assert_running();
        waiting.tick().await;
    }
    // The call is now waiting out the provider's latency: nobody will hear
    // its answer from this node.
    first.kill_9();
    sandbox.set_latency(Duration::ZERO);
    // The provider finishes the dead node's call: the renewal's intent exists,
    // and only the idempotency key can stop the second node making another.
    let waiting = Deadline::start("the provider creates the dead node's intent", LIMIT);
    while sandbox.stats().intents_created < 2 {
        waiting.tick().await;
    }

    let mut second = node("b").await;
    let api = second.api();
    let charges_path = format!("/api/v1/subscriptions/{subscription}/charges");
    let waiting = Deadline::start("the second node charges period 1 and the clock settles", LIMIT);
    loop {
        let charges = api.get(&charges_path).await;
        let renewed = succeeded_by_period(&charges).get(&1).copied().unwrap_or(0) > 0;
        let ready = api.get(&format!("/api/v1/test-clocks/{clock}")).await["status"] == "ready";
        if renewed && ready {
            break;
        }
        second.assert_running();
        waiting.tick().await;
    }

    let charges = api.get(&charges_path).await;
    assert_eq!(
        succeeded_by_period(&charges),
        [(0, 1), (1, 1)].into_iter().collect(),
        "one successful charge per period: {charges}"
    );
    let stats = sandbox.stats();
    assert_eq!(
        stats.intents_created, 2,
        "the provider saw one intent per period: {stats:?}"
    );
    drop(second);
}

/// Successful charges per period index.
fn succeeded_by_period(charges: &Value) -> std::collections::BTreeMap<u64, usize> {
    let mut by_period = std::collections::BTreeMap::new();
    for charge in charges["data"].as_array().into_iter().flatten() {
        if charge["status"] == "succeeded" {
            *by_period
                .entry(charge["period_index"].as_u64().expect("period_index"))
                .or_default() += 1;
        }
    }
    by_period
}

fn created((status, body): (u16, Value)) -> String {
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// The admin API of one node.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let answer = request.bearer_auth(ADMIN_KEY).send().await.expect("request");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn post_with_key(&self, path: &str, body: Value, key: &str) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("Idempotency-Key", key)
                .json(&body),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(self.http.get(format!("{}{path}", self.base))).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// A `holdfast serve` process (API and workers) with test clocks on, and
/// its API.
struct Node {
    process: Served,
}

impl Node {
    async fn spawn(name: &str, database_url: &str, provider_url: &str, dir: &Path) -> Self {
        let env = [
            ("HOLDFAST_DATABASE__URL", database_url.to_owned()),
            ("HOLDFAST_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY.to_owned()),
            ("HOLDFAST_PAYMENTS__URL", provider_url.to_owned()),
            ("HOLDFAST_SUBSCRIPTIONS__TEST_CLOCKS", "true".to_owned()),
            (
                "HOLDFAST_QUEUES__SUBSCRIPTION_PAYMENTS__VISIBILITY_TIMEOUT_S",
                VISIBILITY_TIMEOUT_S.to_string(),
            ),
            ("HOLDFAST_WORKERS__POLL_INTERVAL_MS", "100".to_owned()),
            ("HOLDFAST_SERVER__RATE_LIMIT_PER_KEY_PER_S", "0".to_owned()),
            ("HOLDFAST_LOG__LEVEL", "info".to_owned()),
        ];
        let mut node = Self {
            process: Served::start(name, &[], &env, dir),
        };
        let waiting = Deadline::start("the node is ready", LIMIT);
        let http = reqwest::Client::new();
        loop {
            let ready = http.get(format!("{}/readyz", node.process.base_url())).send().await;
            if ready.is_ok_and(|answer| answer.status().is_success()) {
                return node;
            }
            node.process.assert_running();
            waiting.tick().await;
        }
    }

    fn api(&self) -> Api {
        Api {
            base: self.process.base_url().to_owned(),
            http: reqwest::Client::new(),
        }
    }
}

impl std::ops::Deref for Node {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.process
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Served {
        &mut self.process
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-kill-renewal-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
