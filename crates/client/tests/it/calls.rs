//! What each endpoint method sends, and how it decodes answers and errors.

use holdfast_client::{Address, CustomerIn, Error, LineItemIn, ListOrders, OrderIn, OrderStatus, Scope};
use serde_json::json;

use crate::fake::{Answer, Fake, TestResult};

pub fn sample_order() -> OrderIn {
    OrderIn {
        items: vec![LineItemIn {
            sku: "MUG-1".to_owned(),
            qty: 2,
        }],
        customer: CustomerIn {
            email: "ada@example.com".to_owned(),
            name: Some("Ada".to_owned()),
        },
        shipping_address: Address {
            line1: "1 Main St".to_owned(),
            line2: None,
            city: "Springfield".to_owned(),
            state: Some("IL".to_owned()),
            postal_code: "62701".to_owned(),
            country: "US".to_owned(),
        },
        payment_method: "pm_card_visa".to_owned(),
    }
}

fn order_json(id: &str) -> serde_json::Value {
    json!({
        "id": id, "status": "paid",
        "items": [{"sku": "MUG-1", "qty": 2, "unit_price": {"amount": 1200, "currency": "USD"}}],
        "total": {"amount": 2400, "currency": "USD"},
        "customer": {"email": "ada@example.com", "name": "Ada"},
        "shipping_address": {"line1": "1 Main St", "city": "Springfield", "postal_code": "62701", "country": "US"},
        "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:01:00.5Z",
        "a_field_from_the_future": true
    })
}

#[tokio::test]
async fn create_order_sends_the_documented_body_and_bearer_key() -> TestResult {
    let fake = Fake::start(vec![Answer::json(
        202,
        json!({"order_id": "ord_2", "status": "accepted"}),
    )])
    .await?;
    let created = fake.client(1).create_order(&sample_order()).await?;
    assert_eq!(created.status, OrderStatus::Accepted);
    assert_eq!(created.client_secret, None);
    let call = &fake.calls()[0];
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", "/api/v1/orders"));
    assert_eq!(call.authorization.as_deref(), Some("Bearer hf_test_key"));
    assert!(
        call.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("holdfast-client/"))
    );
    let body: serde_json::Value = serde_json::from_str(&call.body)?;
    assert_eq!(body["items"], json!([{"sku": "MUG-1", "qty": 2}]));
    assert_eq!(body["shipping_address"]["country"], "US");
    assert_eq!(body["payment_method"], "pm_card_visa");
    Ok(())
}

#[tokio::test]
async fn orders_decode_and_lists_send_their_filters() -> TestResult {
    let page = json!({"data": [order_json("ord_1")], "next_cursor": "c2"});
    let fake = Fake::start(vec![Answer::json(200, order_json("ord_1")), Answer::json(200, page)]).await?;
    let client = fake.client(1);
    let order = client.get_order("ord_1").await?;
    assert_eq!(order.total.amount, 2400);
    assert_eq!(order.items[0].unit_price.currency, "USD");
    assert_eq!(order.status, OrderStatus::Paid);

    let filter = ListOrders {
        customer: Some("ada@example.com".to_owned()),
        status: Some(OrderStatus::PendingPayment),
        limit: Some(10),
        cursor: None,
    };
    let page = client.list_orders(&filter).await?;
    assert_eq!(page.next_cursor.as_deref(), Some("c2"));
    assert_eq!(page.data.len(), 1);
    let call = &fake.calls()[1];
    assert_eq!(call.path, "/api/v1/orders");
    assert_eq!(
        call.query.as_deref(),
        Some("customer=ada%40example.com&status=pending_payment&limit=10")
    );
    Ok(())
}

#[tokio::test]
async fn path_parameters_are_encoded() -> TestResult {
    let fake = Fake::start(vec![Answer::problem(404, "not_found")]).await?;
    let result = fake.client(1).get_product("a/b c").await;
    assert_eq!(result.err().and_then(|e| e.status()), Some(404));
    assert_eq!(fake.calls()[0].path, "/api/v1/products/a%2Fb%20c");
    Ok(())
}

#[tokio::test]
async fn validation_problems_keep_their_field_errors() -> TestResult {
    let problem = json!({
        "type": "https://holdfast.dev/problems/invalid-cart", "title": "Invalid cart", "status": 422,
        "code": "invalid_cart", "detail": "2 fields are invalid",
        "errors": [{"field": "items[0].qty", "message": "must be at least 1"},
                   {"field": "shipping_address.country", "message": "not ISO 3166-1 alpha-2"}]
    });
    let fake = Fake::start(vec![Answer::json(422, problem)]).await?;
    let result = fake.client(3).create_order(&sample_order()).await;
    let Err(Error::Api { status, problem }) = result else {
        return Err(format!("expected an API error, got {result:?}").into());
    };
    assert_eq!(status, 422);
    assert_eq!(problem.code, "invalid_cart");
    assert_eq!(problem.detail.as_deref(), Some("2 fields are invalid"));
    let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["items[0].qty", "shipping_address.country"]);
    assert_eq!(fake.calls().len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_unexpected_success_body_is_a_decode_error() -> TestResult {
    let fake = Fake::start(vec![Answer::json(200, json!({"sku": "MUG-1"}))]).await?;
    let result = fake.client(1).get_inventory("MUG-1").await;
    assert!(matches!(result, Err(Error::Decode { status: 200, .. })), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn events_customers_intents_and_keys_decode() -> TestResult {
    let fake = Fake::start(vec![
        Answer::json(
            200,
            json!({"data": [{"from": "pending_payment", "to": "paid", "cause": "payment_intent.succeeded",
                                          "at": "2030-01-01T00:00:00Z", "actor": "webhook"}]}),
        ),
        Answer::json(200, json!([{"email": "ada@example.com", "name": "Ada"}])),
        Answer::json(
            201,
            json!({"order_id": "ord_1", "client_secret": "pi_2_secret_y", "status": "pending_payment"}),
        ),
        Answer::json(201, json!({"id": "key_1", "key": "hf_abc", "scope": "storefront"})),
    ])
    .await?;
    let client = fake.client(1);
    let events = client.order_events("ord_1").await?;
    assert_eq!(events[0].to, Some(OrderStatus::Paid));
    assert_eq!(events[0].extra.get("actor"), Some(&json!("webhook")));
    let customers = client.search_customers("ADA").await?;
    assert_eq!(customers[0].name.as_deref(), Some("Ada"));
    let intent = client.create_payment_intent("ord_1").await?;
    assert_eq!(intent.client_secret.as_deref(), Some("pi_2_secret_y"));
    let key = client.create_api_key(Scope::Storefront).await?;
    assert_eq!((key.key.as_str(), key.scope), ("hf_abc", Scope::Storefront));
    assert!(!format!("{key:?}").contains("hf_abc"));

    let calls = fake.calls();
    assert_eq!(calls[1].query.as_deref(), Some("q=ADA"));
    assert_eq!(calls[2].body, r#"{"order_id":"ord_1"}"#);
    assert_eq!(calls[3].body, r#"{"scope":"storefront"}"#);
    Ok(())
}

#[tokio::test]
async fn raw_gives_the_http_client_and_base_url() -> TestResult {
    let fake = Fake::start(vec![Answer::text(400, "bad body")]).await?;
    let client = fake.client(1);
    let (http, base) = client.raw();
    assert_eq!(base, fake.base_url);
    let response = http
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(client.api_key())
        .body("{not json")
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(fake.calls()[0].body, "{not json");
    Ok(())
}
