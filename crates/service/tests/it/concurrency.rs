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
    assert_eq!(app.inventory("LAST-50").await, (50, 50, 0));
    let app = Arc::try_unwrap(app).ok().expect("all buyers done");
    app.stop().await;
});
