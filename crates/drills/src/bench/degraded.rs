//! `holdfast bench degraded`: checkout and order reads under load while the
//! remote inventory node hangs (accepts, never answers). The order node calls inventory
//! through the fault proxy; after a no-fault baseline the proxy stops
//! answering. Reported, each against its ceiling from the same run:
//! checkout p99 before the breaker opens (ceiling: the inventory deadline +
//! 50 ms), after it opens (ceiling: 20 ms), `GET /api/v1/orders/{id}` p99
//! during the hang (ceiling: 1.5 × the no-fault p99), and the requests that
//! ran past the request deadline + 100 ms (goal: none).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::verdict;
use crate::harness::Database;
use crate::load::{Driver, Latencies, order_body};
use crate::topology::RemoteInventory;

#[derive(Debug, Args)]
pub struct DegradedArgs {
    /// A PostgreSQL server URL (scratch databases are created on it); SQLite when absent.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Concurrent checkout clients.
    #[arg(long, default_value_t = 16)]
    pub clients: u64,
    /// Concurrent clients reading one order, each pausing `--read-pause-ms`
    /// between reads (a storefront polling, not a flood that would starve
    /// checkout of CPU).
    #[arg(long, default_value_t = 4)]
    pub readers: u64,
    #[arg(long, default_value_t = 10)]
    pub read_pause_ms: u64,
    /// Seconds of load before the fault.
    #[arg(long, default_value_t = 5)]
    pub baseline_seconds: u64,
    /// Seconds of load while inventory hangs; longer than the inventory
    /// breaker's window (`window_s`, 10 by default), since the successes of
    /// the baseline count in it until they age out.
    #[arg(long, default_value_t = 25)]
    pub fault_seconds: u64,
}

const SKUS: usize = 16;

/// One finished request.
struct Sample {
    started: Instant,
    took: Duration,
    status: u16,
}

pub async fn run(args: DegradedArgs) -> anyhow::Result<u8> {
    let database = Database::from_flag(args.database_url.as_deref());
    let is_postgres = matches!(database, Database::Postgres { .. });
    let clients = u32::try_from(args.clients + args.readers).unwrap_or(u32::MAX);
    let topology = RemoteInventory::start(&database, |config| {
        config.database.pools.write.max_connections = clients.max(4);
        config.database.pools.read.max_connections = clients.max(4);
        // One storefront key drives all the load: no per-key rate limit.
        config.server.rate_limit_per_key_per_s = 0;
    })
    .await?;
    let result = measure(&topology, &args, is_postgres).await;
    topology.stop().await?;
    result
}

