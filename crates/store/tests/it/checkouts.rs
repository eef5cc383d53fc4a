//! Checkout's two write transactions (`Checkouts`): the idempotency key and
//! the order commit together, so a key in progress always names its order,
//! and every way back to a key (a crash, a failure opened for retry, a
//! final failure) finds that order and no second one.

use chrono::{DateTime, Utc};
use holdfast_domain::{OrderId, OrderStatus};
use holdfast_store::{
    CheckoutBegin, CheckoutFinish, CheckoutStart, IdempotentRequest, NewJob, NewOrder, Order, PaymentIntentRef,
    PlaceOrderError, SharedStore, StatusChange, Stock, StoredResponse,
};

use crate::both_backends;
use crate::helpers::{job, open, product, secs, t0};
use crate::outbox::new_order;

/// The key `key` for a request at `now` that would create `order`.
fn key(key: &str, order: &NewOrder, now: DateTime<Utc>) -> IdempotentRequest {
    IdempotentRequest {
        scope: "key_test".into(),
        key: key.into(),
        request_hash: "hash-1".into(),
        resource_id: order.id.to_string(),
        now,
        lease: secs(60),
    }
}

/// A checkout of one `sku` at `now`, as a new request would make it.
fn request(sku: &str, now: DateTime<Utc>) -> NewOrder {
    let mut order = new_order(sku, 1);
    order.now = now;
    order.expires_at = now + secs(900);
    order
}

async fn begin(
    store: &SharedStore,
    key: &IdempotentRequest,
    order: &NewOrder,
) -> Result<CheckoutBegin, PlaceOrderError> {
    let start = CheckoutStart {
        key,
        order,
        stock: Stock::Reserve,
        jobs: &[],
        answer: None,
    };
    store.checkouts().begin(&start).await
}

fn placed(begun: Result<CheckoutBegin, PlaceOrderError>) -> Order {
    match begun {
        Ok(CheckoutBegin::Placed(order)) => order,
        other => panic!("expected a placed order, got {other:?}"),
    }
}

fn resumed(begun: Result<CheckoutBegin, PlaceOrderError>) -> Order {
    match begun {
        Ok(CheckoutBegin::Resumed(order)) => order,
        other => panic!("expected a resumed order, got {other:?}"),
    }
}

async fn reserved(store: &SharedStore, sku: &str) -> i64 {
    let sku = holdfast_domain::Sku::parse(sku).expect("sku");
    store.get_inventory(&sku).await.expect("level").expect("known").reserved
}

async fn order_count(store: &SharedStore) -> usize {
    let counts = store.order_counts().await.expect("counts");
    counts.iter().map(|(_, n)| usize::try_from(*n).expect("count")).sum()
}

fn answer(status: u16, body: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: body.into(),
    }
}

