//! `holdfast bench hot-sku`: 32 buyers of one SKU with limited stock. Stock
//! is spread over buckets that buyers lock with SKIP LOCKED, so one hot SKU
//! is not one row everybody queues on; the ceiling it is compared with is
//! that single row under `FOR UPDATE`, measured in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use holdfast_domain::Sku;
use sqlx::postgres::PgPoolOptions;

use super::{place_orders_directly, verdict};
use crate::harness::{self, Database};
use crate::load::Driver;

#[derive(Debug, Args)]
pub struct HotSkuArgs {
    /// A PostgreSQL server URL (a scratch database is created on it). Without
    /// it the benchmark runs on SQLite, where one writer makes it moot.
    #[arg(long)]
    pub database_url: Option<String>,
    #[arg(long, default_value_t = 32)]
    pub buyers: u64,
    /// Units of the hot SKU; the run ends when they are sold or time is up.
    #[arg(long, default_value_t = 20_000)]
    pub stock: i64,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

pub async fn run(args: HotSkuArgs) -> anyhow::Result<u8> {
    let database = Database::from_flag(args.database_url.as_deref());
    let buyers = u32::try_from(args.buyers).unwrap_or(u32::MAX);
    let service = harness::start(&database, |config| {
        config.database.pools.write.max_connections = buyers.max(4);
    })
    .await?;
    let admin = Driver::new(&service.base_url, &service.admin_key)?;
    admin.create_product("HOT-SKU", 2_500, args.stock).await?;
    let hot = Sku::parse("HOT-SKU").map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "bench hot-sku: {} buyers, {} units, up to {} s",
        args.buyers, args.stock, args.seconds
    );
    let ceiling = match &database {
        Database::Postgres { .. } => Some(single_row_ceiling(&service.database_url, &args).await?),
        Database::Sqlite => None,
    };
    let (sold, refused, elapsed) =
        place_orders_directly(&service.store, Arc::new(vec![hot.clone()]), args.buyers, args.seconds).await?;
    let rate = sold as f64 / elapsed.as_secs_f64();
    let level = service
        .store
        .get_inventory(&hot)
        .await?
        .ok_or_else(|| anyhow::anyhow!("HOT-SKU vanished"))?;
    let oversold =
        sold as i64 > args.stock || level.available < 0 || level.reserved != sold as i64 || level.on_hand != args.stock;
    println!(
        "  checkouts of HOT-SKU    {sold:>8} in {:.2} s = {rate:>8.0} orders/s ({refused} out-of-stock answers)",
        elapsed.as_secs_f64()
    );
    println!(
        "  stock after             on_hand {} reserved {} available {}",
        level.on_hand, level.reserved, level.available
    );
    println!("  oversold                {:>8}", if oversold { "YES" } else { "0" });
    if let Some(ceiling) = ceiling {
        let ratio = rate / ceiling;
        println!("  single-row FOR UPDATE   {ceiling:>8.0} tx/s (the ceiling, same run)");
        println!(
            "  ratio                   {ratio:>8.2}   goal >= 3.00 -> {}",
            verdict(ratio >= 3.0)
        );
    } else {
        println!("  (SQLite: one writer at a time, so there is no row-lock ceiling to compare with)");
    }
    service.stop().await?;
    Ok(if oversold { 1 } else { 0 })
}

/// `buyers` clients each running BEGIN; SELECT … FOR UPDATE; UPDATE; COMMIT
/// on one row: the ceiling for stock kept in a single row.
async fn single_row_ceiling(database_url: &str, args: &HotSkuArgs) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(args.buyers).unwrap_or(32))
        .connect(database_url)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_single_row (sku TEXT PRIMARY KEY, available BIGINT NOT NULL CHECK (available >= 0))",
    )
    .execute(&pool)
    .await?;
    sqlx::query("INSERT INTO bench_single_row VALUES ('HOT-SKU', 100000000)")
        .execute(&pool)
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.buyers {
        let (pool, done, stop) = (pool.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut tx = pool.begin().await?;
                let _: i64 =
                    sqlx::query_scalar("SELECT available FROM bench_single_row WHERE sku = 'HOT-SKU' FOR UPDATE")
                        .fetch_one(&mut *tx)
                        .await?;
                sqlx::query("UPDATE bench_single_row SET available = available - 1 WHERE sku = 'HOT-SKU'")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds.clamp(1, 5))).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}
