//! The recording webhook receiver: signed deliveries from a real client, scripted
//! answers, and concurrent posts.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use holdfast_sandbox::{Delivery, Respond, Verification};
use holdfast_signing::standard_webhooks::WEBHOOK_ID;
use holdfast_signing::{SignedHeaders, VerifyError, WebhookSecret};
use serde_json::json;

use crate::support::{TestResult, spawn_receiver};

const WAIT: Duration = Duration::from_secs(5);

fn event_body(event_id: &str) -> String {
    json!({
        "type": "order.shipped",
        "timestamp": "2024-05-01T12:00:00Z",
        "data": {"order_id": "ord_1", "event_id": event_id}
    })
    .to_string()
}

/// Posts `body` to `/hooks/{name}` with the given Standard Webhooks headers.
async fn post(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    headers: &SignedHeaders,
    body: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut request = client
        .post(format!("{base}/hooks/{name}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (header, value) in headers.pairs() {
        request = request.header(header, value);
    }
    request.send().await
}

/// Signs `body` now under `secret` and posts it.
async fn deliver(
    base: &str,
    name: &str,
    secret: &WebhookSecret,
    msg_id: &str,
    body: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let headers = SignedHeaders::sign(secret, msg_id, Utc::now().timestamp(), body);
    post(&reqwest::Client::new(), base, name, &headers, body).await
}

async fn statuses_of(base: &str, name: &str, secret: &WebhookSecret, n: usize) -> Result<Vec<u16>, reqwest::Error> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let id = format!("evt_{i}");
        statuses.push(
            deliver(base, name, secret, &id, &event_body(&id))
                .await?
                .status()
                .as_u16(),
        );
    }
    Ok(statuses)
}

#[tokio::test]
async fn a_valid_signed_delivery_is_recorded_as_verified() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    let secret = WebhookSecret::generate();
    receiver.set_secret("acme", secret.clone());
    let body = event_body("evt_1");
    let now = Utc::now().timestamp();
    let headers = SignedHeaders::sign(&secret, "evt_1", now, &body);
    let response = post(&reqwest::Client::new(), &running.base_url, "acme", &headers, &body).await?;
    assert_eq!(response.status().as_u16(), 200);

    let deliveries = receiver.deliveries("acme");
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery.verification, Verification::Verified);
    assert_eq!(delivery.webhook_id.as_deref(), Some("evt_1"));
    assert_eq!(delivery.timestamp, Some(now));
    assert_eq!(delivery.signature.as_deref(), Some(headers.signature.as_str()));
    assert_eq!(delivery.body_text(), body);
    assert_eq!(
        delivery.json().map(|json| json["type"].clone()),
        Some(json!("order.shipped"))
    );
    assert_eq!(
        (delivery.name.as_str(), delivery.status, delivery.seq),
        ("acme", 200, 0)
    );
    assert!(delivery.received_at.timestamp() >= now);
    let counts = receiver.counts("acme");
    assert_eq!((counts.received, counts.accepted, counts.verified), (1, 1, 1));
    Ok(())
}

#[tokio::test]
async fn tampered_wrongly_signed_stale_and_unsigned_deliveries_are_recorded_as_unverified() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    let base = running.base_url.as_str();
    let secret = WebhookSecret::generate();
    receiver.set_secret("acme", secret.clone());
    let client = reqwest::Client::new();
    let now = Utc::now().timestamp();
    let body = event_body("evt_1");

    let signed = SignedHeaders::sign(&secret, "evt_1", now, &body);
    let tampered = body.replace("ord_1", "ord_2");
    post(&client, base, "acme", &signed, &tampered).await?;
    deliver(base, "acme", &WebhookSecret::generate(), "evt_2", &body).await?;
    let stale = SignedHeaders::sign(&secret, "evt_3", now - 301, &body);
    post(&client, base, "acme", &stale, &body).await?;
    let unsigned = client
        .post(format!("{base}/hooks/acme"))
        .body("not json")
        .send()
        .await?;
    // The receiver records and answers by its script; whether to trust a delivery is
    // the test's question, not the sender's.
    assert_eq!(unsigned.status().as_u16(), 200);

    let deliveries = receiver.deliveries("acme");
    let verifications: Vec<_> = deliveries.iter().map(|d| d.verification.clone()).collect();
    assert_eq!(verifications[0], Verification::Failed(VerifyError::NoMatchingSignature));
    assert_eq!(verifications[1], Verification::Failed(VerifyError::NoMatchingSignature));
    assert!(
        matches!(verifications[2], Verification::Failed(VerifyError::TooOld { .. })),
        "{verifications:?}"
    );
    assert_eq!(
        verifications[3],
        Verification::Failed(VerifyError::MissingHeader(WEBHOOK_ID))
    );
    assert_eq!(deliveries[3].json(), None);
    assert_eq!(deliveries[3].body_text(), "not json");
    assert_eq!(receiver.counts("acme").verified, 0);

    // A name without a secret records deliveries without judging them.
    deliver(base, "open", &secret, "evt_4", &body).await?;
    assert_eq!(receiver.deliveries("open")[0].verification, Verification::NotChecked);
    Ok(())
}

