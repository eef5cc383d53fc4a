//! The scenario file: what a drill starts, the load it drives, the faults it
//! injects and when, and the gates, invariants and stop conditions that
//! decide its verdict. The shipped scenarios are the TOML files in
//! `crates/drills/scenarios/`, embedded in the binary; `docs/drills.md`
//! describes every key.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::metrics;
use crate::proxy::Toxic;

/// The shipped scenarios, in the order `all` runs them.
pub const SHIPPED: &[(&str, &str)] = &[
    ("inventory-hang", include_str!("../../scenarios/inventory-hang.toml")),
    ("partner-down", include_str!("../../scenarios/partner-down.toml")),
    ("payment-flaky", include_str!("../../scenarios/payment-flaky.toml")),
    ("table-lock", include_str!("../../scenarios/table-lock.toml")),
    ("bad-db-url", include_str!("../../scenarios/bad-db-url.toml")),
    ("latency-500ms", include_str!("../../scenarios/latency-500ms.toml")),
    ("pool-shrink", include_str!("../../scenarios/pool-shrink.toml")),
];

/// A parsed and checked scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// One line: what goes wrong.
    pub summary: String,
    /// The incident it replays and what Holdfast must do instead.
    pub incident: String,
    /// The databases it runs on; the first is used when no `--database-url` is given.
    #[serde(default = "both_backends")]
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub topology: Topology,
    /// Configuration keys of every holdfast node it starts, as `--set` gives them
    /// (`--set` wins).
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub load: LoadShape,
    pub phases: Phases,
    #[serde(default, rename = "faults")]
    fault_specs: Vec<FaultSpec>,
    /// Filled from `fault_specs` by [`Scenario::parse`].
    #[serde(skip)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub gates: Vec<GateSpec>,
    #[serde(default)]
    pub invariants: InvariantsSpec,
    #[serde(default)]
    pub stop: StopSpec,
    #[serde(default)]
    pub steady_state: SteadyStateSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

fn both_backends() -> Vec<Backend> {
    vec![Backend::Sqlite, Backend::Postgres]
}

/// The processes a drill starts besides the load driver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Order nodes (`holdfast serve --role all`); the load is spread over them.
    pub order_nodes: u32,
    /// `local`: stock in the order node's database. `remote`: a separate
    /// `serve --role inventory` node on a database of its own, reached through
    /// the proxy `inventory`.
    pub inventory: Placement,
    /// Put the sandbox payment provider behind the proxy `payments`.
    pub payments_proxy: bool,
    /// Put the order database behind the proxy `database` (PostgreSQL only:
    /// the order nodes connect through it; the drill's own checks do not).
    pub database_proxy: bool,
    /// Put a real PgBouncer in transaction mode (`max_client_conn` 200,
    /// `default_pool_size` 20) between the order nodes and PostgreSQL; a
    /// `pgbouncer` fault changes its settings.
    pub pgbouncer: bool,
    /// NATS JetStream servers to start (0: no NATS sink).
    pub nats: u32,
    /// A partner receiver with one endpoint for every event type.
    pub partner: bool,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            order_nodes: 1,
            inventory: Placement::Local,
            payments_proxy: false,
            database_proxy: false,
            pgbouncer: false,
            nats: 0,
            partner: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    #[default]
    Local,
    Remote,
}

/// The load: an open loop (requests go out on schedule whether or not the
/// earlier ones have answered, so a hung dependency cannot slow the load
/// down and hide its own latency).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadShape {
    pub checkouts_per_s: f64,
    /// `GET /api/v1/orders/{id}` of a recent order.
    pub reads_per_s: f64,
    /// Requests in flight at most; one more is not sent and counts as dropped.
    pub max_in_flight: usize,
    /// SKUs with plenty of stock.
    pub skus: usize,
    /// The share of checkouts for the scarce SKU, which sells out.
    pub scarce_share: f64,
    pub scarce_stock: i64,
    /// The share of checkouts paid with a card the provider declines.
    pub declined_share: f64,
    /// A request slower than this counts as late.
    pub late_after_ms: u64,
    /// The client gives up after this long (the request counts as dropped).
    pub timeout_ms: u64,
}

impl Default for LoadShape {
    fn default() -> Self {
        Self {
            checkouts_per_s: 30.0,
            reads_per_s: 10.0,
            max_in_flight: 256,
            skus: 8,
            scarce_share: 0.1,
            scarce_stock: 25,
            declined_share: 0.05,
            late_after_ms: 10_100,
            timeout_ms: 15_000,
        }
    }
}

