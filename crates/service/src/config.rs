//! Configuration in layers: the commented defaults of `holdfast.example.toml`
//! (embedded in the binary), then a file, then `HOLDFAST_…` environment
//! variables. Cross-field checks run after loading; secrets never print.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The shipped example file doubles as the defaults, so the two never drift.
pub const DEFAULTS: &str = include_str!("../../../holdfast.example.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub checkout: CheckoutConfig,
    pub inventory: InventoryConfig,
    pub payments: PaymentsConfig,
    pub warehouse: WarehouseConfig,
    pub events: EventsConfig,
    pub webhooks: WebhooksConfig,
    pub subscriptions: SubscriptionsConfig,
    pub workers: WorkersConfig,
    pub queues: QueuesConfig,
    pub dependencies: DependenciesConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub request_deadline_ms: u64,
    pub max_body_bytes: usize,
    pub shutdown_grace_s: u64,
    pub rate_limit_per_key_per_s: u32,
    pub rate_limit_burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub connect_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
    pub migrate_on_start: bool,
    /// Whether `url` leads to PgBouncer, and in which pool_mode.
    pub pgbouncer: holdfast_store::PgBouncer,
    pub pgbouncer_admin_url: Secret,
    pub pools: PoolsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolsConfig {
    pub read: PoolConfig,
    pub write: PoolConfig,
    pub worker: PoolConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutConfig {
    pub reservation_ttl_s: u64,
    pub expiry_sweep_interval_ms: u64,
    pub idempotency_lease_s: u64,
}

/// Where stock lives: this process's database, or an inventory node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryMode {
    Local,
    Remote,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    pub mode: InventoryMode,
    pub url: String,
    pub api_key: Secret,
    pub hold_grace_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentsProvider {
    Sandbox,
    Stripe,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    pub provider: PaymentsProvider,
    pub url: String,
    pub api_key: Secret,
    pub webhook_secret: Secret,
    pub webhook_tolerance_s: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    pub url: String,
    pub api_key: Secret,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub nats_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub duplicate_window_s: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Lets deliveries reach loopback, private and link-local addresses
    /// (`providers/egress.rs`); off by default.
    pub allow_private_networks: bool,
    pub retry_schedule_ms: Vec<u64>,
    pub disable_after_s: u64,
    pub max_retry_after_s: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Whether this node's workers run the renewal scheduler, the payment
    /// worker, dunning and settlement.
    pub enabled: bool,
    pub scheduler_interval_ms: u64,
    pub past_due_grace_days: u32,
    /// The delay before each retry of a failed charge; the last repeats.
    pub dunning_delays_s: Vec<u64>,
    pub settlement_interval_ms: u64,
    /// Whether `/api/v1/test-clocks` exists.
    pub test_clocks: bool,
}

impl SubscriptionsConfig {
    /// The delay before the retry that follows failed attempt `attempt`
    /// (1 for the first attempt).
    pub fn dunning_delay(&self, attempt: u32) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        let seconds = self
            .dunning_delays_s
            .get(index)
            .or(self.dunning_delays_s.last())
            .copied()
            .unwrap_or(0);
        Duration::from_secs(seconds)
    }

    pub fn past_due_grace(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::days(i64::from(self.past_due_grace_days))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    pub poll_interval_ms: u64,
    pub relay_batch: u32,
    pub metrics_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesConfig {
    pub checkout: QueueConfig,
    pub inventory: QueueConfig,
    pub fulfillment: QueueConfig,
    pub webhooks: QueueConfig,
    pub events: QueueConfig,
    pub subscription_payments: QueueConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub visibility_timeout_s: u64,
    pub max_receives: u32,
    pub concurrency: u32,
    /// Jobs of one group a worker claims and works through in order under
    /// one lease (1: one at a time).
    pub run_length: u32,
}

impl QueueConfig {
    /// The template every job of queue `name` is enqueued with.
    pub fn template(&self, name: &str) -> holdfast_store::JobTemplate {
        holdfast_store::JobTemplate {
            queue: name.to_owned(),
            max_receives: self.max_receives,
            visibility_timeout: Duration::from_secs(self.visibility_timeout_s),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DependenciesConfig {
    pub inventory: DependencyConfig,
    pub payments: DependencyConfig,
    pub warehouse: DependencyConfig,
    pub webhooks: DependencyConfig,
    pub events: DependencyConfig,
}

impl DependenciesConfig {
    /// Every dependency by the name its breaker, metrics and config key use.
    pub fn all(&self) -> [(&'static str, &DependencyConfig); 5] {
        [
            ("inventory", &self.inventory),
            ("payments", &self.payments),
            ("warehouse", &self.warehouse),
            ("webhooks", &self.webhooks),
            ("events", &self.events),
        ]
    }

    /// The resilience policies of every dependency, one breaker each.
    pub fn registry(&self) -> Result<holdfast_resilience::Registry, ConfigError> {
        holdfast_resilience::Registry::from_configs(self.all().map(|(name, config)| (name, config.clone())))
            .map_err(|invalid| ConfigError::new(&invalid.key, invalid.reason))
    }
}

pub use holdfast_resilience::DependencyConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// A string that never appears in `Debug` or `Display` output (logs, panics,
/// error messages). Read it with [`Secret::expose`].
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// A configuration problem, naming the key (and the file it came from).
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`{origin}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            origin: String::new(),
            message: message.into(),
        }
    }
}

/// Where configuration comes from, besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`; when absent, `./holdfast.toml` is read if it exists.
    pub file: Option<PathBuf>,
    /// Whether to read `HOLDFAST_…` variables (tests turn this off).
    pub env: bool,
    /// Command-line overrides as (dotted key, value), applied last.
    pub overrides: Vec<(String, String)>,
}

impl Config {
    /// The built-in defaults alone.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::load(&Sources::default())
    }

    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match &sources.file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("holdfast.toml").exists() => figment = figment.merge(Toml::file_exact("holdfast.toml")),
            None => {}
        }
        if sources.env {
            // Only nested names are configuration: HOLDFAST_BOOTSTRAP_ADMIN_KEY
            // and the test variables are read elsewhere.
            figment = figment.merge(
                Env::prefixed("HOLDFAST_")
                    .filter(|key| key.as_str().contains("__"))
                    .split("__"),
            );
        }
        for (key, value) in &sources.overrides {
            // Parsed like an environment value: "8080" is a number, "true" a bool.
            let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
            figment = figment.merge(Serialized::default(key, value));
        }
        let config: Config = figment.extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let url = self.database.url.expose();
        holdfast_store::Backend::from_url(url).map_err(|_| {
            ConfigError::new(
                "database.url",
                format!(
                    "{} is not a database URL: expected postgres://USER@HOST:PORT/DATABASE or sqlite://PATH",
                    holdfast_store::describe_target(url)
                ),
            )
        })?;
        if url.starts_with("postgres") {
            url::Url::parse(url).map_err(|e| {
                ConfigError::new(
                    "database.url",
                    format!("{} does not parse: {e}", holdfast_store::describe_target(url)),
                )
            })?;
        } else if self.database.pgbouncer != holdfast_store::PgBouncer::Off {
            return Err(ConfigError::new(
                "database.pgbouncer",
                format!(
                    "is \"{}\" but database.url is not a PostgreSQL URL: PgBouncer pools PostgreSQL only",
                    self.database.pgbouncer.as_str()
                ),
            ));
        }
        let positive = [
            ("server.request_deadline_ms", self.server.request_deadline_ms),
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
            ("database.connect_timeout_ms", self.database.connect_timeout_ms),
            ("database.statement_timeout_ms", self.database.statement_timeout_ms),
            ("database.lock_timeout_ms", self.database.lock_timeout_ms),
            (
                "database.pools.read.max_connections",
                u64::from(self.database.pools.read.max_connections),
            ),
            (
                "database.pools.write.max_connections",
                u64::from(self.database.pools.write.max_connections),
            ),
            (
                "database.pools.worker.max_connections",
                u64::from(self.database.pools.worker.max_connections),
            ),
            ("checkout.reservation_ttl_s", self.checkout.reservation_ttl_s),
            (
                "checkout.expiry_sweep_interval_ms",
                self.checkout.expiry_sweep_interval_ms,
            ),
            ("workers.poll_interval_ms", self.workers.poll_interval_ms),
            ("workers.relay_batch", u64::from(self.workers.relay_batch)),
            ("workers.metrics_interval_ms", self.workers.metrics_interval_ms),
            ("webhooks.disable_after_s", self.webhooks.disable_after_s),
            ("events.duplicate_window_s", self.events.duplicate_window_s),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::new(key, "must be greater than 0"));
        }
        if self.database.statement_timeout_ms > self.server.request_deadline_ms {
            return Err(ConfigError::new(
                "database.statement_timeout_ms",
                format!(
                    "{} ms exceeds server.request_deadline_ms ({} ms): one statement could outlive its request",
                    self.database.statement_timeout_ms, self.server.request_deadline_ms
                ),
            ));
        }
        if self.payments.provider == PaymentsProvider::Stripe && self.payments.url.is_empty() {
            return Err(ConfigError::new(
                "payments.url",
                "is required when payments.provider = \"stripe\"",
            ));
        }
        if !self.payments.url.is_empty() {
            url::Url::parse(&self.payments.url)
                .map_err(|e| ConfigError::new("payments.url", format!("{:?} is not a URL: {e}", self.payments.url)))?;
        }
        self.validate_inventory()?;
        self.validate_dependencies()?;
        self.validate_cold_path()?;
        self.validate_subscriptions()?;
        tracing_subscriber_filter_check(&self.log.level)?;
        Ok(())
    }

    fn validate_inventory(&self) -> Result<(), ConfigError> {
        let inventory = &self.inventory;
        if inventory.mode == InventoryMode::Local {
            return Ok(());
        }
        if inventory.url.is_empty() {
            return Err(ConfigError::new(
                "inventory.url",
                "is required when inventory.mode = \"remote\": the base URL of a `holdfast serve --role inventory` node",
            ));
        }
        let url = url::Url::parse(&inventory.url)
            .map_err(|e| ConfigError::new("inventory.url", format!("{:?} is not a URL: {e}", inventory.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "inventory.url",
                format!("{:?} is not an http(s) URL", inventory.url),
            ));
        }
        if inventory.api_key.expose().is_empty() {
            return Err(ConfigError::new(
                "inventory.api_key",
                "is required when inventory.mode = \"remote\": an admin key of the inventory node",
            ));
        }
        Ok(())
    }

    fn validate_dependencies(&self) -> Result<(), ConfigError> {
        for (name, dependency) in self.dependencies.all() {
            dependency.validate().map_err(|invalid| {
                let invalid = invalid.for_dependency(name);
                ConfigError::new(&invalid.key, invalid.reason)
            })?;
        }
        Ok(())
    }

    fn validate_cold_path(&self) -> Result<(), ConfigError> {
        let queues = [
            ("queues.checkout", self.queues.checkout),
            ("queues.inventory", self.queues.inventory),
            ("queues.fulfillment", self.queues.fulfillment),
            ("queues.webhooks", self.queues.webhooks),
            ("queues.events", self.queues.events),
            ("queues.subscription_payments", self.queues.subscription_payments),
        ];
        for (name, queue) in queues {
            if queue.visibility_timeout_s == 0 {
                return Err(ConfigError::new(
                    &format!("{name}.visibility_timeout_s"),
                    "must be greater than 0",
                ));
            }
            if queue.max_receives == 0 {
                return Err(ConfigError::new(
                    &format!("{name}.max_receives"),
                    "must be greater than 0",
                ));
            }
            if queue.concurrency == 0 {
                return Err(ConfigError::new(
                    &format!("{name}.concurrency"),
                    "must be greater than 0",
                ));
            }
            if !(1..=1000).contains(&queue.run_length) {
                return Err(ConfigError::new(
                    &format!("{name}.run_length"),
                    "must be between 1 and 1000",
                ));
            }
        }
        if self.webhooks.retry_schedule_ms.is_empty() {
            return Err(ConfigError::new(
                "webhooks.retry_schedule_ms",
                "needs at least one delay (the first attempt's, usually 0)",
            ));
        }
        let urls = [
            ("warehouse.url", &self.warehouse.url),
            ("events.nats_url", &self.events.nats_url),
        ];
        for (key, value) in urls {
            if !value.is_empty() {
                url::Url::parse(value).map_err(|e| ConfigError::new(key, format!("{value:?} is not a URL: {e}")))?;
            }
        }
        if self.events.subject_prefix.is_empty() || self.events.subject_prefix.contains([' ', '*', '>']) {
            return Err(ConfigError::new(
                "events.subject_prefix",
                format!("{:?} is not a NATS subject prefix", self.events.subject_prefix),
            ));
        }
        Ok(())
    }

    fn validate_subscriptions(&self) -> Result<(), ConfigError> {
        let subscriptions = &self.subscriptions;
        if subscriptions.scheduler_interval_ms == 0 {
            return Err(ConfigError::new(
                "subscriptions.scheduler_interval_ms",
                "must be greater than 0",
            ));
        }
        if subscriptions.settlement_interval_ms == 0 {
            return Err(ConfigError::new(
                "subscriptions.settlement_interval_ms",
                "must be greater than 0",
            ));
        }
        let payments = self.queues.subscription_payments;
        let retries = usize::try_from(payments.max_receives.saturating_sub(1)).unwrap_or(usize::MAX);
        if retries > 0 && subscriptions.dunning_delays_s.is_empty() {
            return Err(ConfigError::new(
                "subscriptions.dunning_delays_s",
                format!(
                    "needs at least one delay: queues.subscription_payments.max_receives = {} allows {retries} retries",
                    payments.max_receives
                ),
            ));
        }
        if subscriptions.dunning_delays_s.len() > retries {
            return Err(ConfigError::new(
                "subscriptions.dunning_delays_s",
                format!(
                    "lists {} delays but queues.subscription_payments.max_receives = {} allows only {retries} retries",
                    subscriptions.dunning_delays_s.len(),
                    payments.max_receives
                ),
            ));
        }
        // A retry that comes back while the attempt before it may still hold
        // its lease would only find that attempt pending.
        if let Some(short) = subscriptions
            .dunning_delays_s
            .iter()
            .find(|delay| **delay < payments.visibility_timeout_s)
        {
            return Err(ConfigError::new(
                "subscriptions.dunning_delays_s",
                format!(
                    "{short} s is shorter than queues.subscription_payments.visibility_timeout_s ({} s)",
                    payments.visibility_timeout_s
                ),
            ));
        }
        if subscriptions.past_due_grace_days > 3650 {
            return Err(ConfigError::new(
                "subscriptions.past_due_grace_days",
                "must be at most 3650 (ten years)",
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|e| {
            ConfigError::new(
                "server.listen",
                format!("{:?} is not an IP:port address: {e}", self.server.listen),
            )
        })
    }

    pub fn request_deadline(&self) -> Duration {
        Duration::from_millis(self.server.request_deadline_ms)
    }

    pub fn connect_options(&self) -> holdfast_store::ConnectOptions {
        let pool = |p: PoolConfig| holdfast_store::PoolOptions {
            max_connections: p.max_connections,
            acquire_timeout: Duration::from_millis(p.acquire_timeout_ms),
        };
        holdfast_store::ConnectOptions {
            url: self.database.url.expose().to_owned(),
            connect_timeout: Duration::from_millis(self.database.connect_timeout_ms),
            statement_timeout: Duration::from_millis(self.database.statement_timeout_ms),
            lock_timeout: Duration::from_millis(self.database.lock_timeout_ms),
            pgbouncer: self.database.pgbouncer,
            pools: holdfast_store::Pools {
                read: pool(self.database.pools.read),
                write: pool(self.database.pools.write),
                worker: pool(self.database.pools.worker),
            },
        }
    }
}

/// What to change when a database error is PgBouncer refusing what this
/// node sends: empty when it is not, else "; " and the fix on
/// either side, for the end of a start-up or preflight message.
pub fn pgbouncer_hint(error: &str) -> String {
    let hint = if error.contains("unsupported startup parameter") {
        "PgBouncer refuses this startup parameter: set database.pgbouncer = \"transaction\" \
         (or \"session\", matching PgBouncer's pool_mode), or list the parameter in PgBouncer's \
         ignore_startup_parameters"
    } else if error.contains("prepared statement \"sqlx_s_") || error.contains("unnamed prepared statement") {
        "this looks like PgBouncer in transaction pooling mode, where named prepared statements do not \
         survive: set database.pgbouncer = \"transaction\", or pool_mode = session in pgbouncer.ini"
    } else {
        return String::new();
    };
    format!("; {hint}")
}

fn tracing_subscriber_filter_check(level: &str) -> Result<(), ConfigError> {
    // Directives are comma-separated `target=level` or `level`; checking the
    // level words here keeps the service crate free of the subscriber.
    let levels = ["trace", "debug", "info", "warn", "error", "off"];
    let valid = !level.trim().is_empty()
        && level.split(',').all(|directive| {
            let word = directive.rsplit('=').next().unwrap_or("").trim().to_ascii_lowercase();
            levels.contains(&word.as_str()) || (directive.contains('=') && word.is_empty())
        });
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            "log.level",
            format!("{level:?} is not a filter such as \"info\" or \"holdfast_service=debug,info\""),
        ))
    }
}

fn from_figment(error: figment::Error) -> ConfigError {
    let key = error.path.join(".");
    let origin = error
        .metadata
        .as_ref()
        .map(|meta| match &meta.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", meta.name),
        })
        .unwrap_or_default();
    let key = if key.is_empty() { "<file>".to_owned() } else { key };
    ConfigError {
        key,
        origin,
        message: error.kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(&Sources {
            overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn defaults_load_and_validate() {
        let config = Config::defaults().unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert!(config.database.url.expose().starts_with("sqlite://"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = with(&[("server.listen", "localhost")]).unwrap_err();
        assert_eq!(error.key, "server.listen");
        let error = with(&[("database.url", "mysql://x")]).unwrap_err();
        assert_eq!(error.key, "database.url");
        let error = with(&[("database.statement_timeout_ms", "999999")]).unwrap_err();
        assert_eq!(error.key, "database.statement_timeout_ms");
        let error = with(&[("log.level", "loud")]).unwrap_err();
        assert_eq!(error.key, "log.level");
    }

    #[test]
    fn the_pgbouncer_mode_is_chosen_not_guessed() {
        let config = with(&[(
            "database.pgbouncer_admin_url",
            "postgres://pgbouncer@127.0.0.1:6432/pgbouncer",
        )]);
        let config = config.unwrap();
        assert_eq!(config.connect_options().pgbouncer, holdfast_store::PgBouncer::Off);
        let config = with(&[
            ("database.url", "postgres://app@127.0.0.1:6432/shop"),
            ("database.pgbouncer", "transaction"),
        ])
        .unwrap();
        assert_eq!(
            config.connect_options().pgbouncer,
            holdfast_store::PgBouncer::Transaction
        );
        let error = with(&[("database.pgbouncer", "statement")]).unwrap_err();
        assert_eq!(error.key, "database.pgbouncer");
        assert!(error.message.contains("transaction"), "{error}");
        let error = with(&[("database.pgbouncer", "session")]).unwrap_err();
        assert_eq!(error.key, "database.pgbouncer");
        assert!(error.message.contains("not a PostgreSQL URL"), "{error}");
    }

    #[test]
    fn pgbouncer_refusals_name_the_setting_on_both_sides() {
        let hint = pgbouncer_hint("cannot connect: unsupported startup parameter: extra_float_digits");
        assert!(hint.contains("database.pgbouncer = \"transaction\"") && hint.contains("ignore_startup_parameters"));
        let hint = pgbouncer_hint("error returned from database: prepared statement \"sqlx_s_1\" already exists");
        assert!(hint.contains("database.pgbouncer = \"transaction\"") && hint.contains("pool_mode = session"));
        assert_eq!(pgbouncer_hint("connection refused"), "");
    }

    #[test]
    fn unknown_keys_and_wrong_types_in_a_file_are_errors() {
        let dir = std::env::temp_dir().join(format!("holdfast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("typo.toml");
        std::fs::write(&file, "[server]\nlisen = \"0.0.0.0:80\"\n").unwrap();
        let error = Config::load(&Sources {
            file: Some(file.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(error.key, "server.lisen");
        assert!(error.message.contains("lisen"), "{error}");
        assert!(error.to_string().contains("typo.toml"), "{error}");
        std::fs::write(&file, "[database.pools.read]\nmax_connections = \"many\"\n").unwrap();
        let error = Config::load(&Sources {
            file: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(error.key, "database.pools.read.max_connections");
    }

    #[test]
    fn subscription_settings_are_checked_against_their_queue() {
        let config = Config::defaults().unwrap();
        assert!(config.subscriptions.enabled && !config.subscriptions.test_clocks);
        assert_eq!(config.subscriptions.past_due_grace_days, 14);
        let payments = config.queues.subscription_payments;
        assert_eq!((payments.visibility_timeout_s, payments.max_receives), (300, 3));
        assert_eq!(config.subscriptions.dunning_delay(1), Duration::from_secs(86_400));
        assert_eq!(config.subscriptions.dunning_delay(2), Duration::from_secs(259_200));
        assert_eq!(config.subscriptions.dunning_delay(5), Duration::from_secs(259_200));
        let error = with(&[("subscriptions.dunning_delays_s", "[86400, 86400, 86400]")]).unwrap_err();
        assert_eq!(error.key, "subscriptions.dunning_delays_s");
        assert!(error.message.contains("max_receives = 3"), "{error}");
        let error = with(&[("subscriptions.dunning_delays_s", "[60]")]).unwrap_err();
        assert!(error.message.contains("visibility_timeout_s"), "{error}");
        let error = with(&[("subscriptions.dunning_delays_s", "[]")]).unwrap_err();
        assert_eq!(error.key, "subscriptions.dunning_delays_s");
        let error = with(&[("subscriptions.scheduler_interval_ms", "0")]).unwrap_err();
        assert_eq!(error.key, "subscriptions.scheduler_interval_ms");
        let error = with(&[("queues.subscription_payments.max_receives", "0")]).unwrap_err();
        assert_eq!(error.key, "queues.subscription_payments.max_receives");
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::defaults().unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("whsec_holdfast_sandbox"));
        assert!(!printed.contains("sk_test_holdfast_sandbox"));
    }
}
