//! `spawn_app(backend)` and a small typed client for the tests.

use std::time::Duration;

use holdfast_service::config::Secret;
use holdfast_service::local;
use holdfast_service::{Config, Role};
use holdfast_store::SharedStore;
use serde_json::{Value, json};

pub use holdfast_testkit::{Backend, nats_url, pgbouncer, postgres_admin_url};

pub struct TestApp {
    pub store: SharedStore,
    pub admin: Client,
    pub shop: Client,
    pub config: Config,
    server: local::Server,
    direct_url: String,
    admin_url: Option<String>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_as(backend, Role::All, tweak).await
}

/// A recording webhook receiver on a loopback port, and its base URL.
pub async fn spawn_receiver() -> (holdfast_sandbox::WebhookReceiver, String) {
    let receiver = holdfast_sandbox::WebhookReceiver::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(receiver.clone().serve(listener, std::future::pending()));
    (receiver, url)
}

/// The app with only the parts `role` runs: `Role::Api` leaves the workers
/// to the test, which drives them one step at a time.
pub async fn spawn_app_as(backend: Backend, role: Role, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let bouncer = match backend {
        Backend::PgBouncer => Some(pgbouncer().await.expect("pgbouncer started")),
        Backend::Sqlite | Backend::Postgres => None,
    };
    spawn_app_on(backend, bouncer, role, tweak).await
}

/// The app on a scratch database that it reaches through `bouncer`, a
/// PgBouncer of the test's own (which the test may stop and start).
pub async fn spawn_app_behind(
    bouncer: &holdfast_store::scratch::ScratchPgBouncer,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_app_on(Backend::PgBouncer, Some(bouncer), Role::All, tweak).await
}

async fn spawn_app_on(
    backend: Backend,
    bouncer: Option<&holdfast_store::scratch::ScratchPgBouncer>,
    role: Role,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    // Warnings and errors (a 500's cause chain, a worker's failure) show in
    // the output of a failing test; `HOLDFAST_TEST_LOG` turns up the detail.
    let filter = std::env::var("HOLDFAST_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    let (database_url, direct_url, admin_url) = match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("holdfast-it-{}", uuid::Uuid::now_v7().simple()));
            let url = format!("sqlite://{}/holdfast.db", dir.display());
            (url.clone(), url, None)
        }
        Backend::Postgres | Backend::PgBouncer => {
            let admin = postgres_admin_url().await.expect("postgres reachable");
            let url = holdfast_store::scratch::create_database(&admin, "it")
                .await
                .expect("scratch database");
            let through = match bouncer {
                Some(bouncer) => bouncer.url_for(&url).expect("url through pgbouncer"),
                None => url.clone(),
            };
            (through, url, Some(admin))
        }
    };
    let mut config = Config::defaults().expect("defaults");
    config.database.url = Secret::new(database_url.clone());
    if backend == Backend::PgBouncer {
        config.database.pgbouncer = holdfast_store::PgBouncer::Transaction;
    }
    // The tests' partners listen on 127.0.0.1; `egress.rs` tests the filter.
    config.webhooks.allow_private_networks = true;
    tweak(&mut config);
    let service = local::start(config, role).await.expect("application starts");
    let admin = Client::new(&service.base_url, &service.admin_key);
    let created = admin
        .post("/api/v1/api-keys", &json!({"scope": "storefront", "name": "test shop"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let shop = admin.with_key(created.body["key"].as_str().expect("key"));
    TestApp {
        store: service.store,
        admin,
        shop,
        config: service.config,
        server: service.server,
        direct_url,
        admin_url,
    }
}

impl TestApp {
    /// The database this app runs on (a scratch PostgreSQL database or a
    /// SQLite file), for tests that lock it from outside: PostgreSQL itself,
    /// also when the app goes through PgBouncer.
    pub fn database_url(&self) -> &str {
        &self.direct_url
    }

    pub async fn create_product(&self, sku: &str, price: i64, on_hand: i64) {
        let body = json!({"sku": sku, "name": format!("Product {sku}"), "price": {"amount": price, "currency": "USD"}, "on_hand": on_hand});
        let answer = self.admin.post("/api/v1/products", &body).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    }

    pub async fn inventory(&self, sku: &str) -> (i64, i64, i64) {
        let answer = self.shop.get(&format!("/api/v1/inventory/{sku}")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let n = |k: &str| answer.body[k].as_i64().expect("number");
        (n("on_hand"), n("reserved"), n("available"))
    }

    /// Polls the SKU's stock until it reads `expected` (on hand, reserved,
    /// available), for releases that run in a task of their own and may
    /// finish just after the response that caused them.
    pub async fn wait_for_inventory(&self, sku: &str, expected: (i64, i64, i64), why: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.inventory(sku).await;
            if now == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{why}: {sku} still reads {now:?} after 5 s, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the order until it reaches `status`, for asynchronous steps
    /// (the provider's webhook, workers).
    pub async fn wait_for_status(&self, order_id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let answer = self.shop.get(&format!("/api/v1/orders/{order_id}")).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            if answer.body["status"] == status {
                return answer.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} never reached {status}: {}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        self.server.halt().await.expect("server ran");
        if let Some(admin) = &self.admin_url {
            holdfast_store::scratch::drop_database(admin, &self.direct_url)
                .await
                .expect("drop scratch database");
        }
    }
}

pub fn order(items: &[(&str, i64)], payment_method: &str) -> Value {
    json!({
        "items": items.iter().map(|(sku, qty)| json!({"sku": sku, "qty": qty})).collect::<Vec<_>>(),
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "shipping_address": {"line1": "123 Main St", "city": "Portland", "state": "OR", "postal_code": "97201", "country": "US"},
        "payment_method": payment_method,
    })
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

/// A thin client that returns status and JSON, so tests assert on both.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    key: Option<String>,
}

impl Client {
    pub fn new(base_url: &str, key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.to_owned(),
            key: Some(key.to_owned()),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    pub fn with_key(&self, key: &str) -> Self {
        Self {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            key: Some(key.to_owned()),
        }
    }

    /// The same key against another node.
    pub fn at(&self, base_url: &str) -> Self {
        Self {
            http: self.http.clone(),
            base_url: base_url.to_owned(),
            key: self.key.clone(),
        }
    }

    pub fn anonymous(&self) -> Self {
        Self {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            key: None,
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base_url));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body, headers }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    pub async fn checkout(&self, body: &Value, key: &str) -> Answer {
        self.send(
            self.request(reqwest::Method::POST, "/api/v1/orders")
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }
}
