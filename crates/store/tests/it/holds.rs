//! Stock holds, the inventory node's reservations: all or nothing, idempotent
//! per order id, settled by commit, consume and release, swept after expiry,
//! and counted as reserved wherever checkout's reservations are.

use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, Quantity, Sku};
use holdfast_store::{
    HoldAction, HoldStatus, InventoryBatch, InventoryLevel, NewHold, PlaceOrderError, SharedStore, StoreError,
};

use crate::both_backends;
use crate::helpers::{open, product, secs, t0};
use crate::outbox::new_order;

fn sku(raw: &str) -> Sku {
    Sku::parse(raw).expect("sku")
}

fn new_hold(id: &OrderId, lines: &[(&str, i64)], now: DateTime<Utc>) -> NewHold {
    NewHold {
        id: id.clone(),
        lines: lines
            .iter()
            .map(|(s, qty)| (sku(s), Quantity::parse(*qty).expect("qty")))
            .collect(),
        expires_at: now + secs(900),
        now,
    }
}

/// (available, reserved, on hand) of a SKU.
async fn levels(store: &SharedStore, raw: &str) -> (i64, i64, i64) {
    let InventoryLevel {
        on_hand,
        reserved,
        available,
    } = store
        .get_inventory(&sku(raw))
        .await
        .expect("inventory")
        .expect("known sku");
    (available, reserved, on_hand)
}

both_backends!(a_hold_takes_every_line_or_nothing, |backend| async move {
    let db = open(backend).await;
    let store = &db.store;
    product(store, "APPLE", 5).await;
    product(store, "BANANA", 1).await;
    let now = t0();

    let short = OrderId::generate();
    let refused = store
        .holds()
        .hold(&new_hold(&short, &[("APPLE", 2), ("BANANA", 3)], now))
        .await;
    match refused {
        Err(PlaceOrderError::OutOfStock {
            sku,
            requested,
            available,
        }) => assert_eq!((sku.as_str(), requested, available), ("BANANA", 3, 1)),
        other => panic!("expected BANANA out of stock, got {other:?}"),
    }
    assert_eq!(levels(store, "APPLE").await, (5, 0, 5), "the first line was given back");
    assert_eq!(levels(store, "BANANA").await, (1, 0, 1));
    assert_eq!(store.holds().get(&short).await.expect("get"), None, "nothing held");

    let unknown = store
        .holds()
        .hold(&new_hold(&short, &[("APPLE", 1), ("CHERRY", 1)], now))
        .await;
    assert!(
        matches!(&unknown, Err(PlaceOrderError::UnknownSku(s)) if s.as_str() == "CHERRY"),
        "{unknown:?}"
    );
    assert_eq!(levels(store, "APPLE").await, (5, 0, 5));

    // Lines arrive unsorted and repeated; the hold merges them per SKU.
    let id = OrderId::generate();
    let held = store
        .holds()
        .hold(&new_hold(&id, &[("BANANA", 1), ("APPLE", 1), ("APPLE", 2)], now))
        .await
        .expect("held");
    assert_eq!(held.id, id);
    assert_eq!(held.status, HoldStatus::Held);
    assert_eq!(
        held.lines,
        [
            (sku("APPLE"), Quantity::parse(3).expect("qty")),
            (sku("BANANA"), Quantity::parse(1).expect("qty"))
        ]
    );
    assert_eq!(
        (held.expires_at, held.created_at, held.updated_at),
        (now + secs(900), now, now)
    );
    assert_eq!(store.holds().get(&id).await.expect("get"), Some(held));
    assert_eq!(levels(store, "APPLE").await, (2, 3, 5));
    assert_eq!(levels(store, "BANANA").await, (0, 1, 1));
    db.drop_database().await;
});

