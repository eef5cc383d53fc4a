//! Injecting and healing a scenario's faults. Every fault gets a time limit
//! that ends it without the drill: the proxy removes its own toxics, and the
//! stand-ins in this process (the partner, the payment provider) run a
//! watchdog. Healing is idempotent, so the runner heals on every exit path
//! (the end of the fault phase, a stop condition, an error, Ctrl-C) without
//! caring which faults are still on. What each fault affected is read back
//! afterwards, so the report shows that it took effect.

use std::time::{Duration, Instant};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use holdfast_sandbox::Respond;
use holdfast_store::scratch;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;

use super::journal::{Event, Journal};
use super::rig::{PARTNER_HOOK, PGBOUNCER_MAX_CLIENT_CONN, Rig};
use super::scenario::{Fault, FaultAction};

/// How long a node deployed with a bad database host may take to refuse.
const MISCONFIGURED_WITHIN: Duration = Duration::from_secs(20);

fn record_check(journal: &Journal, name: &str, ok: bool, detail: &str) {
    journal.record(Event::Check {
        name: name.to_owned(),
        ok,
        detail: detail.chars().take(2000).collect(),
    });
}

/// A fault that was injected, and what it had affected before it began.
struct Injected {
    fault: Fault,
    healed: bool,
    injected_at: Instant,
    /// Pulses applied so far, for a pulsing toxic.
    pulses: u32,
    /// Counters read before the fault (deliveries refused, calls failed).
    before: u64,
    watchdog: Option<JoinHandle<()>>,
    /// The open transaction of a database fault.
    held: Option<PgConnection>,
    /// Backends seen waiting on the database fault's locks.
    waiters: Arc<Mutex<BTreeSet<i32>>>,
    /// PgBouncer's admin console, held from the shrink to the heal.
    console: Option<Console>,
    /// Client connections the fault cut as it began (PgBouncer's restart).
    cut: u64,
}

type Console = Arc<tokio::sync::Mutex<PgConnection>>;

/// The faults of one drill.
#[derive(Default)]
pub struct Faults {
    injected: Vec<Injected>,
}

