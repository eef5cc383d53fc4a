//! `holdfast preflight`: the post-deploy check a pipeline runs.
//! One line per check, each naming what it tried; any failure fails the run.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::Utc;
use holdfast_domain::{Address, Currency, Email, Money, OrderId, OrderStatus, Quantity, Sku};
use holdfast_store::{NewOrder, NewProduct, SharedStore, StatusChange, describe_target};
use sqlx::{Connection, Row};

use crate::config::{Config, PaymentsProvider};

/// The SKU the synthetic checkout buys; it holds one unit that is reserved
/// and released again.
pub const CANARY_SKU: &str = "HOLDFAST-PREFLIGHT-CANARY";

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: true,
            detail: detail.into(),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Runs every check that can run: later checks that need the database are
/// skipped (and reported) when it is unreachable.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut checks = vec![Check::pass("config", "parsed and validated")];
    let started = Instant::now();
    let store = match holdfast_store::connect(&config.connect_options()).await {
        Ok(store) => {
            checks.push(Check::pass(
                "database",
                format!(
                    "{} reachable in {} ms",
                    describe_target(config.database.url.expose()),
                    started.elapsed().as_millis()
                ),
            ));
            store
        }
        Err(error) => {
            let hint = crate::config::pgbouncer_hint(&error.to_string());
            checks.push(Check::fail(
                "database",
                format!("config key `database.url`: {error}{hint}"),
            ));
            return checks;
        }
    };
    checks.push(migrations(&store).await);
    if !config.database.pgbouncer_admin_url.expose().is_empty() {
        checks.extend(pgbouncer(config).await);
    }
    if config.inventory.mode == crate::config::InventoryMode::Remote {
        checks.push(inventory(config).await);
    }
    checks.push(payments(config).await);
    checks.push(warehouse(config).await);
    checks.push(events(config).await);
    if checks.iter().all(|c| c.ok) {
        checks.push(synthetic_checkout(&store).await);
    }
    checks
}

async fn migrations(store: &SharedStore) -> Check {
    match store.migration_status().await {
        Ok(status) if status.is_current() => Check::pass("migrations", format!("current ({:?})", status.applied)),
        Ok(status) => Check::fail(
            "migrations",
            format!(
                "pending {:?}, unknown to this binary {:?}: run `holdfast migrate`",
                status.pending(),
                status.unknown()
            ),
        ),
        Err(error) => Check::fail("migrations", error.to_string()),
    }
}

/// This node's pools are client connections to PgBouncer: one
/// line each for its pool_mode against `database.pgbouncer`, its
/// `max_client_conn` and the server-side pool of this database.
async fn pgbouncer(config: &Config) -> Vec<Check> {
    let url = config.database.pgbouncer_admin_url.expose();
    match pgbouncer_settings(url, config).await {
        Ok(bouncer) => vec![
            pool_mode_check(config, &bouncer),
            max_client_conn_check(config, &bouncer),
            pool_size_check(config, &bouncer),
        ],
        Err(error) => vec![Check::fail(
            "pgbouncer",
            format!(
                "config key `database.pgbouncer_admin_url` ({}): {error}",
                describe_target(url)
            ),
        )],
    }
}

/// What the admin console says about PgBouncer and this node's database.
struct PgBouncerSettings {
    version: String,
    /// This database's pool_mode when set, else the global one.
    pool_mode: String,
    max_client_conn: i64,
    /// Server connections per user for this database.
    pool_size: Option<i64>,
    /// `max_db_connections` for this database; 0 is unlimited.
    database_max_connections: Option<i64>,
}

fn ours(config: &Config) -> u32 {
    let pools = &config.database.pools;
    pools.read.max_connections + pools.write.max_connections + pools.worker.max_connections
}

