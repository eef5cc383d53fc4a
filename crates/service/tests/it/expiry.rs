//! Reservations expire: the sweeper releases the stock and cancels the
//! order. Time is driven by calling the sweeper with a chosen "now".

use chrono::{Duration, Utc};
use holdfast_service::workers::expiry::sweep_once;

use crate::both_backends;
use crate::helpers::{order, spawn_app_with};

both_backends!(expired_reservations_release_their_stock, |backend| async move {
    // A provider that never confirms: the order stays pending_payment.
    let app = spawn_app_with(backend, |config| {
        config.payments.url = "http://127.0.0.1:9".into();
        config.dependencies.payments.deadline_ms = 200;
        config.dependencies.payments.on_unavailable = holdfast_resilience::OnUnavailable::Reject;
    })
    .await;
    app.create_product("TENT", 25_000, 4).await;
    let placed = app
        .store
        .place_order(&pending_order("TENT", 3))
        .await
        .expect("order placed");
    assert_eq!(app.inventory("TENT").await, (4, 3, 1));

    assert_eq!(
        sweep_once(&app.store, Utc::now()).await.expect("sweep"),
        0,
        "not expired yet"
    );
    assert_eq!(app.inventory("TENT").await, (4, 3, 1));

    let later = Utc::now() + Duration::minutes(16);
    assert_eq!(sweep_once(&app.store, later).await.expect("sweep"), 1);
    assert_eq!(app.inventory("TENT").await, (4, 0, 4));
    let cancelled = app.shop.get(&format!("/api/v1/orders/{}", placed.id)).await;
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(
        sweep_once(&app.store, later).await.expect("sweep"),
        0,
        "a second sweep finds nothing"
    );

    // With on_unavailable = "reject", a checkout whose provider is
    // unreachable gives its stock back at once.
    let failed = app
        .shop
        .checkout(&order(&[("TENT", 2)], "pm_card_visa"), "no-provider")
        .await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert_eq!(failed.body["code"], "dependency_unavailable");
    assert!(failed.headers.contains_key("retry-after"));
    assert_eq!(app.inventory("TENT").await, (4, 0, 4));
    app.stop().await;
});

pub fn pending_order(sku: &str, qty: i64) -> holdfast_store::NewOrder {
    use holdfast_domain::*;
    let now = Utc::now();
    let price = Money::new(25_000, Currency::USD).expect("price");
    holdfast_store::NewOrder {
        id: OrderId::generate(),
        email: Email::parse("late@example.com").expect("email"),
        name: None,
        address: Address::parse(address::AddressFields {
            line1: "1 Slow Lane",
            city: "Bend",
            postal_code: "97701",
            country: "US",
            ..Default::default()
        })
        .expect("address"),
        lines: vec![(Sku::parse(sku).expect("sku"), Quantity::parse(qty).expect("qty"), price)],
        total: price.checked_mul(u32::try_from(qty).expect("qty")).expect("total"),
        payment_method: "pm_card_visa".into(),
        status: OrderStatus::PendingPayment,
        expires_at: now + Duration::minutes(15),
        now,
        cause: "test".into(),
    }
}