/// Phase lengths in seconds; `quick` shortens them for CI.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phases {
    pub baseline_s: f64,
    pub fault_s: f64,
    /// How long the heal may take (a restart, a reload) before the drill gives up.
    #[serde(default = "default_heal_limit")]
    pub heal_limit_s: f64,
    pub recovery_s: f64,
    /// After the load: how long the cold path may take to drain before the
    /// invariants are checked anyway.
    #[serde(default = "default_settle")]
    pub settle_s: f64,
    #[serde(default)]
    pub quick: QuickPhases,
}

fn default_heal_limit() -> f64 {
    30.0
}

fn default_settle() -> f64 {
    30.0
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickPhases {
    pub baseline_s: Option<f64>,
    pub fault_s: Option<f64>,
    pub recovery_s: Option<f64>,
}

/// The phase lengths one run uses.
#[derive(Debug, Clone, Copy)]
pub struct Durations {
    pub baseline: Duration,
    pub fault: Duration,
    pub heal_limit: Duration,
    pub recovery: Duration,
    pub settle: Duration,
}

impl Phases {
    pub fn durations(&self, quick: bool) -> Durations {
        let pick = |full: f64, quick_value: Option<f64>| {
            let seconds = if quick { quick_value.unwrap_or(full) } else { full };
            Duration::from_secs_f64(seconds.max(0.0))
        };
        Durations {
            baseline: pick(self.baseline_s, self.quick.baseline_s),
            fault: pick(self.fault_s, self.quick.fault_s),
            heal_limit: pick(self.heal_limit_s, None),
            recovery: pick(self.recovery_s, self.quick.recovery_s),
            settle: pick(self.settle_s, None),
        }
    }
}

/// A fault as written in the file; [`Fault`] is the checked form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    name: String,
    /// `proxy.<name>`, `partner` or `payments`.
    target: String,
    /// Seconds into the fault phase.
    #[serde(default)]
    at_s: f64,
    /// How long it lasts; until the fault phase ends when absent.
    for_s: Option<f64>,
    /// The backstop: the fault ends by itself this long after it began even if
    /// the drill is stuck or gone. Default: its length plus 10 s.
    time_limit_s: Option<f64>,
    /// A Toxiproxy toxic (`type`, `attributes`, `stream`, `toxicity`) for a proxy.
    toxic: Option<toml::Value>,
    /// Apply the toxic in pulses: on for `pulse_on_s` every `pulse_every_s`
    /// (each pulse ended by the proxy itself), so it hits requests at random
    /// moments on every connection rather than whole connections.
    pulse_on_s: Option<f64>,
    pulse_every_s: Option<f64>,
    /// The proxy stops listening and cuts its connections.
    down: Option<bool>,
    /// The partner answers every delivery with this status.
    status: Option<u16>,
    /// The payment provider answers this share of calls with 500.
    failure_rate: Option<f64>,
    /// For `database`: a statement run in a transaction that stays open (and
    /// keeps its locks) until the heal.
    sql: Option<String>,
    /// For `database`: the table whose lock waiters show the fault took effect.
    table: Option<String>,
    /// For `new-node`: the database host, mistyped, that a new node is deployed with.
    database_host: Option<String>,
    /// For `pgbouncer`: the `max_client_conn` it is reloaded with.
    max_client_conn: Option<u32>,
}

/// A checked fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub name: String,
    pub target: String,
    pub at: Duration,
    pub length: Option<Duration>,
    pub time_limit: Option<Duration>,
    pub action: FaultAction,
}

#[derive(Debug, Clone)]
pub enum FaultAction {
    Toxic {
        proxy: String,
        toxic: Toxic,
        /// (on, every): the toxic is on for `on` at the start of every `every`.
        pulse: Option<(Duration, Duration)>,
    },
    ProxyDown {
        proxy: String,
    },
    PartnerStatus {
        status: u16,
    },
    PaymentsFailures {
        rate: f64,
    },
    /// A statement holding its locks in an open transaction on the order database.
    HeldTransaction {
        sql: String,
        table: String,
    },
    /// A new order node deployed with this database host instead of the real
    /// one, and `holdfast preflight` run against its configuration.
    MisconfiguredNode {
        host: String,
    },
    /// The drill's PgBouncer reloaded with a smaller `max_client_conn`.
    PgBouncerReload {
        max_client_conn: u32,
    },
}