both_backends!(
    a_key_places_once_and_a_crashed_attempt_resumes_its_order,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        product(store, "CRATE", 5).await;
        let now = t0();
        let first = request("CRATE", now);
        let order = placed(begin(store, &key("k1", &first, now), &first).await);
        assert_eq!(
            (order.id.clone(), order.status),
            (first.id.clone(), OrderStatus::PendingPayment)
        );
        assert_eq!(reserved(store, "CRATE").await, 1);

        // The same key while the first attempt's lease holds: in progress;
        // with another body: a mismatch. Neither writes anything.
        let again = request("CRATE", now + secs(1));
        assert_eq!(
            begin(store, &key("k1", &again, now + secs(1)), &again)
                .await
                .expect("begin"),
            CheckoutBegin::InProgress
        );
        let other_body = IdempotentRequest {
            request_hash: "hash-2".into(),
            ..key("k1", &again, now + secs(1))
        };
        assert_eq!(
            begin(store, &other_body, &again).await.expect("begin"),
            CheckoutBegin::Mismatch
        );

        // The first attempt died between the transactions; after its lease
        // a retry resumes its order, not the retry's own.
        let retry = request("CRATE", now + secs(61));
        let resumed = resumed(begin(store, &key("k1", &retry, now + secs(61)), &retry).await);
        assert_eq!(resumed.id, order.id);
        assert_eq!(reserved(store, "CRATE").await, 1, "its stock reserved once");
        assert_eq!(order_count(store).await, 1);
        // A second retry in the same lease is told the first is running.
        assert_eq!(
            begin(store, &key("k1", &retry, now + secs(62)), &retry)
                .await
                .expect("begin"),
            CheckoutBegin::InProgress
        );

        let intent = PaymentIntentRef {
            intent_id: "pi_1".into(),
            client_secret: "pi_1_secret".into(),
        };
        let created = answer(201, "{\"order_id\":\"placed\"}");
        store
            .checkouts()
            .finish(&CheckoutFinish {
                scope: "key_test",
                key: "k1",
                order_id: &order.id,
                intent: Some(&intent),
                jobs: &[],
                answer: &created,
            })
            .await
            .expect("finish");
        let stored = store.get_order(&order.id).await.expect("read").expect("order");
        assert_eq!(stored.payment_intent_id.as_deref(), Some("pi_1"));
        let late = request("CRATE", now + secs(200));
        assert_eq!(
            begin(store, &key("k1", &late, now + secs(200)), &late)
                .await
                .expect("begin"),
            CheckoutBegin::Replay(created)
        );
        assert_eq!(order_count(store).await, 1);
        db.drop_database().await;
    }
);

both_backends!(
    a_reopened_key_gives_the_stock_back_and_its_retry_reserves_again,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        product(store, "OAR", 1).await;
        let now = t0();
        let first = request("OAR", now);
        let order = placed(begin(store, &key("k2", &first, now), &first).await);
        assert_eq!(reserved(store, "OAR").await, 1);

        let failed = now + secs(1);
        let back = StatusChange::new(order.id.clone(), OrderStatus::Accepted, "checkout failed", failed);
        store
            .checkouts()
            .reopen("key_test", "k2", Some(&back), failed)
            .await
            .expect("reopen");
        let waiting = store.get_order(&order.id).await.expect("read").expect("order");
        assert_eq!(waiting.status, OrderStatus::Accepted);
        assert_eq!(reserved(store, "OAR").await, 0, "the stock is back at once");

        // The retry comes at once, well inside the first attempt's lease.
        let retry = request("OAR", now + secs(2));
        let resumed = resumed(begin(store, &key("k2", &retry, now + secs(2)), &retry).await);
        assert_eq!(
            (resumed.id.clone(), resumed.status),
            (order.id.clone(), OrderStatus::PendingPayment)
        );
        assert_eq!(resumed.expires_at, Some(retry.expires_at), "a new payment deadline");
        assert_eq!(reserved(store, "OAR").await, 1);
        assert_eq!(order_count(store).await, 1);
        db.drop_database().await;
    }
);