fn pool_mode_check(config: &Config, bouncer: &PgBouncerSettings) -> Check {
    const NAME: &str = "pgbouncer pool_mode";
    let chosen = config.database.pgbouncer;
    let theirs = holdfast_store::PgBouncer::from_pool_mode(&bouncer.pool_mode);
    let said = format!("{} has pool_mode = {}", bouncer.version, bouncer.pool_mode);
    match (chosen, theirs) {
        (_, None) => Check::fail(
            NAME,
            format!("{said}, which cannot run transactions: set pool_mode = transaction in pgbouncer.ini"),
        ),
        (ours, Some(theirs)) if ours == theirs => {
            Check::pass(NAME, format!("{said}, as database.pgbouncer = \"{}\"", ours.as_str()))
        }
        // Nothing session-scoped is used, so this works, pinning a server
        // connection per client connection.
        (holdfast_store::PgBouncer::Transaction, Some(holdfast_store::PgBouncer::Session)) => Check::pass(
            NAME,
            format!("{said}; database.pgbouncer = \"transaction\" works there too"),
        ),
        (ours, Some(theirs)) => Check::fail(
            NAME,
            format!(
                "{said} but database.pgbouncer = \"{}\": set database.pgbouncer = \"{}\", or pool_mode = {} \
                 in pgbouncer.ini",
                ours.as_str(),
                theirs.as_str(),
                match ours {
                    holdfast_store::PgBouncer::Off | holdfast_store::PgBouncer::Session => "session",
                    holdfast_store::PgBouncer::Transaction => "transaction",
                }
            ),
        ),
    }
}

fn max_client_conn_check(config: &Config, bouncer: &PgBouncerSettings) -> Check {
    const NAME: &str = "pgbouncer max_client_conn";
    let ours = ours(config);
    if i64::from(ours) > bouncer.max_client_conn {
        Check::fail(
            NAME,
            format!(
                "database.pools.* add up to {ours} connections but PgBouncer max_client_conn is {}",
                bouncer.max_client_conn
            ),
        )
    } else {
        Check::pass(
            NAME,
            format!(
                "{ours} pooled connections fit max_client_conn {}",
                bouncer.max_client_conn
            ),
        )
    }
}

/// In session mode every client connection holds a server connection, so
/// this node's pools must fit the database's pool; in transaction mode they
/// share it, and only `max_db_connections` caps the clients' database.
fn pool_size_check(config: &Config, bouncer: &PgBouncerSettings) -> Check {
    const NAME: &str = "pgbouncer pool size";
    let ours = ours(config);
    if let Some(max) = bouncer.database_max_connections.filter(|max| *max > 0)
        && i64::from(ours) > max
    {
        return Check::fail(
            NAME,
            format!("database.pools.* add up to {ours} connections but PgBouncer allows {max} for this database"),
        );
    }
    let Some(pool_size) = bouncer.pool_size else {
        return Check::fail(
            NAME,
            "SHOW DATABASES does not list this node's database: is database.url's database behind this PgBouncer?",
        );
    };
    let session =
        holdfast_store::PgBouncer::from_pool_mode(&bouncer.pool_mode) == Some(holdfast_store::PgBouncer::Session);
    if session && i64::from(ours) > pool_size {
        Check::fail(
            NAME,
            format!(
                "database.pools.* add up to {ours} connections but pool_size is {pool_size} in session mode: \
                 the rest would wait in PgBouncer for a server connection"
            ),
        )
    } else {
        Check::pass(
            NAME,
            format!("{ours} pooled connections over pool_size {pool_size} server connections"),
        )
    }
}

async fn pgbouncer_settings(url: &str, config: &Config) -> anyhow::Result<PgBouncerSettings> {
    // The admin console accepts no startup parameters but its own.
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?.extra_float_digits(None);
    let connect = sqlx::PgConnection::connect_with(&options);
    let mut conn = tokio::time::timeout(Duration::from_millis(config.database.connect_timeout_ms), connect)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} ms", config.database.connect_timeout_ms))??;
    // The admin console speaks only the simple query protocol: raw_sql.
    let settings = sqlx::raw_sql("SHOW CONFIG").fetch_all(&mut conn).await?;
    let setting = |key: &str| {
        settings
            .iter()
            .find(|row| cell(row, "key").as_deref() == Some(key))
            .and_then(|row| cell(row, "value"))
    };
    let max_client_conn = setting("max_client_conn")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("SHOW CONFIG has no max_client_conn"))?;
    let global_mode = setting("pool_mode").ok_or_else(|| anyhow::anyhow!("SHOW CONFIG has no pool_mode"))?;
    let version = sqlx::raw_sql("SHOW VERSION")
        .fetch_all(&mut conn)
        .await?
        .first()
        .and_then(|row| cell(row, "version"))
        .unwrap_or_else(|| "PgBouncer".into());
    let database = url::Url::parse(config.database.url.expose())
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .unwrap_or_default();
    let databases = sqlx::raw_sql("SHOW DATABASES").fetch_all(&mut conn).await?;
    let row = databases
        .iter()
        .find(|row| cell(row, "name").as_deref() == Some(database.as_str()));
    let _ = conn.close().await;
    let number = |name: &str| row.and_then(|row| cell(row, name)).and_then(|v| v.parse().ok());
    Ok(PgBouncerSettings {
        version,
        pool_mode: row
            .and_then(|row| cell(row, "pool_mode"))
            .filter(|mode| !mode.is_empty())
            .unwrap_or(global_mode),
        max_client_conn,
        pool_size: number("pool_size"),
        database_max_connections: number("max_connections"),
    })
}