impl Faults {
    /// Injects `fault`, which ends by itself after `limit` if nothing heals it.
    pub async fn inject(&mut self, rig: &Rig, fault: &Fault, limit: Duration, journal: &Journal) -> anyhow::Result<()> {
        let mut watchdog = None;
        let mut console = None;
        let mut cut = 0;
        let (detail, before) = match &fault.action {
            FaultAction::Toxic {
                proxy,
                toxic,
                pulse: None,
            } => {
                rig_proxy(rig, proxy)?.add_toxic_for(toxic.clone(), limit)?;
                (toxic.to_json().to_string(), 0)
            }
            FaultAction::Toxic {
                proxy,
                toxic,
                pulse: Some((on, every)),
            } => {
                rig_proxy(rig, proxy)?.add_toxic_for(toxic.clone(), *on)?;
                (
                    format!(
                        "{} for {} s of every {} s",
                        toxic.to_json(),
                        on.as_secs_f64(),
                        every.as_secs_f64()
                    ),
                    0,
                )
            }
            FaultAction::ProxyDown { proxy } => {
                rig_proxy(rig, proxy)?.disable_for(limit).await?;
                ("down: connections refused and cut".to_owned(), 0)
            }
            FaultAction::PartnerStatus { status } => {
                let partner = rig.partner.as_ref().ok_or_else(|| anyhow::anyhow!("no partner"))?;
                let before = refused(rig, *status);
                partner.receiver.set_default(PARTNER_HOOK, Respond::status(*status));
                let receiver = partner.receiver.clone();
                watchdog = Some(tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    receiver.set_default(PARTNER_HOOK, Respond::ok());
                }));
                (format!("every delivery answered {status}"), before)
            }
            FaultAction::PaymentsFailures { rate } => {
                let before = rig.payments.stats().injected_failures;
                rig.payments.set_failure_rate(*rate);
                let payments = rig.payments.clone();
                watchdog = Some(tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    payments.set_failure_rate(0.0);
                }));
                (format!("{:.0}% of API calls answered 500", rate * 100.0), before)
            }
            FaultAction::PgBouncerReload { max_client_conn } => {
                let (ini, admin_url, database) = pgbouncer_control(rig)?;
                let before = pgbouncer_refusals(rig);
                let mut admin = scratch::pgbouncer_admin(&admin_url).await?;
                cut = scratch::set_max_client_conn(&ini, &mut admin, *max_client_conn, Some(&database)).await?;
                let admin = Arc::new(tokio::sync::Mutex::new(admin));
                let held = admin.clone();
                watchdog = Some(tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    let mut admin = held.lock().await;
                    let _ = scratch::set_max_client_conn(&ini, &mut admin, PGBOUNCER_MAX_CLIENT_CONN, None).await;
                }));
                console = Some(admin);
                (
                    format!(
                        "PgBouncer restarted with max_client_conn {max_client_conn} (was \
                         {PGBOUNCER_MAX_CLIENT_CONN}): reloaded, and every client connection dropped"
                    ),
                    before,
                )
            }
            FaultAction::HeldTransaction { .. } => (String::new(), 0),
            FaultAction::MisconfiguredNode { host } => {
                let outcome = rig.deploy_misconfigured(host, MISCONFIGURED_WITHIN).await?;
                let refused = outcome.exited.is_some();
                record_check(
                    journal,
                    "mistyped_node_refused",
                    refused,
                    outcome.exited.as_deref().unwrap_or("it kept running"),
                );
                record_check(
                    journal,
                    "refusal_names_the_key_and_host",
                    outcome.log.contains(host.as_str()) && outcome.log.contains("database.url"),
                    &outcome.log,
                );
                record_check(
                    journal,
                    "preflight_fails_naming_the_host",
                    outcome.preflight_code == Some(1) && outcome.preflight_output.contains(host.as_str()),
                    &outcome.preflight_output,
                );
                (
                    format!("a new node deployed with database host {host}"),
                    u64::from(refused),
                )
            }
        };
        let mut held = None;
        let waiters = Arc::new(Mutex::new(BTreeSet::new()));
        let detail = match &fault.action {
            FaultAction::HeldTransaction { sql, table } => {
                let url = &rig.orders[0].database_url;
                held = Some(hold_transaction(url, sql, limit).await?);
                watchdog = Some(tokio::spawn(count_waiters(url.clone(), table.clone(), waiters.clone())));
                format!(
                    "{sql}, in a transaction held open (PostgreSQL ends it after {} s idle)",
                    limit.as_secs()
                )
            }
            _ => detail,
        };
        journal.record(Event::Inject {
            fault: fault.name.clone(),
            target: fault.target.clone(),
            detail,
            time_limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        });
        self.injected.push(Injected {
            fault: fault.clone(),
            healed: false,
            injected_at: Instant::now(),
            pulses: 1,
            before,
            watchdog,
            held,
            waiters,
            console,
            cut,
        });
        Ok(())
    }

    /// Starts the pulses of pulsing toxics that are due; each pulse ends by
    /// the proxy's own limit.
    pub fn pulse(&mut self, rig: &Rig) {
        for injected in self.injected.iter_mut().filter(|i| !i.healed) {
            let FaultAction::Toxic {
                proxy,
                toxic,
                pulse: Some((on, every)),
            } = &injected.fault.action
            else {
                continue;
            };
            if injected.injected_at.elapsed() >= *every * injected.pulses {
                injected.pulses += 1;
                if let Some(proxy) = rig.proxies.get(proxy) {
                    // A pulse still on (a slow tick) just runs on.
                    let _ = proxy.add_toxic_for(toxic.clone(), *on);
                }
            }
        }
    }

    /// Heals each fault whose own length (cut at the phase's end) is over at
    /// `elapsed` into a fault phase of `phase`.
    pub async fn heal_ended(&mut self, rig: &Rig, phase: Duration, elapsed: Duration, journal: &Journal) {
        for injected in self.injected.iter_mut().filter(|i| !i.healed) {
            if injected.fault.at + injected.fault.length_in(phase) < elapsed
                && injected
                    .fault
                    .length
                    .is_some_and(|length| injected.fault.at + length < phase)
            {
                heal_one(rig, injected, journal).await;
            }
        }
    }

    /// Heals every fault still on, newest first. Each heal is tried even when
    /// an earlier one failed; returns whether all succeeded.
    pub async fn heal_all(&mut self, rig: &Rig, journal: &Journal) -> bool {
        let mut all_ok = true;
        for injected in self.injected.iter_mut().rev().filter(|i| !i.healed) {
            all_ok &= heal_one(rig, injected, journal).await;
        }
        all_ok
    }

    /// Journals what each fault affected.
    pub fn record_effects(&self, rig: &Rig, journal: &Journal) {
        for injected in &self.injected {
            let fault = &injected.fault;
            let (affected, detail) = match &fault.action {
                FaultAction::Toxic { proxy, toxic, .. } => proxy_effect(rig, proxy, |r| r.name == toxic.name),
                FaultAction::ProxyDown { proxy } => proxy_effect(rig, proxy, |r| r.kind == "down"),
                FaultAction::PartnerStatus { status } => {
                    let refused = refused(rig, *status).saturating_sub(injected.before);
                    (refused, json!({"deliveries_refused": refused}))
                }
                FaultAction::PaymentsFailures { .. } => {
                    let stats = rig.payments.stats();
                    let failed = stats.injected_failures.saturating_sub(injected.before);
                    (failed, json!({"calls_failed": failed, "api_calls": stats.api_calls}))
                }
                FaultAction::MisconfiguredNode { host } => (
                    injected.before,
                    json!({"database_host": host, "refused_to_start": injected.before == 1}),
                ),
                FaultAction::PgBouncerReload { max_client_conn } => {
                    // The restart itself cuts every client connection; the
                    // lower limit then refuses some of the reconnections (none,
                    // when the nodes come back with fewer than the limit).
                    let refused = pgbouncer_refusals(rig).saturating_sub(injected.before);
                    (
                        refused + injected.cut,
                        json!({
                            "max_client_conn": max_client_conn,
                            "client_connections_cut": injected.cut,
                            "client_connections_refused": refused,
                        }),
                    )
                }
                FaultAction::HeldTransaction { table, .. } => {
                    let waiters = injected.waiters.lock().unwrap_or_else(PoisonError::into_inner);
                    (
                        waiters.len() as u64,
                        json!({"table": table, "backends_that_waited_for_the_lock": waiters.len()}),
                    )
                }
            };
            journal.record(Event::Effect {
                fault: fault.name.clone(),
                target: fault.target.clone(),
                affected,
                detail,
            });
        }
    }

    /// Whether every proxy is clean and every stand-in answers normally.
    pub fn left_behind(&self, rig: &Rig) -> Vec<String> {
        let mut left = Vec::new();
        for (name, proxy) in &rig.proxies {
            if !proxy.toxics().is_empty() || !proxy.is_enabled() {
                left.push(format!(
                    "proxy {name}: {} toxics, enabled {}",
                    proxy.toxics().len(),
                    proxy.is_enabled()
                ));
            }
        }
        if self.injected.iter().any(|i| !i.healed) {
            left.push("a fault was never healed".to_owned());
        }
        left
    }
}

