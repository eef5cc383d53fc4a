//! A drill's load: checkouts and order reads sent on an open loop (on
//! schedule, whether or not earlier requests have answered, so a hung
//! dependency shows as latency and dropped requests instead of slowing the
//! load down), spread over the order nodes, every request written to the
//! journal. Choices (SKU, card, node) come from one seeded generator, so
//! `--seed` repeats a run's sequence of requests.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::journal::{Event, Journal, Op};
use super::metrics::{Class, Request};
use super::scenario::LoadShape;
use crate::load::{Answer, Driver, order_body};

/// The scarce SKU, whose stock runs out during the drill.
pub const SCARCE_SKU: &str = "DRILL-SCARCE";
/// Stock of every other SKU: more than any drill sells.
const PLENTY: i64 = 10_000_000;
/// How many recent orders the readers pick from.
const RECENT: usize = 256;

/// What the drill sells and what each SKU started with.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub skus: Vec<String>,
    pub initial: Vec<(String, i64)>,
}

/// Creates the products on the order node (in remote mode the stock lands on
/// the inventory node, through the order node).
pub async fn prepare_catalogue(admin: &Driver, shape: &LoadShape) -> anyhow::Result<Catalogue> {
    let skus: Vec<String> = (0..shape.skus).map(|i| format!("DRILL-{:02}", i + 1)).collect();
    let mut initial = Vec::new();
    for (i, sku) in skus.iter().enumerate() {
        admin.create_product(sku, 500 + 100 * i as i64, PLENTY).await?;
        initial.push((sku.clone(), PLENTY));
    }
    admin.create_product(SCARCE_SKU, 9_900, shape.scarce_stock).await?;
    initial.push((SCARCE_SKU.to_owned(), shape.scarce_stock));
    Ok(Catalogue { skus, initial })
}

/// An order the service acknowledged (201 or 202): it must not be lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub order_id: String,
    pub status: u16,
}

/// Counters the progress bars and stop conditions read while the load runs.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
    /// Recent checkouts: when sent, and whether they failed.
    recent: Mutex<VecDeque<(Instant, bool)>>,
}

impl Live {
    fn finished(&self, sent: Instant, request: &Request) {
        let failed = matches!(request.class(), Class::Shed | Class::Error);
        if request.op == Op::Checkout {
            let counter = if failed { &self.failed } else { &self.ok };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.push_back((sent, failed));
            while recent
                .front()
                .is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(30))
            {
                recent.pop_front();
            }
        }
    }

    /// The checkout error rate over requests sent in the last `window` that
    /// have answered, and how many that was.
    pub fn error_rate(&self, window: Duration) -> (f64, usize) {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut failed, mut total) = (0, 0);
        for (at, bad) in recent.iter().rev() {
            if at.elapsed() > window {
                break;
            }
            total += 1;
            failed += usize::from(*bad);
        }
        (if total == 0 { 0.0 } else { failed as f64 / total as f64 }, total)
    }

    pub fn summary(&self) -> String {
        format!(
            "checkouts: {} sent, {} ok, {} failed; {} requests in flight",
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed)
        )
    }
}

/// The running load; dropping it stops the schedule (requests in flight end
/// on their own timeout).
pub struct Traffic {
    stop: watch::Sender<bool>,
    schedulers: Vec<JoinHandle<()>>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    pub live: Arc<Live>,
    acked: Arc<Mutex<Vec<Acked>>>,
}

struct Shared {
    drivers: Vec<Driver>,
    journal: Journal,
    live: Arc<Live>,
    acked: Arc<Mutex<Vec<Acked>>>,
    recent: Mutex<VecDeque<String>>,
    permits: Arc<Semaphore>,
}

impl Traffic {
    /// Starts checkouts and reads against `drivers` (one per order node, with a
    /// storefront key).
    pub fn start(drivers: Vec<Driver>, shape: &LoadShape, catalogue: &Catalogue, seed: u64, journal: &Journal) -> Self {
        let (stop, stopped) = watch::channel(false);
        let live = Arc::new(Live::default());
        let acked = Arc::new(Mutex::new(Vec::new()));
        let permits = Arc::new(Semaphore::new(shape.max_in_flight));
        let shared = Arc::new(Shared {
            drivers,
            journal: journal.clone(),
            live: live.clone(),
            acked: acked.clone(),
            recent: Mutex::new(VecDeque::new()),
            permits: permits.clone(),
        });
        let mut schedulers = vec![tokio::spawn(schedule(
            Op::Checkout,
            shape.checkouts_per_s,
            Plan::new(shape, catalogue, seed),
            shared.clone(),
            stopped.clone(),
        ))];
        if shape.reads_per_s > 0.0 {
            schedulers.push(tokio::spawn(schedule(
                Op::Read,
                shape.reads_per_s,
                Plan::new(shape, catalogue, seed.wrapping_add(1)),
                shared,
                stopped,
            )));
        }
        Self {
            stop,
            schedulers,
            permits,
            max_in_flight: shape.max_in_flight,
            timeout: Duration::from_millis(shape.timeout_ms),
            live,
            acked,
        }
    }