#[tokio::test]
async fn a_scripted_sequence_is_answered_in_order_then_the_default() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    let secret = WebhookSecret::generate();
    receiver.set_secret("flaky", secret.clone());
    receiver.script("flaky", [Respond::status(503).times(2)]);

    let statuses = statuses_of(&running.base_url, "flaky", &secret, 4).await?;
    assert_eq!(statuses, [503, 503, 200, 200]);
    let recorded: Vec<u16> = receiver.deliveries("flaky").iter().map(|d| d.status).collect();
    assert_eq!(recorded, [503, 503, 200, 200]);
    let accepted: Vec<_> = receiver
        .accepted("flaky")
        .into_iter()
        .filter_map(|d| d.webhook_id)
        .collect();
    assert_eq!(accepted, ["evt_2", "evt_3"]);
    let counts = receiver.counts("flaky");
    assert_eq!((counts.received, counts.accepted, counts.verified), (4, 2, 4));
    Ok(())
}

#[tokio::test]
async fn retry_after_is_sent_when_scripted() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    let secret = WebhookSecret::generate();
    receiver.script(
        "busy",
        [
            Respond::status(429).retry_after(1),
            Respond::status(503).retry_after_value("Wed, 21 Oct 2015 07:28:00 GMT"),
            Respond::status(503),
        ],
    );
    let mut seen = Vec::new();
    for i in 0..3 {
        let response = deliver(&running.base_url, "busy", &secret, &format!("evt_{i}"), "{}").await?;
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.push((response.status().as_u16(), retry_after));
    }
    assert_eq!(
        seen,
        [
            (429, Some("1".to_owned())),
            (503, Some("Wed, 21 Oct 2015 07:28:00 GMT".to_owned())),
            (503, None)
        ]
    );
    assert_eq!(receiver.accepted("busy").len(), 0);
    Ok(())
}

#[tokio::test]
async fn gone_is_answered_once_scripted_or_for_good_as_the_default() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    let secret = WebhookSecret::generate();
    receiver.script("once", [Respond::status(410)]);
    receiver.set_default("retired", Respond::status(410));

    assert_eq!(statuses_of(&running.base_url, "once", &secret, 2).await?, [410, 200]);
    assert_eq!(
        statuses_of(&running.base_url, "retired", &secret, 3).await?,
        [410, 410, 410]
    );
    assert_eq!(receiver.counts("retired").accepted, 0);
    Ok(())
}

#[tokio::test]
async fn concurrent_posts_to_two_names_are_all_recorded() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    let secret = WebhookSecret::generate();
    receiver.set_secret("alpha", secret.clone());
    receiver.set_secret("beta", secret.clone());
    let per_name = 40;
    let mut tasks = Vec::new();
    for i in 0..per_name {
        for name in ["alpha", "beta"] {
            let (base, secret) = (running.base_url.clone(), secret.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("evt_{name}_{i}");
                deliver(&base, name, &secret, &id, &event_body(&id))
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await??, 200);
    }

    let mut seqs = HashSet::new();
    for name in ["alpha", "beta"] {
        let deliveries = receiver.wait_for_count(name, per_name, WAIT).await?;
        let ids: HashSet<_> = deliveries.iter().filter_map(|d| d.webhook_id.clone()).collect();
        let expected: HashSet<_> = (0..per_name).map(|i| format!("evt_{name}_{i}")).collect();
        assert_eq!(ids, expected);
        assert!(
            deliveries
                .iter()
                .all(|d| d.verification.is_verified() && d.name == name)
        );
        // Arrival order: sequence numbers only grow within a name.
        assert!(deliveries.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        seqs.extend(deliveries.iter().map(|d| d.seq));
    }
    assert_eq!(seqs.len(), 2 * per_name);
    assert_eq!(receiver.total_received(), 2 * per_name as u64);
    Ok(())
}

#[tokio::test]
async fn a_slow_answer_is_recorded_even_when_the_sender_gives_up() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    receiver.script("slow", [Respond::ok().latency(Duration::from_secs(2))]);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(250)).build()?;
    let headers = SignedHeaders::sign(&WebhookSecret::generate(), "evt_1", Utc::now().timestamp(), "{}");
    let outcome = post(&client, &running.base_url, "slow", &headers, "{}").await;
    assert!(outcome.is_err_and(|error| error.is_timeout()));
    let recorded = receiver.wait_for_count("slow", 1, WAIT).await?;
    assert_eq!((recorded.len(), recorded[0].status), (1, 200));
    Ok(())
}

#[tokio::test]
async fn wait_for_wakes_on_arrival_and_reports_what_it_saw_on_timeout() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    let secret = WebhookSecret::generate();
    let sender = {
        let (base, secret) = (running.base_url.clone(), secret.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            statuses_of(&base, "later", &secret, 2).await
        })
    };
    let has_second = |deliveries: &[Delivery]| deliveries.iter().any(|d| d.webhook_id.as_deref() == Some("evt_1"));
    let deliveries = receiver.wait_for("later", has_second, WAIT).await?;
    assert_eq!(deliveries.len(), 2);
    assert_eq!(sender.await??, [200, 200]);
    assert_eq!(receiver.wait_for_accepted("later", 2, WAIT).await?.len(), 2);

    let timeout = receiver
        .wait_for_count("later", 3, Duration::from_millis(50))
        .await
        .expect_err("only two deliveries were sent");
    assert_eq!(timeout.deliveries.len(), 2);
    assert!(timeout.to_string().contains("`later`"), "{timeout}");
    Ok(())
}

#[tokio::test]
async fn only_post_to_a_named_hook_is_served() -> TestResult {
    let (receiver, running) = spawn_receiver().await?;
    let client = reqwest::Client::new();
    let get = client.get(format!("{}/hooks/acme", running.base_url)).send().await?;
    assert_eq!(get.status().as_u16(), 405);
    let root = client.post(format!("{}/hooks", running.base_url)).send().await?;
    assert_eq!(root.status().as_u16(), 404);
    assert_eq!(receiver.total_received(), 0);
    Ok(())
}