/// Heals one fault and journals how it went; returns whether it worked.
async fn heal_one(rig: &Rig, injected: &mut Injected, journal: &Journal) -> bool {
    let result = match (injected.held.take(), injected.console.take()) {
        (Some(connection), _) => release(connection).await,
        (None, Some(console)) => restore_max_client_conn(rig, &console).await,
        (None, None) => heal(rig, &injected.fault).await,
    };
    if let Some(watchdog) = injected.watchdog.take() {
        watchdog.abort();
    }
    injected.healed = true;
    journal.record(Event::Heal {
        fault: injected.fault.name.clone(),
        target: injected.fault.target.clone(),
        detail: match &result {
            Ok(detail) => detail.clone(),
            Err(error) => format!("{error:#}"),
        },
        ok: result.is_ok(),
    });
    result.is_ok()
}

async fn heal(rig: &Rig, fault: &Fault) -> anyhow::Result<String> {
    match &fault.action {
        FaultAction::Toxic {
            proxy,
            toxic,
            pulse: None,
        } => match rig_proxy(rig, proxy)?.remove_toxic(&toxic.name) {
            Ok(()) => Ok(format!("toxic {} removed", toxic.name)),
            Err(_) => Ok(format!("toxic {} had already ended at its time limit", toxic.name)),
        },
        FaultAction::Toxic {
            proxy,
            toxic,
            pulse: Some(_),
        } => {
            let _ = rig_proxy(rig, proxy)?.remove_toxic(&toxic.name);
            Ok(format!("pulses of {} stopped", toxic.name))
        }
        FaultAction::ProxyDown { proxy } => {
            rig_proxy(rig, proxy)?.set_enabled(true).await?;
            Ok("listening again".to_owned())
        }
        FaultAction::PartnerStatus { .. } => {
            if let Some(partner) = &rig.partner {
                partner.receiver.set_default(PARTNER_HOOK, Respond::ok());
            }
            Ok("the partner answers 200 again".to_owned())
        }
        FaultAction::PaymentsFailures { .. } => {
            rig.payments.set_failure_rate(0.0);
            Ok("the provider answers every call again".to_owned())
        }
        FaultAction::PgBouncerReload { .. } => {
            let (_, admin_url, _) = pgbouncer_control(rig)?;
            let console = Arc::new(tokio::sync::Mutex::new(scratch::pgbouncer_admin(&admin_url).await?));
            restore_max_client_conn(rig, &console).await
        }
        FaultAction::HeldTransaction { .. } => Ok("the transaction had already ended".to_owned()),
        FaultAction::MisconfiguredNode { .. } => Ok("the mistyped node is not running".to_owned()),
    }
}

