//! Start-up: validate, connect, migrate, then serve. Every failure before
//! serving names the config key and the target it tried, so a typo in a
//! connection string is found in seconds, not by restarting a healthy
//! database. Here the pipeline's `Deps` are built, once, and handed to
//! both the API and the workers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use holdfast_resilience::Registry;
use holdfast_sandbox::{
    PaymentsConfig as SandboxConfig, SandboxPayments, SandboxWarehouse, WarehouseConfig as WarehouseSandboxConfig,
};
use holdfast_store::{Scope, SharedStore, StoreError};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, InventoryMode, PaymentsProvider};
use crate::http::keys::{generate_key, hash_key, register_key, validate_key};
use crate::http::state::AppState;
use crate::pipeline::{Dependencies, Deps, queues};
use crate::providers::egress::Egress;
use crate::providers::events::EventPublisher;
use crate::providers::inventory::RemoteInventory;
use crate::providers::payments::{NoPayments, PaymentProvider, StripeClient};
use crate::providers::warehouse::HttpWarehouse;
use crate::providers::webhooks::WebhookSender;
use crate::workers::{self, Wakers, WorkerContext};

/// Which parts of the service a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// API and workers.
    #[default]
    All,
    Api,
    Workers,
    /// The inventory API alone (stock and holds, for order nodes with
    /// `inventory.mode = "remote"`) and the sweeper of expired holds.
    Inventory,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config key `database.url`: {0}{hint}", hint = crate::config::pgbouncer_hint(&.0.to_string()))]
    Database(StoreError),
    #[error("database migrations: {0}{hint}", hint = crate::config::pgbouncer_hint(.0))]
    Migrations(String),
    #[error("{0}")]
    Other(String),
}

/// A configured, connected service, ready to `run`.
pub struct Application {
    config: Config,
    store: SharedStore,
    role: Role,
    /// The dependencies' policies by name, for snapshots and reloads.
    registry: Arc<Registry>,
    /// The same policies, one field each, for the steps that call them.
    dependencies: Dependencies,
}

