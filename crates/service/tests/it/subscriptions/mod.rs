//! Creator subscriptions end to end: the API, the renewal scheduler, the
//! payment queue and its dunning, test clocks, provider events and the
//! audit, against the sandbox provider over real HTTP. Most tests run the
//! app without its workers (`Role::Api`) and drive each step themselves
//! through a `WorkerContext` whose payments go to the test's own sandbox.

mod api;
mod clocks;
mod dunning;
mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use holdfast_sandbox::{PaymentsConfig, SandboxPayments};
use holdfast_service::pipeline::queues;
use holdfast_service::providers::payments::StripeClient;
use holdfast_service::workers::WorkerContext;
use holdfast_service::{Config, Role};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app_as};

pub struct Subs {
    pub app: TestApp,
    pub sandbox: SandboxPayments,
    pub sandbox_url: String,
}

/// The app (API only, test clocks on) and a sandbox provider that sends its
/// events to the app's webhook.
pub async fn spawn(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Subs {
    let app = spawn_app_as(backend, Role::Api, |config| {
        config.subscriptions.test_clocks = true;
        tweak(config);
    })
    .await;
    let sandbox = SandboxPayments::new(PaymentsConfig {
        webhook_url: Some(format!("{}/api/v1/payments/webhook", app.admin.base_url())),
        webhook_secret: app.config.payments.webhook_secret.expose().to_owned(),
        ..PaymentsConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sandbox_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(sandbox.clone().serve(listener, std::future::pending()));
    Subs {
        app,
        sandbox,
        sandbox_url,
    }
}

impl Subs {
    /// The workers' context, charging through the test's sandbox.
    pub fn worker(&self, worker_id: &str) -> WorkerContext {
        let mut ctx = crate::steps::worker_context(&self.app, worker_id, None);
        ctx.deps.payments = Arc::new(
            StripeClient::new(
                &self.sandbox_url,
                self.app.config.payments.api_key.clone(),
                Duration::from_secs(5),
            )
            .expect("client"),
        );
        ctx
    }

    pub async fn creator(&self) -> String {
        let created = self
            .app
            .admin
            .post("/api/v1/creators", &json!({"name": "Ada's Workshop", "fee_bps": 1000}))
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        id(&created.body)
    }

    pub async fn plan(&self, creator: &str, amount: i64) -> String {
        let created = self
            .app
            .admin
            .post(
                "/api/v1/plans",
                &json!({"creator_id": creator, "name": "Supporter", "price": {"amount": amount, "currency": "USD"},
                        "interval": "month", "interval_count": 1, "on_dunning_exhausted": "unpaid"}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        id(&created.body)
    }

    pub async fn clock(&self, frozen_time: &str) -> String {
        let created = self
            .app
            .admin
            .post("/api/v1/test-clocks", &json!({"frozen_time": frozen_time}))
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        id(&created.body)
    }

    pub async fn advance(&self, clock: &str, to: DateTime<Utc>) -> Value {
        let moved = self
            .app
            .admin
            .post(
                &format!("/api/v1/test-clocks/{clock}/advance"),
                &json!({"frozen_time": to}),
            )
            .await;
        assert_eq!(moved.status, 200, "{}", moved.body);
        moved.body
    }

    pub async fn subscribe(&self, plan: &str, clock: Option<&str>, payment_method: &str) -> Value {
        let mut body =
            json!({"plan_id": plan, "customer": {"email": "grace@example.com"}, "payment_method": payment_method});
        if let Some(clock) = clock {
            body["test_clock"] = json!(clock);
        }
        let key = uuid::Uuid::now_v7().to_string();
        let created = self
            .app
            .shop
            .send(
                self.app
                    .shop
                    .request(reqwest::Method::POST, "/api/v1/subscriptions")
                    .header("Idempotency-Key", key)
                    .json(&body),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        created.body
    }

    pub async fn subscription(&self, id: &str) -> Value {
        let answer = self.app.shop.get(&format!("/api/v1/subscriptions/{id}")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }

    /// The charges as (period, attempt, status).
    pub async fn charges(&self, id: &str) -> Vec<(u64, u64, String)> {
        let answer = self.app.shop.get(&format!("/api/v1/subscriptions/{id}/charges")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["data"]
            .as_array()
            .expect("charges")
            .iter()
            .map(|c| {
                (
                    c["period_index"].as_u64().expect("period"),
                    c["attempt"].as_u64().expect("attempt"),
                    c["status"].as_str().expect("status").to_owned(),
                )
            })
            .collect()
    }

    pub async fn event_types(&self, id: &str) -> Vec<String> {
        let answer = self.app.shop.get(&format!("/api/v1/subscriptions/{id}/events")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let events = answer.body["data"].as_array().expect("events");
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event["sequence"], json!(n + 1), "no gap in the sequence");
        }
        events
            .iter()
            .map(|e| e["type"].as_str().expect("type").to_owned())
            .collect()
    }

    pub async fn dead_letters(&self) -> usize {
        self.app
            .store
            .queue()
            .dead_letters(queues::SUBSCRIPTION_PAYMENTS, 100)
            .await
            .expect("dead letters")
            .len()
    }
}

/// One pass of the scheduler, then payment rounds at `now` until the
/// queue has nothing visible; returns the jobs handled.
pub async fn drive(ctx: &WorkerContext, now: DateTime<Utc>) -> usize {
    let mut handled = 0;
    for _ in 0..100 {
        ctx.schedule_renewals_once(now).await.expect("schedule");
        let claimed = ctx
            .run_queue_once(queues::SUBSCRIPTION_PAYMENTS, now)
            .await
            .expect("payments");
        if claimed == 0 {
            return handled;
        }
        handled += claimed;
    }
    panic!("the payment queue did not drain");
}

pub fn id(body: &Value) -> String {
    body["id"].as_str().expect("id").to_owned()
}

pub fn at(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw).expect("rfc 3339").with_timezone(&Utc)
}

pub fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}
