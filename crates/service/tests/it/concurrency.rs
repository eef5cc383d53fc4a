//! Races with real tasks on a real database: no oversell, ever.

use std::sync::Arc;

use crate::both_backends;
use crate::helpers::{order, spawn_app};

both_backends!(two_hundred_buyers_race_for_fifty_units, |backend| async move {
    let app = Arc::new(spawn_app(backend).await);
    app.create_product("LAST-50", 2_500, 50).await;
    let mut buyers = Vec::new();
    for i in 0..200 {
        let app = app.clone();
        buyers.push(tokio::spawn(async move {
            // A 503 (a deadlock PostgreSQL broke, a pool or deadline that ran
            // out under load) is retryable, and a client retries it with the
            // same key, as Retry-After invites: the order a cut-off request
            // did take is then found, not taken twice.
            let body = order(&[("LAST-50", 1)], "pm_card_visa");
            let key = format!("race-{i}");
            let mut shed = 0;
            loop {
                let answer = app.shop.checkout(&body, &key).await;
                if answer.status != 503 || shed == 20 {
                    return (answer, shed);
                }
                assert!(
                    ["dependency_unavailable", "deadline_exceeded"]
                        .contains(&answer.body["code"].as_str().unwrap_or("")),
                    "{}",
                    answer.body
                );
                assert!(answer.headers.contains_key("retry-after"), "{:?}", answer.headers);
                shed += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }));
    }
    let (mut won, mut lost, mut accepted, mut shed) = (0, 0, 0, 0);
    for buyer in buyers {
        let (answer, retried) = buyer.await.expect("buyer task");
        shed += retried;
        match answer.status {
            201 => won += 1,
            // More buyers than the inventory bulkhead admits at once: the
            // rest are taken as accepted and settled by the checkout worker.
            202 => accepted += 1,
            409 => {
                assert_eq!(answer.body["code"], "out_of_stock", "{}", answer.body);
                lost += 1;
            }
            other => panic!(
                "unexpected final answer {other} after {retried} retries: {}",
                answer.body
            ),
        }
    }
    eprintln!("{won} won, {accepted} accepted, {lost} out of stock, {shed} retries after a 503");
    assert_eq!(won + lost + accepted, 200);
    assert!(won <= 50, "{won} reservations for 50 units");
    let (on_hand, reserved, available) = app.inventory("LAST-50").await;
    assert!(on_hand - reserved == available && available >= 0, "nothing oversold");
    // Every order settles: 50 are paid and shipped, every other accepted
    // order is rejected, and the stock is gone for good.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let counts = app.store.order_counts().await.expect("counts");
        let count = |status| counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
        use holdfast_domain::OrderStatus::{Rejected, Shipped};
        if count(Shipped) == 50 && count(Shipped) + count(Rejected) == i64::from(won + accepted) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders never settled: {counts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.inventory("LAST-50").await, (0, 0, 0));
    let app = Arc::try_unwrap(app).ok().expect("all buyers done");
    app.stop().await;
});