both_backends!(
    a_repeated_hold_returns_the_first_and_other_lines_conflict,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        product(store, "APPLE", 10).await;
        product(store, "BANANA", 10).await;
        let now = t0();
        let id = OrderId::generate();

        let first = store
            .holds()
            .hold(&new_hold(&id, &[("APPLE", 2), ("BANANA", 1)], now))
            .await
            .expect("held");
        let again = store
            .holds()
            .hold(&new_hold(&id, &[("APPLE", 2), ("BANANA", 1)], now - secs(5)))
            .await
            .expect("retry");
        assert_eq!(again, first, "a retry gets the first hold back unchanged");
        assert_eq!(levels(store, "APPLE").await, (8, 2, 10), "held once");

        let other = store.holds().hold(&new_hold(&id, &[("APPLE", 3)], now)).await;
        assert!(
            matches!(other, Err(PlaceOrderError::Store(StoreError::Conflict(_)))),
            "{other:?}"
        );
        assert_eq!(levels(store, "APPLE").await, (8, 2, 10));

        // Whatever the hold's status, a retry with its lines returns it.
        let committed = store
            .holds()
            .settle(&id, HoldAction::Commit, now + secs(10))
            .await
            .expect("commit");
        let late = store
            .holds()
            .hold(&new_hold(
                &id,
                &[("BANANA", 1), ("APPLE", 1), ("APPLE", 1)],
                now + secs(20),
            ))
            .await
            .expect("late retry");
        assert_eq!(late, committed);
        assert_eq!(late.status, HoldStatus::Committed);
        assert_eq!(levels(store, "APPLE").await, (8, 2, 10));
        db.drop_database().await;
    }
);

both_backends!(
    release_returns_the_units_once_and_a_released_hold_stays_released,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        let holds = store.holds();
        product(store, "APPLE", 10).await;
        let now = t0();

        let missing = holds.settle(&OrderId::generate(), HoldAction::Release, now).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");

        let id = OrderId::generate();
        holds.hold(&new_hold(&id, &[("APPLE", 3)], now)).await.expect("held");
        assert_eq!(levels(store, "APPLE").await, (7, 3, 10));

        let released = holds
            .settle(&id, HoldAction::Release, now + secs(1))
            .await
            .expect("release");
        assert_eq!(
            (released.status, released.updated_at),
            (HoldStatus::Released, now + secs(1))
        );
        assert_eq!(levels(store, "APPLE").await, (10, 0, 10), "the units are back");

        let again = holds
            .settle(&id, HoldAction::Release, now + secs(2))
            .await
            .expect("release again");
        assert_eq!(again, released, "a repeated release changes nothing");
        assert_eq!(levels(store, "APPLE").await, (10, 0, 10), "returned once");

        for action in [HoldAction::Commit, HoldAction::Consume] {
            let refused = holds.settle(&id, action, now + secs(3)).await;
            assert!(
                matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("released")),
                "{action:?}: {refused:?}"
            );
        }
        assert_eq!(holds.get(&id).await.expect("get"), Some(released));
        db.drop_database().await;
    }
);