/// A cell of an admin-console row as text, whatever its wire type.
fn cell(row: &sqlx::postgres::PgRow, name: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(name)
        .ok()
        .flatten()
        .or_else(|| {
            row.try_get::<Option<i32>, _>(name)
                .ok()
                .flatten()
                .map(|v| v.to_string())
        })
        .or_else(|| {
            row.try_get::<Option<i64>, _>(name)
                .ok()
                .flatten()
                .map(|v| v.to_string())
        })
}

async fn payments(config: &Config) -> Check {
    let payments = &config.payments;
    if payments.provider == PaymentsProvider::Sandbox && payments.url.is_empty() {
        return Check::pass("payments", "in-process sandbox provider");
    }
    let deadline = Duration::from_millis(config.dependencies.payments.deadline_ms);
    http_reachable("payments", "payments.url", &payments.url, deadline).await
}

/// The inventory node answers, and accepts this node's key: reading a SKU
/// that cannot exist answers 404 only past authentication.
async fn inventory(config: &Config) -> Check {
    use crate::providers::inventory::{InventoryError, RemoteInventory};
    let deadline = Duration::from_millis(config.dependencies.inventory.deadline_ms);
    let url = &config.inventory.url;
    let client = match RemoteInventory::new(url, config.inventory.api_key.clone(), deadline) {
        Ok(client) => client,
        Err(error) => return Check::fail("inventory", error.to_string()),
    };
    let started = Instant::now();
    let probe = holdfast_domain::Sku::parse("PREFLIGHT-PROBE").map_err(|e| e.message);
    let Ok(probe) = probe else {
        return Check::fail("inventory", "the probe SKU does not parse");
    };
    match client.level(&probe).await {
        Ok(_) | Err(InventoryError::NotFound) => Check::pass(
            "inventory",
            format!("{url} answered in {} ms", started.elapsed().as_millis()),
        ),
        Err(InventoryError::Rejected { status, detail }) if status == 401 || status == 403 => Check::fail(
            "inventory",
            format!("config key `inventory.api_key`: {url} refused the key (HTTP {status}: {detail})"),
        ),
        Err(error) => Check::fail(
            "inventory",
            format!(
                "config key `inventory.url`: {url} did not answer within {} ms: {error}",
                deadline.as_millis()
            ),
        ),
    }
}

async fn warehouse(config: &Config) -> Check {
    if config.warehouse.url.is_empty() {
        return Check::pass("warehouse", "in-process sandbox warehouse");
    }
    let deadline = Duration::from_millis(config.dependencies.warehouse.deadline_ms);
    http_reachable("warehouse", "warehouse.url", &config.warehouse.url, deadline).await
}

/// Any HTTP answer proves an API is reachable; auth is not checked because a
/// GET without a key answers 401 by design.
async fn http_reachable(name: &'static str, key: &str, url: &str, deadline: Duration) -> Check {
    let client = match reqwest::Client::builder().timeout(deadline).build() {
        Ok(client) => client,
        Err(error) => return Check::fail(name, error.to_string()),
    };
    let started = Instant::now();
    match client.get(url).send().await {
        Ok(response) => Check::pass(
            name,
            format!(
                "{url} answered HTTP {} in {} ms",
                response.status().as_u16(),
                started.elapsed().as_millis()
            ),
        ),
        Err(error) => Check::fail(
            name,
            format!(
                "config key `{key}`: {url} unreachable within {} ms: {error}",
                deadline.as_millis()
            ),
        ),
    }
}