both_backends!(
    a_final_failure_is_stored_and_rejects_an_order_it_cannot_resume,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        product(store, "LAST", 1).await;
        let now = t0();

        // Out of stock in the first transaction: nothing is written, the key
        // neither, and the answer is stored on its own.
        let greedy = {
            let mut order = request("LAST", now);
            order.lines[0].1 = holdfast_domain::Quantity::parse(2).expect("qty");
            order
        };
        let greedy_key = key("k3", &greedy, now);
        assert!(matches!(
            begin(store, &greedy_key, &greedy).await,
            Err(PlaceOrderError::OutOfStock { .. })
        ));
        assert_eq!(order_count(store).await, 0);
        let sold_out = answer(409, "{\"code\":\"out_of_stock\"}");
        store
            .checkouts()
            .record_failure(&greedy_key, &sold_out, "unused")
            .await
            .expect("record");
        assert_eq!(
            begin(store, &key("k3", &greedy, now + secs(1)), &greedy)
                .await
                .expect("begin"),
            CheckoutBegin::Replay(sold_out.clone())
        );

        // A failed checkout waits in `accepted`; its stock sells meanwhile;
        // the retry finds none, and the stored failure rejects the order.
        let first = request("LAST", now);
        let order = placed(begin(store, &key("k4", &first, now), &first).await);
        let back = StatusChange::new(
            order.id.clone(),
            OrderStatus::Accepted,
            "checkout failed",
            now + secs(1),
        );
        store
            .checkouts()
            .reopen("key_test", "k4", Some(&back), now + secs(1))
            .await
            .expect("reopen");
        let other = request("LAST", now + secs(2));
        placed(begin(store, &key("k5", &other, now + secs(2)), &other).await);
        let retry = request("LAST", now + secs(3));
        let retry_key = key("k4", &retry, now + secs(3));
        assert!(matches!(
            begin(store, &retry_key, &retry).await,
            Err(PlaceOrderError::OutOfStock { .. })
        ));
        store
            .checkouts()
            .record_failure(&retry_key, &sold_out, "checkout failed: out_of_stock")
            .await
            .expect("record");
        let rejected = store.get_order(&order.id).await.expect("read").expect("order");
        assert_eq!(rejected.status, OrderStatus::Rejected);
        assert_eq!(
            begin(store, &key("k4", &retry, now + secs(4)), &retry)
                .await
                .expect("begin"),
            CheckoutBegin::Replay(sold_out)
        );
        assert_eq!(order_count(store).await, 2, "the rejected order and the other buyer's");
        db.drop_database().await;
    }
);

both_backends!(
    an_order_taken_for_later_is_one_transaction_with_its_job_and_answer,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        product(store, "LATER", 3).await;
        let now = t0();
        let mut later = request("LATER", now);
        later.status = OrderStatus::Accepted;
        let jobs: Vec<NewJob> = vec![job("checkout", later.id.as_str(), 0, now)];
        let render = |order: &Order| answer(202, &format!("{{\"order_id\":\"{}\"}}", order.id));
        let start = CheckoutStart {
            key: &key("k6", &later, now),
            order: &later,
            stock: Stock::Untouched,
            jobs: &jobs,
            answer: Some(&render),
        };
        let order = placed(store.checkouts().begin(&start).await);
        assert_eq!(order.status, OrderStatus::Accepted);
        assert_eq!(reserved(store, "LATER").await, 0, "no stock touched");
        let stats = store.queue().stats(now).await.expect("stats");
        assert_eq!(stats.iter().find(|s| s.queue == "checkout").map(|s| s.ready), Some(1));
        let retry = request("LATER", now + secs(1));
        assert_eq!(
            begin(store, &key("k6", &retry, now + secs(1)), &retry)
                .await
                .expect("begin"),
            CheckoutBegin::Replay(render(&order))
        );
        db.drop_database().await;
    }
);

both_backends!(
    a_failed_checkout_no_retry_resumes_is_swept_when_its_reservation_expires,
    |backend| async move {
        let db = open(backend).await;
        let store = &db.store;
        product(store, "SWEPT", 2).await;
        let now = t0();
        let first = request("SWEPT", now);
        let order = placed(begin(store, &key("k7", &first, now), &first).await);
        let back = StatusChange::new(
            order.id.clone(),
            OrderStatus::Accepted,
            "checkout failed",
            now + secs(1),
        );
        store
            .checkouts()
            .reopen("key_test", "k7", Some(&back), now + secs(1))
            .await
            .expect("reopen");
        // An order taken for later while inventory was down is the worker's,
        // however old: the sweeper leaves it alone.
        let mut later = request("SWEPT", now);
        later.status = OrderStatus::Accepted;
        store.accept_order(&later, &[]).await.expect("accepted");

        assert!(
            store
                .expired_orders(now + secs(60), 10)
                .await
                .expect("expired")
                .is_empty()
        );
        let expired: Vec<OrderId> = store.expired_orders(now + secs(901), 10).await.expect("expired");
        assert_eq!(expired, vec![order.id.clone()]);
        db.drop_database().await;
    }
);