/// Reloads PgBouncer with its usual `max_client_conn`, through `console`.
async fn restore_max_client_conn(rig: &Rig, console: &Console) -> anyhow::Result<String> {
    let (ini, _, _) = pgbouncer_control(rig)?;
    let mut admin = console.lock().await;
    scratch::set_max_client_conn(&ini, &mut admin, PGBOUNCER_MAX_CLIENT_CONN, None).await?;
    let _ = admin.ping().await;
    Ok(format!(
        "PgBouncer reloaded with max_client_conn {PGBOUNCER_MAX_CLIENT_CONN} again"
    ))
}

/// Opens a transaction on `url`, runs `sql` in it and keeps it open. Should
/// the drill never come back, PostgreSQL itself ends the session once it
/// has been idle in the transaction for `limit`.
async fn hold_transaction(url: &str, sql: &str, limit: Duration) -> anyhow::Result<PgConnection> {
    let mut connection = PgConnection::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to hold a lock: {e}"))?;
    let limit_ms = limit.as_millis().max(1000);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET idle_in_transaction_session_timeout = {limit_ms}; BEGIN; {sql}"
    )))
    .execute(&mut connection)
    .await
    .map_err(|e| anyhow::anyhow!("running `{sql}`: {e}"))?;
    Ok(connection)
}

/// Rolls the held transaction back: its locks go, and what it built with them.
async fn release(mut connection: PgConnection) -> anyhow::Result<String> {
    match sqlx::raw_sql("ROLLBACK").execute(&mut connection).await {
        Ok(_) => {
            let _ = connection.close().await;
            Ok("transaction rolled back: its locks are released".to_owned())
        }
        // PostgreSQL ended it at its idle limit: the locks are gone already.
        Err(error) => Ok(format!("the transaction had already ended ({error})")),
    }
}

/// Records, until aborted, every backend seen waiting for a lock on `table`.
async fn count_waiters(url: String, table: String, waiters: Arc<Mutex<BTreeSet<i32>>>) {
    let Ok(mut connection) = PgConnection::connect(&url).await else {
        return;
    };
    let query = "SELECT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE NOT l.granted AND c.relname = $1";
    loop {
        if let Ok(pids) = sqlx::query_scalar::<_, i32>(query)
            .bind(&table)
            .fetch_all(&mut connection)
            .await
        {
            waiters.lock().unwrap_or_else(PoisonError::into_inner).extend(pids);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rig_proxy<'a>(rig: &'a Rig, name: &str) -> anyhow::Result<&'a crate::proxy::Proxy> {
    rig.proxies
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("no proxy `{name}` in this drill"))
}

/// The drill's PgBouncer's ini file and admin console, and the order
/// nodes' database behind it.
fn pgbouncer_control(rig: &Rig) -> anyhow::Result<(std::path::PathBuf, String, String)> {
    let bouncer = rig
        .pgbouncer
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no PgBouncer in this drill"))?;
    let node = rig.orders.first().ok_or_else(|| anyhow::anyhow!("no order node"))?;
    let url = url::Url::parse(&node.database_url).context("the order database URL")?;
    let database = url.path().trim_start_matches('/').to_owned();
    Ok((bouncer.ini_path(), bouncer.admin_url(), database))
}

/// Client connections PgBouncer has refused for `max_client_conn`, from its log.
fn pgbouncer_refusals(rig: &Rig) -> u64 {
    rig.pgbouncer.as_ref().map_or(0, |bouncer| {
        std::fs::read_to_string(bouncer.log_path())
            .map(|log| log.matches("no more connections allowed").count() as u64)
            .unwrap_or(0)
    })
}

/// Deliveries the partner answered with `status`.
fn refused(rig: &Rig, status: u16) -> u64 {
    rig.partner.as_ref().map_or(0, |partner| {
        partner
            .receiver
            .deliveries(PARTNER_HOOK)
            .iter()
            .filter(|d| d.status == status)
            .count() as u64
    })
}

fn proxy_effect(
    rig: &Rig,
    proxy: &str,
    matches: impl Fn(&crate::proxy::FaultRecord) -> bool,
) -> (u64, serde_json::Value) {
    let records: Vec<crate::proxy::FaultRecord> = rig
        .proxies
        .get(proxy)
        .map(|p| p.record().into_iter().filter(|r| matches(r)).collect())
        .unwrap_or_default();
    let affected = records.iter().map(|r| r.connections.max(u64::from(r.bytes > 0))).sum();
    (affected, serde_json::to_value(&records).unwrap_or_default())
}
