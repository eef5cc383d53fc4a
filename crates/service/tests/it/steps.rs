//! Workers driven by the test: a `WorkerContext` over a running app whose
//! own workers are off (`Role::Api`), so a test runs each step when it wants.

use std::sync::Arc;
use std::time::Duration;

use holdfast_service::config::Secret;
use holdfast_service::pipeline::{Dependencies, Deps};
use holdfast_service::providers::egress::Egress;
use holdfast_service::providers::events::EventPublisher;
use holdfast_service::providers::payments::StripeClient;
use holdfast_service::providers::warehouse::HttpWarehouse;
use holdfast_service::providers::webhooks::WebhookSender;
use holdfast_service::workers::{Wakers, WorkerContext};

use crate::helpers::TestApp;

/// The workers' context over the test's app, as worker `worker_id`. Payments
/// and the warehouse point at a closed port: the steps tests drive by hand
/// never call them.
pub fn worker_context(app: &TestApp, worker_id: &str, events: Option<Arc<EventPublisher>>) -> WorkerContext {
    let deadline = Duration::from_secs(5);
    let registry = Arc::new(app.config.dependencies.registry().expect("policies"));
    WorkerContext {
        deps: Deps {
            store: app.store.clone(),
            config: Arc::new(app.config.clone()),
            payments: Arc::new(
                StripeClient::new("http://127.0.0.1:9", Secret::new("unused"), deadline).expect("client"),
            ),
            inventory: None,
            dependencies: Dependencies::from_registry(&registry).expect("policies"),
            registry,
        },
        warehouse: Arc::new(HttpWarehouse::new("http://127.0.0.1:9", Secret::new("unused"), deadline).expect("client")),
        events,
        webhook_sender: WebhookSender::new(
            deadline,
            Egress::from_config(app.config.webhooks.allow_private_networks),
        )
        .expect("client"),
        worker_id: worker_id.into(),
        wake: Wakers::default(),
    }
}