/// NATS answers and has JetStream, when events are configured.
async fn events(config: &Config) -> Check {
    let url = &config.events.nats_url;
    if url.is_empty() {
        return Check::pass("events", "no NATS sink (events.nats_url is empty)");
    }
    let deadline = Duration::from_millis(config.dependencies.events.deadline_ms);
    let started = Instant::now();
    let probe = async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(deadline)
            .connect(url.as_str())
            .await
            .map_err(|e| e.to_string())?;
        async_nats::jetstream::new(client)
            .query_account()
            .await
            .map_err(|e| format!("JetStream: {e}"))
    };
    match tokio::time::timeout(deadline, probe).await {
        Ok(Ok(_)) => Check::pass(
            "events",
            format!("{url} JetStream answered in {} ms", started.elapsed().as_millis()),
        ),
        Ok(Err(error)) => Check::fail("events", format!("config key `events.nats_url`: {url}: {error}")),
        Err(_) => Check::fail(
            "events",
            format!(
                "config key `events.nats_url`: {url} did not answer within {} ms",
                deadline.as_millis()
            ),
        ),
    }
}

/// Reserves the canary SKU through the real checkout transaction, then
/// cancels the order, which releases the unit: the path a customer takes, with
/// nothing left held.
async fn synthetic_checkout(store: &SharedStore) -> Check {
    match try_synthetic_checkout(store).await {
        Ok(detail) => Check::pass("checkout", detail),
        Err(error) => Check::fail("checkout", format!("{error:#}")),
    }
}

async fn try_synthetic_checkout(store: &SharedStore) -> anyhow::Result<String> {
    let started = Instant::now();
    let sku = Sku::parse(CANARY_SKU).map_err(|e| anyhow::anyhow!("{e}"))?;
    let price = Money::new(0, Currency::USD).map_err(|e| anyhow::anyhow!("{e}"))?;
    if store.get_products(std::slice::from_ref(&sku)).await?.is_empty() {
        let product = NewProduct {
            sku: sku.clone(),
            name: "Preflight canary".into(),
            price,
            on_hand: 1,
            created_at: Utc::now(),
        };
        if let Err(error) = store.create_product(&product).await
            && !matches!(error, holdfast_store::StoreError::Conflict(_))
        {
            return Err(error.into());
        }
    }
    let now = Utc::now();
    let order = NewOrder {
        id: OrderId::generate(),
        email: Email::parse("preflight@holdfast.invalid").map_err(|e| anyhow::anyhow!("{e}"))?,
        name: None,
        address: Address::parse(holdfast_domain::address::AddressFields {
            line1: "Preflight",
            city: "Preflight",
            postal_code: "00000",
            country: "US",
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?,
        lines: vec![(
            sku.clone(),
            Quantity::parse(1).map_err(|e| anyhow::anyhow!("{e}"))?,
            price,
        )],
        total: price,
        payment_method: "pm_card_visa".into(),
        status: OrderStatus::PendingPayment,
        expires_at: now + chrono::Duration::minutes(1),
        now,
        cause: "preflight synthetic checkout".into(),
    };
    let placed = store
        .place_order(&order)
        .await
        .map_err(|e| anyhow::anyhow!("reserving the canary SKU: {e}"))?;
    let change = StatusChange::new(
        placed.id.clone(),
        OrderStatus::Cancelled,
        "preflight cleanup",
        Utc::now(),
    );
    store
        .transition_order(&change)
        .await
        .map_err(|e| anyhow::anyhow!("releasing the canary reservation: {e}"))?;
    let level = store
        .get_inventory(&sku)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the canary SKU vanished"))?;
    anyhow::ensure!(level.reserved == 0, "the canary unit is still reserved: {level:?}");
    Ok(format!(
        "reserved and released {CANARY_SKU} (order {}) in {} ms",
        placed.id,
        started.elapsed().as_millis()
    ))
}
