//! `holdfast bench checkout`: orders/s through the HTTP API, end to end
//! (auth, idempotency, pricing, reservation, payment intent, webhook), beside
//! the same checkout SQL run directly against the store in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use holdfast_domain::Sku;
use holdfast_store::PgBouncer;

use super::{place_orders_directly, verdict};
use crate::harness::{self, Database};
use crate::load::{Driver, Latencies, order_body};

#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// A PostgreSQL server URL (a scratch database is created on it); SQLite when absent.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Concurrent HTTP clients (and SQL clients for the ceiling).
    #[arg(long, default_value_t = 16)]
    pub clients: u64,
    /// Seconds of load for each measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// How `--database-url` reaches PostgreSQL: off (directly), or through
    /// PgBouncer in session or transaction pooling mode (`database.pgbouncer`).
    #[arg(long, value_enum, default_value_t = PgBouncerMode::Off)]
    pub pgbouncer: PgBouncerMode,
    /// A PgBouncer in transaction pooling mode in front of the server of
    /// `--database-url` (postgres://USER@HOST:PORT/), whose [databases] reach
    /// the scratch database (e.g. `* = host=… port=…`): the same run then
    /// measures a second service through it and prints both figures.
    #[arg(long)]
    pub pgbouncer_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgBouncerMode {
    Off,
    Session,
    Transaction,
}

impl PgBouncerMode {
    fn store(self) -> PgBouncer {
        match self {
            Self::Off => PgBouncer::Off,
            Self::Session => PgBouncer::Session,
            Self::Transaction => PgBouncer::Transaction,
        }
    }
}

/// One service's figures.
struct Figures {
    http_orders: u64,
    failures: u64,
    latencies: Latencies,
    http_elapsed: Duration,
    sql_orders: u64,
    sql_elapsed: Duration,
}

impl Figures {
    fn http_rate(&self) -> f64 {
        self.http_orders as f64 / self.http_elapsed.as_secs_f64()
    }

    fn sql_rate(&self) -> f64 {
        self.sql_orders as f64 / self.sql_elapsed.as_secs_f64()
    }

    fn print(&self, label: &str) {
        println!(
            "  {label:<8} HTTP checkouts         {:>9} in {:.1} s = {:>8.0} orders/s ({} non-201)",
            self.http_orders,
            self.http_elapsed.as_secs_f64(),
            self.http_rate(),
            self.failures
        );
        println!(
            "  {label:<8} HTTP p50 / p99         {:>9.2} / {:.2} ms",
            self.latencies.quantile_ms(0.5),
            self.latencies.quantile_ms(0.99)
        );
        println!(
            "  {label:<8} checkout SQL directly  {:>9} in {:.1} s = {:>8.0} orders/s (the ceiling)",
            self.sql_orders,
            self.sql_elapsed.as_secs_f64(),
            self.sql_rate()
        );
        println!(
            "  {label:<8} ratio HTTP / SQL       {:>9.2}",
            self.http_rate() / self.sql_rate()
        );
    }
}

const SKUS: usize = 64;

pub async fn run(args: CheckoutArgs) -> anyhow::Result<u8> {
    let database = Database::from_flag(args.database_url.as_deref());
    let is_postgres = matches!(database, Database::Postgres { .. });
    if args.pgbouncer_url.is_some() && !is_postgres {
        anyhow::bail!("--pgbouncer-url needs --database-url: the PostgreSQL server PgBouncer fronts");
    }
    let clients = u32::try_from(args.clients).unwrap_or(u32::MAX);
    let pools = move |config: &mut holdfast_service::Config| {
        config.database.pools.write.max_connections = clients.max(4);
        config.database.pools.read.max_connections = clients.max(4);
    };
    let mode = args.pgbouncer.store();
    let service = harness::start(&database, |config| {
        pools(config);
        config.database.pgbouncer = mode;
    })
    .await?;
    let admin = Driver::new(&service.base_url, &service.admin_key)?;
    let skus = Arc::new(create_products(&admin).await?);
    let backend = match (is_postgres, mode) {
        (false, _) => "SQLite".to_owned(),
        (true, PgBouncer::Off) => "PostgreSQL".to_owned(),
        (true, mode) => format!("PostgreSQL through PgBouncer ({} pooling)", mode.as_str()),
    };
    println!(
        "bench checkout: {} clients, {} s, {backend}",
        args.clients, args.seconds
    );
    let label = if mode == PgBouncer::Off { "direct" } else { "pgbouncer" };
    let first = measure(&service, &admin, &skus, &args).await?;
    first.print(label);
    let mut failed = first.failures > first.http_orders / 100;
    // The direct service stops first, so the two never share the machine.
    service.stop().await?;
    if let (Some(bouncer), Database::Postgres { admin_url }) = (&args.pgbouncer_url, &database) {
        let figures = measure_through_pgbouncer(admin_url, bouncer, &args, pools).await?;
        figures.print("pgbouncer");
        println!(
            "  PgBouncer (transaction pooling) / direct: {:.2} of the HTTP rate, {:.2} of the SQL rate",
            figures.http_rate() / first.http_rate(),
            figures.sql_rate() / first.sql_rate()
        );
        failed |= figures.failures > figures.http_orders / 100;
    }
    // A benchmark below its goal is a finding, not a failure of the command.
    let ratio = first.http_rate() / first.sql_rate();
    if is_postgres {
        println!("  goal: ratio >= 0.60 -> {}", verdict(ratio >= 0.6));
    } else {
        println!(
            "  goal: >= 1500 orders/s on SQLite -> {}",
            verdict(first.http_rate() >= 1500.0)
        );
    }
    Ok(if failed { 1 } else { 0 })
}