impl Application {
    pub async fn build(config: Config, role: Role) -> Result<Self, StartupError> {
        config.validate()?;
        if role == Role::Inventory && config.inventory.mode == InventoryMode::Remote {
            return Err(StartupError::Config(ConfigError::new(
                "inventory.mode",
                "an inventory node keeps its own stock: \"remote\" is for order nodes",
            )));
        }
        let registry = Arc::new(config.dependencies.registry()?);
        let dependencies = Dependencies::from_registry(&registry).map_err(|e| StartupError::Other(e.to_string()))?;
        let store = holdfast_store::connect(&config.connect_options())
            .await
            .map_err(StartupError::Database)?;
        if config.database.migrate_on_start {
            store
                .migrate()
                .await
                .map_err(|e| StartupError::Migrations(e.to_string()))?;
        }
        let status = store.migration_status().await.map_err(StartupError::Database)?;
        if !status.is_current() {
            return Err(StartupError::Migrations(format!(
                "not current: pending {:?}, applied but unknown to this binary {:?}; run `holdfast migrate` \
                 (or set database.migrate_on_start = true)",
                status.pending(),
                status.unknown()
            )));
        }
        Ok(Self {
            config,
            store,
            role,
            registry,
            dependencies,
        })
    }

    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The dependency policies, for reloading their thresholds (SIGHUP)
    /// while the service runs.
    pub fn dependencies(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// On an empty database, registers `supplied` (e.g. from
    /// HOLDFAST_BOOTSTRAP_ADMIN_KEY) or a generated admin key and returns the
    /// generated one so the caller can show it once. A supplied key is
    /// registered whenever it is not known yet, so scripted setups are
    /// repeatable.
    pub async fn bootstrap_admin_key(&self, supplied: Option<&str>) -> Result<Option<String>, StartupError> {
        let failed =
            |e: crate::http::error::ApiError| StartupError::Other(format!("registering the admin key: {}", e.detail));
        if let Some(key) = supplied {
            validate_key(key).map_err(|why| StartupError::Other(format!("HOLDFAST_BOOTSTRAP_ADMIN_KEY: {why}")))?;
            let known = self
                .store
                .find_api_key(&hash_key(key))
                .await
                .map_err(StartupError::Database)?;
            if known.is_none() {
                register_key(&self.store, key, Scope::Admin, "bootstrap")
                    .await
                    .map_err(failed)?;
            }
            return Ok(None);
        }
        if self.store.count_api_keys().await.map_err(StartupError::Database)? > 0 {
            return Ok(None);
        }
        let key = generate_key();
        register_key(&self.store, &key, Scope::Admin, "generated at first start")
            .await
            .map_err(failed)?;
        Ok(Some(key))
    }

    /// Serves on `listener` until `shutdown` completes, then lets in-flight
    /// requests finish (up to `server.shutdown_grace_s`) and stops workers.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let local = listener.local_addr()?;
        crate::telemetry::prometheus();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut background = Vec::new();
        let inbox_ready = Arc::new(Notify::new());
        // Every role journals its breakers' transitions, subscribed before
        // any call can make one.
        background.push(crate::journal::spawn(
            self.store.clone(),
            &self.registry,
            crate::journal::node_name(local),
            stop_rx.clone(),
        ));
        let payments: Arc<dyn PaymentProvider> = if self.role == Role::Inventory {
            Arc::new(NoPayments)
        } else {
            self.payment_provider(local, &stop_rx, &mut background).await?
        };
        let inventory = self.remote_inventory()?;
        holdfast_resilience::describe_metrics();
        let deps = Deps {
            config: Arc::new(self.config.clone()),
            store: self.store.clone(),
            payments,
            inventory,
            dependencies: self.dependencies.clone(),
            registry: self.registry.clone(),
        };
        let state = AppState::new(deps.clone(), inbox_ready.clone());
        match self.role {
            Role::Api => {}
            Role::Inventory => background.push(self.spawn_hold_sweeper(&stop_rx)),
            Role::All | Role::Workers => {
                let context = self.worker_context(deps, &stop_rx, &mut background);
                let context = Arc::new(context.await?);
                background.extend(self.spawn_workers(&context, &inbox_ready, &stop_rx));
                background.push(self.spawn_hold_sweeper(&stop_rx));
            }
        }
        tracing::info!(address = %local, backend = self.store.backend().as_str(), role = ?self.role, "serving");
        let app = match self.role {
            Role::All | Role::Api => crate::http::router(state),
            Role::Workers => crate::http::workers_router(state),
            Role::Inventory => crate::http::inventory_router(state),
        };
        let grace = Duration::from_secs(self.config.server.shutdown_grace_s);
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = drained_tx.send(());
        });
        let mut serving = tokio::spawn(async move { server.await });
        // The grace period starts when shutdown is asked for.
        tokio::select! {
            result = &mut serving => result??,
            _ = async { let _ = drained_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_s = grace.as_secs(), "in-flight requests outlived the grace period");
                serving.abort();
            }
        }
        let _ = stop_tx.send(true);
        for task in background {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        tracing::info!("stopped");
        Ok(())
    }

    async fn payment_provider(
        &self,
        local: std::net::SocketAddr,
        stop: &watch::Receiver<bool>,
        background: &mut Vec<JoinHandle<()>>,
    ) -> anyhow::Result<Arc<dyn PaymentProvider>> {
        let payments = &self.config.payments;
        let deadline = Duration::from_millis(self.config.dependencies.payments.deadline_ms);
        let url = if payments.provider == PaymentsProvider::Sandbox && payments.url.is_empty() {
            // The demo and a fresh checkout need no outside provider: run the
            // sandbox in-process, over real HTTP, calling back our webhook.
            let sandbox = SandboxPayments::new(SandboxConfig {
                webhook_url: Some(format!("http://{local}/api/v1/payments/webhook")),
                webhook_secret: payments.webhook_secret.expose().to_owned(),
                ..SandboxConfig::default()
            });
            serve_in_process("payments", sandbox.router(), stop, background).await?
        } else {
            payments.url.clone()
        };
        Ok(Arc::new(StripeClient::new(&url, payments.api_key.clone(), deadline)?))
    }

    /// The inventory node's client when `inventory.mode = "remote"`.
    fn remote_inventory(&self) -> anyhow::Result<Option<Arc<RemoteInventory>>> {
        let inventory = &self.config.inventory;
        if inventory.mode == InventoryMode::Local {
            return Ok(None);
        }
        let deadline = Duration::from_millis(self.config.dependencies.inventory.deadline_ms);
        let client = RemoteInventory::new(&inventory.url, inventory.api_key.clone(), deadline)?;
        tracing::info!(url = %inventory.url, "inventory is remote");
        Ok(Some(Arc::new(client)))
    }

    /// Releases holds left past their expiry (inventory nodes, and any node
    /// that others use as one).
    fn spawn_hold_sweeper(&self, stop: &watch::Receiver<bool>) -> JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(workers::run_loop(
            "hold-expiry",
            Duration::from_millis(self.config.checkout.expiry_sweep_interval_ms),
            None,
            stop.clone(),
            move || {
                let store = store.clone();
                async move { Ok(workers::expiry::sweep_holds_once(&store, chrono::Utc::now()).await?) }
            },
        ))
    }

    async fn worker_context(
        &self,
        deps: Deps,
        stop: &watch::Receiver<bool>,
        background: &mut Vec<JoinHandle<()>>,
    ) -> anyhow::Result<WorkerContext> {
        let config = &self.config;
        let url = if config.warehouse.url.is_empty() {
            let sandbox = SandboxWarehouse::new(WarehouseSandboxConfig::default());
            serve_in_process("warehouse", sandbox.router(), stop, background).await?
        } else {
            config.warehouse.url.clone()
        };
        let deadline = |ms: u64| Duration::from_millis(ms);
        let warehouse = HttpWarehouse::new(
            &url,
            config.warehouse.api_key.clone(),
            deadline(config.dependencies.warehouse.deadline_ms),
        )?;
        let events = if config.events.nats_url.is_empty() {
            None
        } else {
            let publisher =
                EventPublisher::connect(&config.events, deadline(config.dependencies.events.deadline_ms)).await?;
            Some(Arc::new(publisher))
        };
        Ok(WorkerContext {
            deps,
            warehouse: Arc::new(warehouse),
            events,
            webhook_sender: WebhookSender::new(
                deadline(config.dependencies.webhooks.deadline_ms),
                Egress::from_config(config.webhooks.allow_private_networks),
            )?,
            worker_id: WorkerContext::new_worker_id(),
            wake: Wakers::default(),
        })
    }

    fn spawn_workers(
        &self,
        context: &Arc<WorkerContext>,
        inbox_ready: &Arc<Notify>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let poll = Duration::from_millis(self.config.workers.poll_interval_ms);
        let mut tasks = Vec::new();
        let ctx = context.clone();
        tasks.push(tokio::spawn(workers::run_loop(
            "payment-inbox",
            Duration::from_secs(1),
            Some(inbox_ready.clone()),
            stop.clone(),
            move || {
                let ctx = ctx.clone();
                async move { workers::inbox::tick(&ctx).await }
            },
        )));
        let store = self.store.clone();
        tasks.push(tokio::spawn(workers::run_loop(
            "reservation-expiry",
            Duration::from_millis(self.config.checkout.expiry_sweep_interval_ms),
            None,
            stop.clone(),
            move || {
                let store = store.clone();
                async move { Ok(workers::expiry::sweep_once(&store, chrono::Utc::now()).await?) }
            },
        )));
        let store = self.store.clone();
        let checkout = self.config.queues.checkout.template(queues::CHECKOUT);
        // Twice the request deadline: the order's own request is over.
        let grace = Duration::from_millis(self.config.server.request_deadline_ms.saturating_mul(2));
        tasks.push(tokio::spawn(workers::run_loop(
            "stalled-checkouts",
            Duration::from_millis(self.config.checkout.expiry_sweep_interval_ms),
            None,
            stop.clone(),
            move || {
                let (store, checkout) = (store.clone(), checkout.clone());
                async move {
                    let found =
                        workers::expiry::resume_stalled_once(&store, &checkout, grace, chrono::Utc::now()).await?;
                    Ok(found)
                }
            },
        )));
        let ctx = context.clone();
        tasks.push(tokio::spawn(workers::run_loop(
            "outbox-relay",
            poll,
            Some(context.wake.relay.clone()),
            stop.clone(),
            move || {
                let ctx = ctx.clone();
                async move { workers::relay::relay_once(&ctx, chrono::Utc::now()).await }
            },
        )));
        let ctx = context.clone();
        tasks.push(tokio::spawn(workers::run_loop(
            "queue-metrics",
            Duration::from_millis(self.config.workers.metrics_interval_ms),
            None,
            stop.clone(),
            move || {
                let ctx = ctx.clone();
                async move { workers::relay::measure_once(&ctx, chrono::Utc::now()).await }
            },
        )));
        let mut drained = vec![
            (queues::CHECKOUT, context.wake.checkout.clone()),
            (queues::FULFILLMENT, context.wake.fulfillment.clone()),
            (queues::WEBHOOKS, context.wake.webhooks.clone()),
        ];
        if context.events.is_some() {
            drained.push((queues::EVENTS, context.wake.events.clone()));
        }
        if context.deps.inventory.is_some() {
            drained.push((queues::INVENTORY, context.wake.inventory.clone()));
        }
        if self.config.subscriptions.enabled {
            drained.push((
                queues::SUBSCRIPTION_PAYMENTS,
                context.wake.subscription_payments.clone(),
            ));
            tasks.extend(workers::subscriptions::spawn(context, stop));
        }
        for (queue, notify) in drained {
            let ctx = context.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(error) = ctx.run_queue(queue, notify, stop).await {
                    tracing::error!(worker = queue, error = format!("{error:#}"), "queue worker stopped");
                }
            }));
        }
        tasks
    }
}

/// Serves a sandbox's router on a loopback port until `stop`; returns its URL.
async fn serve_in_process(
    name: &'static str,
    router: axum::Router,
    stop: &watch::Receiver<bool>,
    background: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut stop = stop.clone();
    background.push(tokio::spawn(async move {
        let until_stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(until_stopped)
            .await
        {
            tracing::error!(sandbox = name, error = %error, "in-process sandbox stopped");
        }
    }));
    tracing::info!(sandbox = name, %url, "in-process sandbox");
    Ok(url)
}