both_backends!(
    commit_then_consume_and_a_consumed_hold_cannot_be_released,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        let holds = store.holds();
        product(store, "APPLE", 10).await;
        let now = t0();
        let id = OrderId::generate();
        holds.hold(&new_hold(&id, &[("APPLE", 2)], now)).await.expect("held");

        let committed = holds
            .settle(&id, HoldAction::Commit, now + secs(1))
            .await
            .expect("commit");
        assert_eq!(committed.status, HoldStatus::Committed);
        assert_eq!(
            levels(store, "APPLE").await,
            (8, 2, 10),
            "committed units stay reserved"
        );
        assert_eq!(
            holds
                .settle(&id, HoldAction::Commit, now + secs(2))
                .await
                .expect("commit again"),
            committed
        );

        let consumed = holds
            .settle(&id, HoldAction::Consume, now + secs(3))
            .await
            .expect("consume");
        assert_eq!(
            (consumed.status, consumed.updated_at),
            (HoldStatus::Consumed, now + secs(3))
        );
        assert_eq!(levels(store, "APPLE").await, (8, 0, 8), "shipped units left the stock");
        for action in [HoldAction::Commit, HoldAction::Consume] {
            assert_eq!(
                holds.settle(&id, action, now + secs(4)).await.expect("repeat"),
                consumed,
                "{action:?} on a consumed hold changes nothing"
            );
        }
        let refused = holds.settle(&id, HoldAction::Release, now + secs(5)).await;
        assert!(
            matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("consumed")),
            "{refused:?}"
        );
        assert_eq!(levels(store, "APPLE").await, (8, 0, 8));

        // A committed hold can still be released (the order was cancelled after
        // payment), and a held one consumed directly.
        let paid = OrderId::generate();
        holds.hold(&new_hold(&paid, &[("APPLE", 4)], now)).await.expect("held");
        holds.settle(&paid, HoldAction::Commit, now).await.expect("commit");
        let released = holds.settle(&paid, HoldAction::Release, now).await.expect("release");
        assert_eq!(released.status, HoldStatus::Released);
        assert_eq!(levels(store, "APPLE").await, (8, 0, 8));
        let shipped = OrderId::generate();
        holds
            .hold(&new_hold(&shipped, &[("APPLE", 1)], now))
            .await
            .expect("held");
        let consumed = holds.settle(&shipped, HoldAction::Consume, now).await.expect("consume");
        assert_eq!(consumed.status, HoldStatus::Consumed);
        assert_eq!(levels(store, "APPLE").await, (7, 0, 7));
        db.drop_database().await;
    }
);

both_backends!(expired_lists_only_held_holds_past_their_expiry, |backend| async move {
    let db = open(backend).await;
    let store = &db.store;
    let holds = store.holds();
    product(store, "APPLE", 10).await;
    let now = t0();
    let hold_expiring = |after: i64| {
        let id = OrderId::generate();
        let mut hold = new_hold(&id, &[("APPLE", 1)], now);
        hold.expires_at = now + secs(after);
        (id, hold)
    };
    let (later, hold) = hold_expiring(20);
    holds.hold(&hold).await.expect("held");
    let (sooner, hold) = hold_expiring(10);
    holds.hold(&hold).await.expect("held");
    let (committed, hold) = hold_expiring(5);
    holds.hold(&hold).await.expect("held");
    holds.settle(&committed, HoldAction::Commit, now).await.expect("commit");
    let (released, hold) = hold_expiring(5);
    holds.hold(&hold).await.expect("held");
    holds
        .settle(&released, HoldAction::Release, now)
        .await
        .expect("release");
    let (_unexpired, hold) = hold_expiring(100);
    holds.hold(&hold).await.expect("held");

    let expired = |at: i64, limit: i64| holds.expired(now + secs(at), limit);
    assert_eq!(expired(9, 10).await.expect("expired"), Vec::<OrderId>::new());
    assert_eq!(
        expired(10, 10).await.expect("expired"),
        std::slice::from_ref(&sooner),
        "at expiry"
    );
    assert_eq!(
        expired(30, 10).await.expect("expired"),
        [sooner.clone(), later],
        "oldest expiry first, settled holds left out"
    );
    assert_eq!(expired(30, 1).await.expect("expired"), [sooner]);
    db.drop_database().await;
});

both_backends!(concurrent_holds_never_oversell, |backend| async move {
    let db = open(backend).await;
    let store = db.store.clone();
    product(&store, "HOT", 25).await;
    let now = t0();

    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = OrderId::generate();
                let held = store.holds().hold(&new_hold(&id, &[("HOT", 1)], now)).await;
                (id, held)
            })
        })
        .collect();
    let (mut held, mut sold_out) = (Vec::new(), 0);
    for task in tasks {
        match task.await.expect("task") {
            (id, Ok(_)) => held.push(id),
            (_, Err(PlaceOrderError::OutOfStock { .. })) => sold_out += 1,
            (_, Err(other)) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((held.len(), sold_out), (25, 15));
    assert_eq!(levels(&store, "HOT").await, (0, 25, 25));

    for id in &held {
        store
            .holds()
            .settle(id, HoldAction::Release, now)
            .await
            .expect("release");
    }
    assert_eq!(levels(&store, "HOT").await, (25, 0, 25));
    db.drop_database().await;
});