async fn measure(topology: &RemoteInventory, args: &DegradedArgs, is_postgres: bool) -> anyhow::Result<u8> {
    let admin = Driver::new(&topology.orders.base_url, &topology.orders.admin_key)?;
    for i in 0..SKUS {
        admin.create_product(&format!("DEG-{i:02}"), 1_000, 100_000_000).await?;
    }
    let shop = admin.with_key(&admin.storefront_key().await?);
    let first = shop
        .post(
            "/api/v1/orders",
            &order_body(&[("DEG-00".into(), 1)], "reader@example.com", "pm_card_visa"),
            Some(&uuid::Uuid::now_v7().to_string()),
        )
        .await?;
    anyhow::ensure!(
        first.status == 201,
        "the first checkout answered {}: {}",
        first.status,
        first.body
    );
    let order_id = first.body["order_id"].as_str().unwrap_or_default().to_owned();
    let config = topology.orders_config();
    let inventory_deadline = Duration::from_millis(config.dependencies.inventory.deadline_ms);
    let request_deadline = Duration::from_millis(config.server.request_deadline_ms);
    println!(
        "bench degraded: {} checkout clients, {} readers, {} s baseline + {} s hung inventory, {} \
         (inventory deadline {} ms, request deadline {} ms)",
        args.clients,
        args.readers,
        args.baseline_seconds,
        args.fault_seconds,
        if is_postgres { "PostgreSQL" } else { "SQLite" },
        inventory_deadline.as_millis(),
        request_deadline.as_millis()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let clients = args.clients;
    for client in 0..clients {
        let (shop, stop) = (shop.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = client;
            while !stop.load(Ordering::Relaxed) {
                let sku = format!("DEG-{:02}", n as usize % SKUS);
                let body = order_body(&[(sku, 1)], &format!("deg{}@example.com", n % 1000), "pm_card_visa");
                let key = uuid::Uuid::now_v7().to_string();
                let started = Instant::now();
                let answer = shop.post("/api/v1/orders", &body, Some(&key)).await?;
                samples.push(Sample {
                    started,
                    took: answer.elapsed,
                    status: answer.status,
                });
                n += clients;
            }
            anyhow::Ok((true, samples))
        }));
    }
    let pause = Duration::from_millis(args.read_pause_ms);
    for _ in 0..args.readers {
        let (shop, stop, path) = (shop.clone(), stop.clone(), format!("/api/v1/orders/{order_id}"));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = shop.get(&path).await?;
                samples.push(Sample {
                    started,
                    took: answer.elapsed,
                    status: answer.status,
                });
                tokio::time::sleep(pause).await;
            }
            anyhow::Ok((false, samples))
        }));
    }

    tokio::time::sleep(Duration::from_secs(args.baseline_seconds)).await;
    let fault_at = Instant::now();
    topology.hang()?;
    let opened_at = watch_breaker(&admin, Duration::from_secs(args.fault_seconds)).await?;
    stop.store(true, Ordering::Relaxed);
    topology.heal();
    let mut checkouts = Vec::new();
    let mut reads = Vec::new();
    for task in tasks {
        let (is_checkout, samples) = task.await??;
        if is_checkout {
            checkouts.extend(samples);
        } else {
            reads.extend(samples);
        }
    }

    let phase = |samples: &[Sample], from: Instant, until: Option<Instant>| {
        let mut latencies = Latencies::default();
        for sample in samples {
            if sample.started >= from && until.is_none_or(|until| sample.started < until) {
                latencies.record(sample.took);
            }
        }
        latencies
    };
    let baseline_checkout = phase(&checkouts, Instant::now() - Duration::from_secs(3600), Some(fault_at));
    let baseline_reads = phase(&reads, Instant::now() - Duration::from_secs(3600), Some(fault_at));
    let before_open = phase(&checkouts, fault_at, Some(opened_at.unwrap_or_else(Instant::now)));
    let after_open = opened_at.map(|opened| phase(&checkouts, opened, None));
    let fault_reads = phase(&reads, fault_at, None);
    let late_by = request_deadline + Duration::from_millis(100);
    let late = checkouts.iter().chain(&reads).filter(|s| s.took > late_by).count();
    let statuses = |from: Instant| {
        let mut counts: std::collections::BTreeMap<u16, usize> = std::collections::BTreeMap::new();
        for sample in checkouts.iter().filter(|s| s.started >= from) {
            *counts.entry(sample.status).or_default() += 1;
        }
        counts
    };

    println!(
        "  no fault     checkout p99 {:>8.1} ms ({} requests)   GET p99 {:>6.1} ms ({} requests)",
        baseline_checkout.quantile_ms(0.99),
        baseline_checkout.count(),
        baseline_reads.quantile_ms(0.99),
        baseline_reads.count()
    );
    let ceiling_before = inventory_deadline.as_secs_f64() * 1000.0 + 50.0;
    let p99_before = before_open.quantile_ms(0.99);
    let mut met = true;
    match opened_at {
        Some(opened) => println!(
            "  hung, before the breaker opened ({} ms after the fault): checkout p99 {p99_before:.1} ms ({} requests), \
             ceiling {ceiling_before:.0} ms, ratio {:.2}",
            opened.duration_since(fault_at).as_millis(),
            before_open.count(),
            p99_before / ceiling_before
        ),
        None => {
            met = false;
            println!(
                "  hung: the inventory breaker never opened within {} s",
                args.fault_seconds
            );
        }
    }
    met &= p99_before <= ceiling_before;
    if let Some(after) = &after_open {
        let p99 = after.quantile_ms(0.99);
        println!(
            "  hung, breaker open:  checkout p99 {p99:.1} ms ({} requests), ceiling 20 ms, ratio {:.2}",
            after.count(),
            p99 / 20.0
        );
        met &= p99 <= 20.0;
    }
    let read_ceiling = baseline_reads.quantile_ms(0.99) * 1.5;
    let read_p99 = fault_reads.quantile_ms(0.99);
    println!(
        "  hung, GET /api/v1/orders/{{id}} p99 {read_p99:.1} ms ({} requests), ceiling 1.5 x no-fault = {read_ceiling:.1} ms, \
         ratio {:.2}",
        fault_reads.count(),
        read_p99 / read_ceiling.max(0.001)
    );
    met &= read_p99 <= read_ceiling;
    println!(
        "  requests over the request deadline + 100 ms: {late} (goal 0); checkout answers while hung: {:?}",
        statuses(fault_at)
    );
    met &= late == 0;
    println!(
        "  goal: <= deadline + 50 ms until open, <= 20 ms after, GET <= 1.5 x no-fault, none late -> {}",
        verdict(met)
    );
    // A checkout that answered anything but 201/202/503 is a failure of the
    // service, not a figure.
    let broken = checkouts
        .iter()
        .filter(|s| !matches!(s.status, 201 | 202 | 503))
        .count()
        + reads.iter().filter(|s| s.status != 200).count();
    if broken > 0 {
        println!("  {broken} requests answered an unexpected status");
    }
    Ok(if broken > 0 { 1 } else { 0 })
}

/// Polls the order node's breakers until `inventory` leaves `closed`, then
/// lets the load run to the end of `fault`; returns when it opened.
async fn watch_breaker(admin: &Driver, fault: Duration) -> anyhow::Result<Option<Instant>> {
    let until = Instant::now() + fault;
    let mut opened = None;
    while Instant::now() < until {
        if opened.is_none() {
            let answer = admin.get("/api/v1/ops/breakers").await?;
            let state = answer.body["data"]
                .as_array()
                .and_then(|all| all.iter().find(|b| b["name"] == "inventory"))
                .and_then(|b| b.get("state"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if state == "open" {
                opened = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(opened)
}
