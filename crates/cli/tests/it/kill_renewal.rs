//! `kill -9` in the middle of a renewal charge: a node's payment worker dies
//! while its call to the provider is in flight, a second node takes the job
//! once the lease runs out, and the period is charged exactly once, with one
//! intent at the provider.
//!
//! Both nodes are real `holdfast serve` processes over one database, with the
//! subscription on a test clock and the sandbox provider in this process.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_sandbox::{PaymentsConfig, SandboxPayments};
use holdfast_testkit::postgres_admin_url;
use serde_json::{Value, json};

use crate::free_port;

const ADMIN_KEY: &str = "hf_kill_renewal_test_admin_key_01234567";

/// Long enough that the first node is surely killed while its call is still
/// waiting in the provider, shorter than the lease.
const PROVIDER_LATENCY: Duration = Duration::from_millis(1500);

/// Short, so the second node gets the job soon after the first one dies.
/// The job carries the lease it was enqueued with, so both nodes use it.
const VISIBILITY_TIMEOUT_S: u64 = 3;

/// Start-up, the lease running out and the charge fit well within this.
const LIMIT: Duration = Duration::from_secs(60);

const SIGKILL: i32 = 9;

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
    let waiting = Deadline::start("the first period is paid");
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
    let waiting = Deadline::start("the first node calls the provider for the renewal");
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
    let waiting = Deadline::start("the provider creates the dead node's intent");
    while sandbox.stats().intents_created < 2 {
        waiting.tick().await;
    }

    let mut second = node("b").await;
    let api = second.api();
    let charges_path = format!("/api/v1/subscriptions/{subscription}/charges");
    let waiting = Deadline::start("the second node charges period 1 and the clock settles");
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

/// A `holdfast serve` process (API and workers). It is killed and reaped on
/// drop, so a failing assertion leaves nothing running; its output goes to a
/// file that is printed when the test fails.
struct Node {
    name: String,
    child: Child,
    log: PathBuf,
    base: String,
}

impl Node {
    async fn spawn(name: &str, database_url: &str, provider_url: &str, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let output = File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        // Configuration from the developer's environment must not leak in.
        for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("HOLDFAST_")) {
            command.env_remove(key);
        }
        let listen = format!("127.0.0.1:{}", free_port());
        command
            .args(["serve", "--listen", &listen])
            // No `holdfast.toml` from the working directory.
            .current_dir(dir)
            .env("HOLDFAST_DATABASE__URL", database_url)
            .env("HOLDFAST_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("HOLDFAST_PAYMENTS__URL", provider_url)
            .env("HOLDFAST_SUBSCRIPTIONS__TEST_CLOCKS", "true")
            .env(
                "HOLDFAST_QUEUES__SUBSCRIPTION_PAYMENTS__VISIBILITY_TIMEOUT_S",
                VISIBILITY_TIMEOUT_S.to_string(),
            )
            .env("HOLDFAST_WORKERS__POLL_INTERVAL_MS", "100")
            .env("HOLDFAST_SERVER__RATE_LIMIT_PER_KEY_PER_S", "0")
            .env("HOLDFAST_LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file"))
            .stderr(output);
        let child = command.spawn().expect("holdfast starts");
        let mut node = Self {
            name: name.to_owned(),
            child,
            log,
            base: format!("http://{listen}"),
        };
        let waiting = Deadline::start("the node is ready");
        let http = reqwest::Client::new();
        loop {
            let ready = http.get(format!("{}/readyz", node.base)).send().await;
            if ready.is_ok_and(|answer| answer.status().is_success()) {
                return node;
            }
            node.assert_running();
            waiting.tick().await;
        }
    }

    fn api(&self) -> Api {
        Api {
            base: self.base.clone(),
            http: reqwest::Client::new(),
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("node {} exited early ({status}):\n{}", self.name, self.output());
        }
    }

    /// `Child::kill` sends SIGKILL on Unix: the process gets no chance to
    /// finish its call, give up its lease or run any shutdown code.
    fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        let status = self.child.wait().expect("reap");
        assert_eq!(status.signal(), Some(SIGKILL), "node {}: {status}", self.name);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- output of node {} ---\n{}", self.name, self.output());
        }
    }
}

struct Deadline {
    what: &'static str,
    started: Instant,
}

impl Deadline {
    fn start(what: &'static str) -> Self {
        Self {
            what,
            started: Instant::now(),
        }
    }

    async fn tick(&self) {
        assert!(
            self.started.elapsed() < LIMIT,
            "timed out after {LIMIT:?} waiting until {}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-kill-renewal-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