both_backends!(concurrent_holds_with_one_id_hold_once, |backend| async move {
    let db = open(backend).await;
    let store = db.store.clone();
    product(&store, "HOT", 25).await;
    let now = t0();
    let id = OrderId::generate();

    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            let hold = new_hold(&id, &[("HOT", 3)], now);
            tokio::spawn(async move { store.holds().hold(&hold).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task").expect("every call gets the hold"));
    }
    assert!(answers.iter().all(|hold| hold == &answers[0]), "{answers:?}");
    assert_eq!(levels(&store, "HOT").await, (22, 3, 25), "one hold's worth reserved");
    db.drop_database().await;
});

both_backends!(
    sync_inventory_keeps_units_of_active_holds_reserved,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        let holds = store.holds();
        product(store, "APPLE", 10).await;
        let now = t0();
        let settled = |qty: i64, action: Option<HoldAction>| async move {
            let id = OrderId::generate();
            holds.hold(&new_hold(&id, &[("APPLE", qty)], now)).await.expect("held");
            if let Some(action) = action {
                holds.settle(&id, action, now).await.expect("settled");
            }
        };
        settled(3, None).await;
        settled(2, Some(HoldAction::Commit)).await;
        settled(1, Some(HoldAction::Release)).await;
        settled(1, Some(HoldAction::Consume)).await;
        store.place_order(&new_order("APPLE", 2)).await.expect("checkout");
        // Held 3 + committed 2 + the order's 2 are reserved; the consumed unit left.
        assert_eq!(levels(store, "APPLE").await, (2, 7, 9));

        let synced = store
            .sync_inventory(&InventoryBatch {
                batch_id: "count-1".into(),
                levels: vec![(sku("APPLE"), 20)],
                received_at: now,
            })
            .await
            .expect("sync");
        assert_eq!(synced.updated, ["APPLE"]);
        assert_eq!(
            levels(store, "APPLE").await,
            (13, 7, 20),
            "available = on hand − reserved"
        );
        db.drop_database().await;
    }
);

both_backends!(
    a_repeated_hold_moves_its_expiry_later_never_earlier,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        product(store, "MAST", 5).await;
        let id = OrderId::generate();
        let first = store
            .holds()
            .hold(&new_hold(&id, &[("MAST", 2)], t0()))
            .await
            .expect("hold");
        // An order completed later asks again with its new payment deadline.
        let mut later = new_hold(&id, &[("MAST", 2)], t0() + secs(600));
        let extended = store.holds().hold(&later).await.expect("hold again");
        assert_eq!(extended.expires_at, later.expires_at);
        assert_eq!(extended.created_at, first.created_at, "the same hold");
        assert_eq!(levels(store, "MAST").await, (3, 2, 5), "held once");
        // An earlier deadline never shortens it.
        let earlier = new_hold(&id, &[("MAST", 2)], t0());
        let kept = store.holds().hold(&earlier).await.expect("hold again");
        assert_eq!(kept.expires_at, later.expires_at);
        // A committed hold no longer expires: a repeat leaves it as it is.
        store
            .holds()
            .settle(&id, HoldAction::Commit, t0() + secs(700))
            .await
            .expect("commit");
        later.expires_at += secs(600);
        let committed = store.holds().hold(&later).await.expect("hold again");
        assert_eq!(committed.status, HoldStatus::Committed);
        assert_eq!(committed.expires_at, extended.expires_at);
        db.drop_database().await;
    }
);
