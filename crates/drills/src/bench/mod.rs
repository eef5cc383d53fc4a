//! `holdfast bench NAME`: each benchmark prints its figure and its ratio to
//! a ceiling measured in the same run.

mod checkout;
mod degraded;
mod hot_sku;
mod queue;

pub use queue::{QueueArgs, QueueRun, measure as measure_queue};
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Subcommand;
use holdfast_domain::{Address, Currency, Email, Money, OrderId, OrderStatus, Quantity, Sku};
use holdfast_store::{NewOrder, PlaceOrderError, SharedStore};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Orders/s through HTTP, end to end, against the same checkout SQL run directly.
    Checkout(checkout::CheckoutArgs),
    /// Checkout and order reads while the remote inventory node hangs: p99 before and after the
    /// breaker opens, GET p99 against the no-fault baseline, requests past the deadline.
    Degraded(degraded::DegradedArgs),
    /// 32 buyers of one SKU with limited stock, against the single-row FOR UPDATE ceiling.
    HotSku(hot_sku::HotSkuArgs),
    /// Durable no-op jobs/s through the PostgreSQL job queue, beside BullMQ on Redis at equal concurrency.
    Queue(queue::QueueArgs),
    /// Partner webhook deliveries/s to a local receiver, order per endpoint verified, against the
    /// receiver's own accept rate.
    Webhooks(webhooks::WebhooksArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<u8> {
    match command {
        BenchCommand::Checkout(args) => checkout::run(args).await,
        BenchCommand::Degraded(args) => degraded::run(args).await,
        BenchCommand::HotSku(args) => hot_sku::run(args).await,
        BenchCommand::Queue(args) => queue::run(args).await,
        BenchCommand::Webhooks(args) => webhooks::run(args).await,
    }
}

/// A new one-line order for `sku`, as checkout builds it.
pub(crate) fn bench_order(sku: &Sku, n: u64) -> anyhow::Result<NewOrder> {
    let now = Utc::now();
    let address = Address::parse(holdfast_domain::address::AddressFields {
        line1: "1 Bench Street",
        city: "Portland",
        postal_code: "97201",
        country: "US",
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let price = Money::new(1_000, Currency::USD).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(NewOrder {
        id: OrderId::generate(),
        email: Email::parse(&format!("bench{}@example.com", n % 1000)).map_err(|e| anyhow::anyhow!("{e}"))?,
        name: None,
        address,
        lines: vec![(
            sku.clone(),
            Quantity::parse(1).map_err(|e| anyhow::anyhow!("{e}"))?,
            price,
        )],
        total: price,
        payment_method: "pm_card_visa".into(),
        status: OrderStatus::PendingPayment,
        expires_at: now + chrono::Duration::minutes(15),
        now,
        cause: "bench".into(),
    })
}

/// Runs `store.place_order` from `clients` tasks for `seconds`: the exact SQL
/// of one checkout, without HTTP or the provider. Returns (orders placed,
/// out-of-stock answers, elapsed).
pub(crate) async fn place_orders_directly(
    store: &SharedStore,
    skus: Arc<Vec<Sku>>,
    clients: u64,
    seconds: u64,
) -> anyhow::Result<(u64, u64, Duration)> {
    let placed = Arc::new(AtomicU64::new(0));
    let sold_out = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (store, skus, placed, sold_out, stop) = (
            store.clone(),
            skus.clone(),
            placed.clone(),
            sold_out.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = client;
            while !stop.load(Ordering::Relaxed) {
                let sku = &skus[(n as usize) % skus.len()];
                match store.place_order(&bench_order(sku, n)?).await {
                    Ok(_) => {
                        placed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(PlaceOrderError::OutOfStock { .. }) => {
                        sold_out.fetch_add(1, Ordering::Relaxed);
                        if skus.len() == 1 {
                            break;
                        }
                    }
                    Err(other) => return Err(anyhow::Error::from(other)),
                }
                n += clients;
            }
            anyhow::Ok(())
        }));
    }
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    let all_done = futures::future::join_all(tasks);
    tokio::pin!(all_done);
    let results = tokio::select! {
        results = &mut all_done => results,
        _ = &mut deadline => {
            stop.store(true, Ordering::Relaxed);
            all_done.await
        }
    };
    let elapsed = started.elapsed();
    for result in results {
        result??;
    }
    Ok((
        placed.load(Ordering::Relaxed),
        sold_out.load(Ordering::Relaxed),
        elapsed,
    ))
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "goal met" } else { "below goal" }
}