impl Fault {
    /// How long it lasts in a fault phase of `phase`: its own length, cut at the
    /// phase's end.
    pub fn length_in(&self, phase: Duration) -> Duration {
        let rest = phase.saturating_sub(self.at);
        self.length.map_or(rest, |length| length.min(rest))
    }

    /// The limit the fault enforces on itself, from when it began.
    pub fn limit_in(&self, phase: Duration) -> Duration {
        self.time_limit
            .unwrap_or_else(|| self.length_in(phase) + Duration::from_secs(10))
    }
}

/// A gate: one metric over one window against a threshold. `max` and `min`
/// are absolute; `max_vs_baseline` is a ratio to the same metric over the
/// baseline, plus `plus`. When both `max` and `max_vs_baseline` are given,
/// both must hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    pub name: String,
    /// See `docs/drills.md` for the list.
    pub metric: String,
    /// `baseline`, `fault`, `heal`, `recovery`, `all`, or
    /// `fault:<fault name>` (from that fault's injection to its heal), or
    /// `breaker_open:<dependency>` (the fault phase while that breaker is open).
    #[serde(default = "default_window")]
    pub window: String,
    pub max: Option<f64>,
    pub min: Option<f64>,
    pub max_vs_baseline: Option<f64>,
    #[serde(default)]
    pub plus: f64,
    /// What the gate protects: the postmortem's action item when it fails.
    #[serde(default)]
    pub protects: String,
}

fn default_window() -> String {
    "fault".to_owned()
}

/// Which invariants to leave out (they are all checked by default, where the
/// topology has what they need).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvariantsSpec {
    pub skip: Vec<String>,
}

/// When to end the fault early: the drill heals at once and fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopSpec {
    /// Checkout error rate over the last `window_s` seconds.
    pub max_error_rate: Option<f64>,
    pub window_s: f64,
}

impl Default for StopSpec {
    fn default() -> Self {
        Self {
            max_error_rate: None,
            window_s: 3.0,
        }
    }
}

/// What the baseline must look like before any fault is injected; if it does
/// not, the drill has nothing to compare with and ends undecided.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteadyStateSpec {
    pub max_error_rate: f64,
    pub max_p99_ms: f64,
}

impl Default for SteadyStateSpec {
    fn default() -> Self {
        Self {
            max_error_rate: 0.02,
            max_p99_ms: 1000.0,
        }
    }
}

/// The invariants a drill can check, by name.
pub const INVARIANTS: [&str; 5] = [
    "no_lost_orders",
    "no_oversell",
    "no_double_charge",
    "webhooks_delivered_in_order",
    "nats_events_once",
];

