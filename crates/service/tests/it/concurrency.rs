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
            let body = order(&[("LAST-50", 1)], "pm_card_visa");
            app.shop.checkout(&body, &format!("race-{i}")).await
        }));
    }
    let mut won = 0;
    let mut lost = 0;
    for buyer in buyers {
        let answer = buyer.await.expect("buyer task");
        match answer.status {
            201 => won += 1,
            409 => {
                assert_eq!(answer.body["code"], "out_of_stock", "{}", answer.body);
                lost += 1;
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert_eq!((won, lost), (50, 150));
    let (on_hand, reserved, available) = app.inventory("LAST-50").await;
    assert_eq!(
        (on_hand - reserved, available),
        (0, 0),
        "nothing left to sell, nothing oversold"
    );
    // Every winner pays and is shipped; then the stock is gone for good.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let counts = app.store.order_counts().await.expect("counts");
        if counts.contains(&(holdfast_domain::OrderStatus::Shipped, 50)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all winners shipped: {counts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.inventory("LAST-50").await, (0, 0, 0));
    let app = Arc::try_unwrap(app).ok().expect("all buyers done");
    app.stop().await;
});
