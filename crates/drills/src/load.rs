//! A small HTTP driver for Holdfast's API and the latency bookkeeping the
//! demo and benchmarks share.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// One API client: a connection pool and a key.
#[derive(Clone)]
pub struct Driver {
    http: reqwest::Client,
    base_url: String,
    key: String,
}

/// An answer: status, parsed body (or `Null`) and how long it took.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub raw: String,
    pub elapsed: Duration,
    /// The `Retry-After` header in seconds, when sent.
    pub retry_after: Option<Duration>,
}

impl Driver {
    pub fn new(base_url: &str, key: &str) -> anyhow::Result<Self> {
        Self::with_timeout(base_url, key, Duration::from_secs(30))
    }

    /// A driver whose requests give up after `timeout`.
    pub fn with_timeout(base_url: &str, key: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.to_owned(),
            key: key.to_owned(),
        })
    }

    pub fn with_key(&self, key: &str) -> Self {
        Self {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            key: key.to_owned(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let started = Instant::now();
        let response = request.bearer_auth(&self.key).send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok())
            .map(Duration::from_secs);
        let raw = response.text().await?;
        let elapsed = started.elapsed();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            raw,
            elapsed,
            retry_after,
        })
    }

    pub async fn post(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> anyhow::Result<Answer> {
        let mut request = self.http.post(format!("{}{path}", self.base_url)).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    /// Sends raw bytes as JSON, for bad-input checks.
    pub async fn post_raw(&self, path: &str, body: &str, idempotency_key: Option<&str>) -> anyhow::Result<Answer> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(self.http.put(format!("{}{path}", self.base_url)).json(body))
            .await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(self.http.get(format!("{}{path}", self.base_url))).await
    }

    pub async fn create_product(&self, sku: &str, price: i64, on_hand: i64) -> anyhow::Result<()> {
        let body = json!({"sku": sku, "name": format!("Product {sku}"), "price": {"amount": price, "currency": "USD"}, "on_hand": on_hand});
        let answer = self.post("/api/v1/products", &body, None).await?;
        anyhow::ensure!(
            answer.status == 201,
            "creating product {sku}: HTTP {} {}",
            answer.status,
            answer.raw
        );
        Ok(())
    }

    /// A new storefront key, as a shop's web front would hold.
    pub async fn storefront_key(&self) -> anyhow::Result<String> {
        let answer = self
            .post(
                "/api/v1/api-keys",
                &json!({"scope": "storefront", "name": "load driver"}),
                None,
            )
            .await?;
        anyhow::ensure!(
            answer.status == 201,
            "creating a storefront key: HTTP {} {}",
            answer.status,
            answer.raw
        );
        answer.body["key"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no key in {}", answer.raw))
    }
}

/// A checkout body for `items` of (sku, qty).
pub fn order_body(items: &[(String, u32)], email: &str, payment_method: &str) -> Value {
    json!({
        "items": items.iter().map(|(sku, qty)| json!({"sku": sku, "qty": qty})).collect::<Vec<_>>(),
        "customer": {"email": email, "name": "Load Shopper"},
        "shipping_address": {"line1": "1 Test Street", "city": "Portland", "state": "OR", "postal_code": "97201", "country": "US"},
        "payment_method": payment_method,
    })
}

/// Latencies in microseconds, up to a minute.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    #[allow(clippy::expect_used, reason = "the bounds are constants that hdrhistogram accepts")]
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid"))
    }
}

impl Latencies {
    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 60_000_000);
        let _ = self.0.record(micros);
    }

    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }
}