/// The same measurement on a second scratch database, made on the server
/// directly and served through PgBouncer in transaction mode.
async fn measure_through_pgbouncer(
    admin_url: &str,
    bouncer: &str,
    args: &CheckoutArgs,
    pools: impl FnOnce(&mut holdfast_service::Config),
) -> anyhow::Result<Figures> {
    let direct = holdfast_store::scratch::create_database(admin_url, "run").await?;
    let measured = async {
        let service = harness::start_on(&through_pgbouncer(&direct, bouncer)?, |config| {
            pools(config);
            config.database.pgbouncer = PgBouncer::Transaction;
        })
        .await?;
        let admin = Driver::new(&service.base_url, &service.admin_key)?;
        let skus = Arc::new(create_products(&admin).await?);
        let figures = measure(&service, &admin, &skus, args).await;
        service.stop().await?;
        figures
    }
    .await;
    holdfast_store::scratch::drop_database(admin_url, &direct).await?;
    measured
}

async fn create_products(admin: &Driver) -> anyhow::Result<Vec<Sku>> {
    let mut skus = Vec::new();
    for i in 0..SKUS {
        let sku = format!("BENCH-{i:03}");
        admin.create_product(&sku, 1_000, 100_000_000).await?;
        skus.push(Sku::parse(&sku).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    Ok(skus)
}

/// HTTP checkouts, then the checkout SQL straight on the store, both against
/// `service`.
async fn measure(
    service: &harness::RunningService,
    admin: &Driver,
    skus: &Arc<Vec<Sku>>,
    args: &CheckoutArgs,
) -> anyhow::Result<Figures> {
    let shop = admin.with_key(&admin.storefront_key().await?);
    let (http_orders, failures, latencies, http_elapsed) = drive_http(&shop, args.clients, args.seconds).await?;
    let (sql_orders, _, sql_elapsed) =
        place_orders_directly(&service.store, skus.clone(), args.clients, args.seconds).await?;
    Ok(Figures {
        http_orders,
        failures,
        latencies,
        http_elapsed,
        sql_orders,
        sql_elapsed,
    })
}

/// The scratch database's URL with PgBouncer's host and port (and its user,
/// when it names one).
fn through_pgbouncer(database_url: &str, bouncer: &str) -> anyhow::Result<String> {
    let bouncer = url::Url::parse(bouncer).map_err(|e| anyhow::anyhow!("--pgbouncer-url {bouncer}: {e}"))?;
    let mut url = url::Url::parse(database_url)?;
    url.set_host(bouncer.host_str())?;
    url.set_port(bouncer.port())
        .map_err(|()| anyhow::anyhow!("--pgbouncer-url: no port"))?;
    if !bouncer.username().is_empty() {
        url.set_username(bouncer.username())
            .map_err(|()| anyhow::anyhow!("--pgbouncer-url: bad user"))?;
        url.set_password(bouncer.password())
            .map_err(|()| anyhow::anyhow!("--pgbouncer-url: bad password"))?;
    }
    Ok(url.to_string())
}

async fn drive_http(shop: &Driver, clients: u64, seconds: u64) -> anyhow::Result<(u64, u64, Latencies, Duration)> {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (shop, ok, failed, stop) = (shop.clone(), ok.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut n = client;
            while !stop.load(Ordering::Relaxed) {
                let sku = format!("BENCH-{:03}", n as usize % SKUS);
                let body = order_body(&[(sku, 1)], &format!("bench{}@example.com", n % 1000), "pm_card_visa");
                let answer = shop
                    .post(
                        "/api/v1/orders",
                        &body,
                        Some(&format!("bench-{n}-{}", uuid::Uuid::now_v7().simple())),
                    )
                    .await?;
                latencies.record(answer.elapsed);
                if answer.status == 201 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += clients;
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Latencies::default();
    for task in tasks {
        all.merge(&task.await??);
    }
    Ok((
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        all,
        started.elapsed(),
    ))
}