impl Scenario {
    /// Parses and checks a scenario file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        let mut scenario: Scenario = toml::from_str(text).with_context(|| format!("scenario {origin}"))?;
        scenario.faults = scenario
            .fault_specs
            .iter()
            .map(|spec| scenario.check_fault(spec))
            .collect::<anyhow::Result<_>>()
            .with_context(|| format!("scenario {origin}"))?;
        scenario.check().with_context(|| format!("scenario {origin}"))?;
        Ok(scenario)
    }

    /// The shipped scenario called `name`.
    pub fn shipped(name: &str) -> anyhow::Result<Self> {
        let (_, text) = SHIPPED.iter().find(|(known, _)| *known == name).ok_or_else(|| {
            let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
            anyhow::anyhow!("no scenario `{name}`; the shipped ones are {}", names.join(", "))
        })?;
        Self::parse(text, name)
    }

    pub fn all_shipped() -> anyhow::Result<Vec<Self>> {
        SHIPPED.iter().map(|(name, text)| Self::parse(text, name)).collect()
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.name.is_empty() && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "`name` must be letters, digits and dashes, not {:?}",
            self.name
        );
        anyhow::ensure!(
            !self.backends.is_empty(),
            "`backends` must name sqlite, postgres or both"
        );
        anyhow::ensure!(
            self.topology.order_nodes >= 1,
            "`topology.order_nodes` must be at least 1"
        );
        anyhow::ensure!(
            self.load.checkouts_per_s > 0.0 && self.load.checkouts_per_s <= 2_000.0,
            "`load.checkouts_per_s` must be above 0 and at most 2000"
        );
        anyhow::ensure!(
            (0.0..=200.0).contains(&self.load.reads_per_s),
            "`load.reads_per_s` must be between 0 and 200"
        );
        anyhow::ensure!(self.load.skus >= 1, "`load.skus` must be at least 1");
        for (key, value) in [
            ("load.scarce_share", self.load.scarce_share),
            ("load.declined_share", self.load.declined_share),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&value), "`{key}` must be between 0 and 1");
        }
        anyhow::ensure!(self.phases.fault_s > 0.0, "`phases.fault_s` must be above 0");
        anyhow::ensure!(
            !self.topology.database_proxy || self.backends == [Backend::Postgres],
            "`topology.database_proxy` proxies a PostgreSQL connection: set backends = [\"postgres\"]"
        );
        anyhow::ensure!(
            !self.topology.pgbouncer || self.backends == [Backend::Postgres],
            "`topology.pgbouncer` pools PostgreSQL connections: set backends = [\"postgres\"]"
        );
        anyhow::ensure!(
            !(self.topology.pgbouncer && self.topology.database_proxy),
            "`topology.pgbouncer` and `topology.database_proxy` are one or the other"
        );
        for gate in &self.gates {
            metrics::check_gate(gate).with_context(|| format!("gate {:?}", gate.name))?;
            if let Some(fault) = gate.window.strip_prefix("fault:") {
                anyhow::ensure!(
                    self.faults.iter().any(|f| f.name == fault),
                    "gate {:?}: window `fault:{fault}` names no fault of this scenario",
                    gate.name
                );
            }
        }
        for name in &self.invariants.skip {
            anyhow::ensure!(
                INVARIANTS.contains(&name.as_str()),
                "`invariants.skip`: no invariant `{name}`; they are {}",
                INVARIANTS.join(", ")
            );
        }
        Ok(())
    }

    fn check_fault(&self, spec: &FaultSpec) -> anyhow::Result<Fault> {
        let seconds = |value: f64, key: &str| -> anyhow::Result<Duration> {
            anyhow::ensure!(
                value >= 0.0 && value.is_finite(),
                "fault {:?}: `{key}` must be >= 0",
                spec.name
            );
            Ok(Duration::from_secs_f64(value))
        };
        let action = match (spec.target.split_once('.'), spec.target.as_str()) {
            (Some(("proxy", proxy)), _) => {
                let known = self.proxies();
                anyhow::ensure!(
                    known.contains(&proxy),
                    "fault {:?}: this topology has no proxy `{proxy}` (it has: {})",
                    spec.name,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                );
                match (&spec.toxic, spec.down) {
                    (Some(toxic), None) => {
                        let json = serde_json::to_value(toxic)?;
                        let toxic = Toxic::from_json(json)
                            .map_err(|e| anyhow::anyhow!("fault {:?}: `toxic`: {e}", spec.name))?
                            .named(spec.name.replace(' ', "_"));
                        let pulse = match (spec.pulse_on_s, spec.pulse_every_s) {
                            (None, None) => None,
                            (Some(on), Some(every)) if on > 0.0 && every > on => {
                                Some((Duration::from_secs_f64(on), Duration::from_secs_f64(every)))
                            }
                            _ => anyhow::bail!(
                                "fault {:?}: a pulse needs both `pulse_on_s` and `pulse_every_s`, with 0 < on < every",
                                spec.name
                            ),
                        };
                        FaultAction::Toxic {
                            proxy: proxy.to_owned(),
                            toxic,
                            pulse,
                        }
                    }
                    (None, Some(true)) => FaultAction::ProxyDown {
                        proxy: proxy.to_owned(),
                    },
                    _ => anyhow::bail!(
                        "fault {:?}: a proxy fault needs exactly one of `toxic` or `down = true`",
                        spec.name
                    ),
                }
            }
            (_, "partner") => {
                anyhow::ensure!(
                    self.topology.partner,
                    "fault {:?}: the topology has no partner",
                    spec.name
                );
                let status = spec
                    .status
                    .filter(|s| (100..600).contains(s))
                    .ok_or_else(|| anyhow::anyhow!("fault {:?}: a partner fault needs `status`", spec.name))?;
                FaultAction::PartnerStatus { status }
            }
            (_, "payments") => {
                let rate = spec.failure_rate.filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                    anyhow::anyhow!(
                        "fault {:?}: a payments fault needs `failure_rate` between 0 and 1",
                        spec.name
                    )
                })?;
                FaultAction::PaymentsFailures { rate }
            }
            (_, "database") => {
                anyhow::ensure!(
                    self.backends == [Backend::Postgres],
                    "fault {:?}: a database fault holds PostgreSQL locks: set backends = [\"postgres\"]",
                    spec.name
                );
                match (&spec.sql, &spec.table) {
                    (Some(sql), Some(table))
                        if !table.is_empty() && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                    {
                        FaultAction::HeldTransaction {
                            sql: sql.clone(),
                            table: table.clone(),
                        }
                    }
                    _ => anyhow::bail!(
                        "fault {:?}: a database fault needs `sql` and `table` (a plain table name)",
                        spec.name
                    ),
                }
            }
            (_, "new-node") => {
                let host =
                    spec.database_host.clone().filter(|h| !h.is_empty()).ok_or_else(|| {
                        anyhow::anyhow!("fault {:?}: a new-node fault needs `database_host`", spec.name)
                    })?;
                anyhow::ensure!(
                    self.backends == [Backend::Postgres],
                    "fault {:?}: a database host needs PostgreSQL: set backends = [\"postgres\"]",
                    spec.name
                );
                FaultAction::MisconfiguredNode { host }
            }
            (_, "pgbouncer") => {
                anyhow::ensure!(
                    self.topology.pgbouncer,
                    "fault {:?}: the topology has no PgBouncer (set `topology.pgbouncer = true`)",
                    spec.name
                );
                let max_client_conn = spec.max_client_conn.filter(|n| *n >= 1).ok_or_else(|| {
                    anyhow::anyhow!(
                        "fault {:?}: a pgbouncer fault needs `max_client_conn` of at least 1",
                        spec.name
                    )
                })?;
                FaultAction::PgBouncerReload { max_client_conn }
            }
            (_, other) => anyhow::bail!(
                "fault {:?}: unknown target `{other}` (expected proxy.<name>, partner, payments, database, new-node or pgbouncer)",
                spec.name
            ),
        };
        Ok(Fault {
            name: spec.name.clone(),
            target: spec.target.clone(),
            at: seconds(spec.at_s, "at_s")?,
            length: spec.for_s.map(|s| seconds(s, "for_s")).transpose()?,
            time_limit: spec.time_limit_s.map(|s| seconds(s, "time_limit_s")).transpose()?,
            action,
        })
    }

    /// The proxies the topology puts between Holdfast and its dependencies.
    pub fn proxies(&self) -> Vec<&'static str> {
        let mut proxies = Vec::new();
        if self.topology.inventory == Placement::Remote {
            proxies.push("inventory");
        }
        if self.topology.payments_proxy {
            proxies.push("payments");
        }
        if self.topology.database_proxy {
            proxies.push("database");
        }
        proxies
    }

    /// Whether invariant `name` applies: not skipped, and the topology has what
    /// it needs.
    pub fn checks(&self, name: &str) -> bool {
        if self.invariants.skip.iter().any(|skip| skip == name) {
            return false;
        }
        match name {
            "webhooks_delivered_in_order" => self.topology.partner,
            "nats_events_once" => self.topology.nats > 0,
            _ => true,
        }
    }

    /// The scenario's `[config]` as (dotted key, value) pairs, values written
    /// the way an environment variable or `--set` would give them.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(key, value)| (key.clone(), config_value(value)))
            .collect()
    }
}

