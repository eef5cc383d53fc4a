//! PgBouncer restarted under load: while it is down, checkout
//! answers 503 with `Retry-After` at once instead of hanging or failing with
//! a 500, and once PgBouncer is back checkout works again within 2 s, with
//! no restart of Holdfast: the pools drop the dead connections and open new.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use holdfast_store::scratch::{PgBouncerSettings, ScratchPgBouncer};
use tokio::time::Instant;

use crate::helpers::{Client, order, pgbouncer, postgres_admin_url, spawn_app_behind};

/// How long PgBouncer stays down.
const GAP: Duration = Duration::from_millis(1500);
/// The promise: checkout works again this soon after PgBouncer is back.
const RECOVERY: Duration = Duration::from_secs(2);
const CLIENTS: usize = 8;

#[derive(Debug)]
struct Answer {
    started: Instant,
    ended: Instant,
    status: u16,
    retry_after: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_answers_503_while_pgbouncer_restarts_and_is_back_within_2_s() {
    // The suite's rules for a missing PostgreSQL or pgbouncer binary.
    if pgbouncer().await.is_none() {
        return;
    }
    let server = postgres_admin_url().await.expect("postgres reachable");
    let mut bouncer = tokio::task::block_in_place(|| {
        ScratchPgBouncer::start(&server, &PgBouncerSettings::default()).expect("a PgBouncer of this test's own")
    });
    let app = spawn_app_behind(&bouncer, |config| {
        // This test is about the database path: the inventory breaker
        // would otherwise open during the gap and keep checkout degraded
        // (202 accepted) for its open_s after it.
        config.dependencies.inventory.breaker.min_calls = 1_000_000;
    })
    .await;
    app.create_product("BOUNCE", 1_000, 1_000_000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(checkouts(app.shop.clone(), client, stop.clone(), created.clone())))
        .collect();
    let warm = Instant::now();
    while created.load(Ordering::Relaxed) < 50 {
        assert!(
            warm.elapsed() < Duration::from_secs(20),
            "no checkouts before the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tokio::task::block_in_place(|| bouncer.stop());
    let down = Instant::now();
    tokio::time::sleep(GAP).await;
    // PgBouncer accepts connections a moment before `start_again` returns,
    // so the gap ends when the restart begins, not when it is confirmed.
    let restarting = Instant::now();
    tokio::task::block_in_place(|| bouncer.start_again()).expect("pgbouncer starts again");
    let up = Instant::now();
    tokio::time::sleep(RECOVERY + Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for client in load {
        answers.extend(client.await.expect("client task"));
    }

    for answer in &answers {
        assert!(
            matches!(answer.status, 201 | 202 | 503),
            "only orders or 503s, never a 500: {answer:?}"
        );
        assert!(
            answer.status != 503 || answer.retry_after,
            "a 503 without Retry-After: {answer:?}"
        );
        assert!(
            answer.ended - answer.started < Duration::from_secs(5),
            "an answer took {:?}: {answer:?}",
            answer.ended - answer.started
        );
    }
    // Asked and answered while PgBouncer was down: every one refused.
    let in_gap: Vec<_> = answers
        .iter()
        .filter(|a| a.started > down && a.ended < restarting)
        .collect();
    assert!(!in_gap.is_empty(), "no request ran while PgBouncer was down");
    assert!(in_gap.iter().all(|a| a.status == 503), "{in_gap:?}");
    // Back: every checkout asked from RECOVERY after PgBouncer's return on
    // reserved its stock.
    let late: Vec<_> = answers.iter().filter(|a| a.started > up + RECOVERY).collect();
    assert!(!late.is_empty(), "no request after the recovery window");
    assert!(late.iter().all(|a| a.status == 201), "{late:?}");
    let first_back = answers
        .iter()
        .filter(|a| a.started > up && a.status == 201)
        .map(|a| a.ended - up)
        .min()
        .expect("a checkout after the restart");
    eprintln!(
        "PgBouncer down {GAP:?}: {} answers in the gap (all 503), first order {first_back:?} after its return",
        in_gap.len()
    );
    assert!(first_back < RECOVERY, "back after {first_back:?}");
    let (on_hand, reserved, available) = app.inventory("BOUNCE").await;
    assert_eq!(on_hand, reserved + available, "stock adds up after the restart");
    app.stop().await;
    drop(bouncer);
}

/// One client's checkouts until `stop`, each with a key of its own.
async fn checkouts(shop: Client, client: usize, stop: Arc<AtomicBool>, created: Arc<AtomicUsize>) -> Vec<Answer> {
    let mut answers = Vec::new();
    let body = order(&[("BOUNCE", 1)], "pm_card_visa");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let answer = shop.checkout(&body, &format!("bounce-{client}-{n}")).await;
        if answer.status == 201 {
            created.fetch_add(1, Ordering::Relaxed);
        }
        answers.push(Answer {
            started,
            ended: Instant::now(),
            status: answer.status,
            retry_after: answer.headers.contains_key("retry-after"),
        });
        if answer.status == 503 {
            // A client that honours Retry-After would wait longer; a short
            // pause keeps the gap sampled without a busy loop.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    answers
}