    /// Stops sending, waits for the requests in flight (at most their
    /// timeout), and returns every acknowledged order.
    pub async fn stop(mut self) -> Vec<Acked> {
        let _ = self.stop.send(true);
        for scheduler in self.schedulers.drain(..) {
            let _ = scheduler.await;
        }
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(self.timeout + Duration::from_secs(1), self.permits.acquire_many(all)).await;
        std::mem::take(&mut *self.acked.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for scheduler in &self.schedulers {
            scheduler.abort();
        }
    }
}

/// The seeded choices of one schedule.
struct Plan {
    rng: StdRng,
    skus: Vec<String>,
    scarce_share: f64,
    declined_share: f64,
    n: u64,
}

impl Plan {
    fn new(shape: &LoadShape, catalogue: &Catalogue, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            skus: catalogue.skus.clone(),
            scarce_share: shape.scarce_share,
            declined_share: shape.declined_share,
            n: 0,
        }
    }

    fn checkout(&mut self) -> serde_json::Value {
        self.n += 1;
        let sku = if self.rng.gen_bool(self.scarce_share) {
            SCARCE_SKU.to_owned()
        } else {
            self.skus[self.rng.gen_range(0..self.skus.len())].clone()
        };
        let card = if self.rng.gen_bool(self.declined_share) {
            "pm_card_declined"
        } else {
            "pm_card_visa"
        };
        order_body(&[(sku, 1)], &format!("drill{}@example.com", self.n % 997), card)
    }
}

async fn schedule(op: Op, per_second: f64, mut plan: Plan, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    // Requests are due at their scheduled times: a late tick sends at once.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: usize = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => break,
        }
        if *stopped.borrow() {
            break;
        }
        let node = n % shared.drivers.len();
        n += 1;
        let body = (op == Op::Checkout).then(|| plan.checkout());
        let pick: usize = plan.rng.r#gen();
        let sent = Instant::now();
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            // Too many in flight: the request is not sent, and counts as dropped.
            shared.record(sent, op, node, None);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.live.in_flight.fetch_add(1, Ordering::Relaxed);
            let answer = shared.send(op, node, body, pick).await;
            shared.live.in_flight.fetch_sub(1, Ordering::Relaxed);
            shared.record(sent, op, node, answer.as_ref());
            drop(permit);
        });
    }
}

impl Shared {
    async fn send(&self, op: Op, node: usize, body: Option<serde_json::Value>, pick: usize) -> Option<Answer> {
        if op == Op::Checkout {
            self.live.sent.fetch_add(1, Ordering::Relaxed);
        }
        let driver = &self.drivers[node];
        let answer = match (op, body) {
            (Op::Checkout, Some(body)) => {
                let key = uuid::Uuid::now_v7().to_string();
                driver.post("/api/v1/orders", &body, Some(&key)).await
            }
            _ => {
                let path = {
                    let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
                    match recent.len() {
                        0 => "/api/v1/products/DRILL-01".to_owned(),
                        len => format!("/api/v1/orders/{}", recent[pick % len]),
                    }
                };
                driver.get(&path).await
            }
        };
        answer.ok()
    }

    fn record(&self, sent: Instant, op: Op, node: usize, answer: Option<&Answer>) {
        let request = Request {
            t_ms: 0.0,
            op,
            status: answer.map_or(0, |a| a.status),
            ms: sent.elapsed().as_secs_f64() * 1000.0,
            retry_after: answer.is_some_and(|a| a.retry_after.is_some()),
        };
        if op == Op::Checkout
            && request.class() == Class::Ok
            && let Some(id) = answer.and_then(|a| a.body["order_id"].as_str())
        {
            self.acked.lock().unwrap_or_else(PoisonError::into_inner).push(Acked {
                order_id: id.to_owned(),
                status: request.status,
            });
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.push_back(id.to_owned());
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }
        self.live.finished(sent, &request);
        self.journal.record_request(
            sent,
            Event::Request {
                op,
                status: request.status,
                ms: request.ms,
                retry_after: request.retry_after,
                node,
            },
        );
    }
}