/// A TOML value as `--set` takes it: strings bare, everything else in TOML
/// syntax (`[0, 500]`, `true`).
pub fn config_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses() {
        let all = Scenario::all_shipped().unwrap();
        assert_eq!(all.len(), SHIPPED.len());
        for scenario in &all {
            assert!(!scenario.faults.is_empty(), "{}", scenario.name);
            assert!(!scenario.gates.is_empty(), "{}", scenario.name);
        }
    }

    #[test]
    fn mistakes_are_named() {
        let base = r#"
            name = "x"
            summary = "s"
            incident = "i"
            [phases]
            baseline_s = 1
            fault_s = 1
            recovery_s = 1
        "#;
        let error = Scenario::parse(&format!("{base}\n[load]\ncheckout_per_s = 3\n"), "x").unwrap_err();
        assert!(format!("{error:#}").contains("checkout_per_s"), "{error:#}");
        let error = Scenario::parse(
            &format!("{base}\n[[faults]]\nname = \"f\"\ntarget = \"proxy.inventory\"\ndown = true\n"),
            "x",
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("no proxy `inventory`"), "{error:#}");
        let error = Scenario::parse(
            &format!("{base}\n[[gates]]\nname = \"g\"\nmetric = \"checkout.p98_ms\"\nmax = 1\n"),
            "x",
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("p98"), "{error:#}");
    }
}
