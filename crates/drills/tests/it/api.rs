//! The Toxiproxy-style control API over HTTP: the lifecycle of a proxy and its toxics,
//! and the 4xx answers to bad input.

use std::time::Duration;

use holdfast_drills::proxy::ControlApi;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{TestResult, echo, echo_server, http_client, within};

const LIMIT: Duration = Duration::from_secs(20);

/// The API on a free port; it stops serving when the returned sender is dropped.
async fn spawn_api() -> Result<(String, ControlApi, tokio::sync::oneshot::Sender<()>), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let api = ControlApi::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = api.clone();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((base, api, stop))
}

async fn call(client: &Client, method: &str, url: &str, body: Option<Value>) -> reqwest::Result<(StatusCode, Value)> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[tokio::test]
async fn proxies_and_toxics_round_trip_through_the_api() -> TestResult {
    within(LIMIT, async {
        let (base, _api, _stop) = spawn_api().await?;
        let upstream = echo_server().await?;
        let client = http_client(Duration::from_secs(5))?;

        let body = json!({"name": "echo", "listen": "127.0.0.1:0", "upstream": upstream.addr.to_string()});
        let (status, created) = call(&client, "POST", &format!("{base}/proxies"), Some(body)).await?;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["enabled"], true);
        assert_eq!(created["toxics"], json!([]));
        let listen = created["listen"].as_str().ok_or("no listen address")?.to_owned();
        assert!(!listen.ends_with(":0"), "the real port is reported: {listen}");

        let toxic = json!({"type": "latency", "attributes": {"latency": 200, "jitter": 0}});
        let (status, added) = call(&client, "POST", &format!("{base}/proxies/echo/toxics"), Some(toxic)).await?;
        assert_eq!(status, StatusCode::OK, "{added}");
        let expected = json!({"name": "latency_downstream", "type": "latency", "stream": "downstream",
            "toxicity": 1.0, "attributes": {"latency": 200, "jitter": 0}});
        assert_eq!(added, expected);
        let (_, listed) = call(&client, "GET", &format!("{base}/proxies/echo/toxics"), None).await?;
        assert_eq!(listed, json!([expected]));
        let (_, all) = call(&client, "GET", &format!("{base}/proxies"), None).await?;
        assert_eq!(all["echo"]["toxics"], json!([expected]));

        let mut stream = TcpStream::connect(&listen).await?;
        let (_, took) = echo(&mut stream, b"ping").await?;
        assert!(took >= Duration::from_millis(200), "{took:?}");

        let update = json!({"attributes": {"latency": 20}});
        let url = format!("{base}/proxies/echo/toxics/latency_downstream");
        let (status, updated) = call(&client, "POST", &url, Some(update)).await?;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert_eq!(updated["attributes"], json!({"latency": 20, "jitter": 0}));
        let (status, _) = call(&client, "DELETE", &url, None).await?;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let (status, disabled) = call(
            &client,
            "POST",
            &format!("{base}/proxies/echo"),
            Some(json!({"enabled": false})),
        )
        .await?;
        assert_eq!(status, StatusCode::OK, "{disabled}");
        assert_eq!(disabled["enabled"], false);
        assert!(TcpStream::connect(&listen).await.is_err());
        let toxic = json!({"name": "hang", "type": "timeout"});
        call(&client, "POST", &format!("{base}/proxies/echo/toxics"), Some(toxic)).await?;

        let (status, _) = call(&client, "POST", &format!("{base}/reset"), None).await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, shown) = call(&client, "GET", &format!("{base}/proxies/echo"), None).await?;
        assert_eq!((&shown["enabled"], &shown["toxics"]), (&json!(true), &json!([])));
        let mut stream = TcpStream::connect(&listen).await?;
        assert_eq!(echo(&mut stream, b"back").await?.0, b"back");
        let (_, stats) = call(&client, "GET", &format!("{base}/proxies/echo/stats"), None).await?;
        assert_eq!(stats["accepted"], 2);

        let (status, _) = call(&client, "DELETE", &format!("{base}/proxies/echo"), None).await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&client, "GET", &format!("{base}/proxies/echo"), None).await?;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(TcpStream::connect(&listen).await.is_err());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx() -> TestResult {
    within(LIMIT, async {
        let (base, api, _stop) = spawn_api().await?;
        let upstream = echo_server().await?;
        let client = http_client(Duration::from_secs(5))?;
        let body = json!({"name": "echo", "upstream": upstream.addr.to_string()});
        let (status, created) = call(&client, "POST", &format!("{base}/proxies"), Some(body.clone())).await?;
        assert_eq!(status, StatusCode::CREATED);
        let taken = created["listen"].as_str().ok_or("no listen address")?.to_owned();
        let toxics = format!("{base}/proxies/echo/toxics");
        let cases = [
            ("GET", format!("{base}/proxies/nope"), None, StatusCode::NOT_FOUND),
            ("DELETE", format!("{base}/proxies/nope"), None, StatusCode::NOT_FOUND),
            (
                "POST",
                format!("{base}/proxies/nope/toxics"),
                Some(json!({"type": "latency"})),
                StatusCode::NOT_FOUND,
            ),
            ("DELETE", format!("{toxics}/nope"), None, StatusCode::NOT_FOUND),
            (
                "POST",
                format!("{toxics}/nope"),
                Some(json!({"toxicity": 0.5})),
                StatusCode::NOT_FOUND,
            ),
            ("POST", format!("{base}/proxies"), Some(body), StatusCode::CONFLICT),
            (
                "POST",
                format!("{base}/proxies"),
                Some(json!({"name": "twin", "listen": taken, "upstream": upstream.addr.to_string()})),
                StatusCode::CONFLICT,
            ),
            (
                "POST",
                format!("{base}/proxies"),
                Some(json!({"name": "x"})),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                format!("{base}/proxies"),
                Some(json!({"name": "x", "listen": "nowhere", "upstream": "127.0.0.1:1"})),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                toxics.clone(),
                Some(json!({"type": "slow_close"})),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                toxics.clone(),
                Some(json!({"type": "latency", "attributes": {"latency_ms": 5}})),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                toxics.clone(),
                Some(json!({"type": "latency", "toxicity": 2})),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                toxics.clone(),
                Some(json!({"type": "bandwidth", "attributes": {"rate": 0}})),
                StatusCode::BAD_REQUEST,
            ),
            ("POST", toxics.clone(), Some(json!("latency")), StatusCode::BAD_REQUEST),
            (
                "POST",
                format!("{base}/proxies/echo"),
                Some(json!({"listen": "127.0.0.1:1"})),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                format!("{base}/proxies/echo"),
                Some(json!({"enabled": "no"})),
                StatusCode::BAD_REQUEST,
            ),
            ("GET", format!("{base}/nothing/here"), None, StatusCode::NOT_FOUND),
        ];
        for (method, url, body, expected) in cases {
            let (status, error) = call(&client, method, &url, body.clone()).await?;
            assert_eq!(status, expected, "{method} {url} {body:?}: {error}");
            assert_eq!(error["status"], expected.as_u16(), "{method} {url}: {error}");
            assert!(error["error"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
        }

        // A body that is not JSON at all.
        let response = client.post(&toxics).body("{not json").send().await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);

        // A second toxic of the same name is a conflict, as in Toxiproxy.
        let toxic = json!({"type": "latency", "attributes": {"latency": 1}});
        assert_eq!(
            call(&client, "POST", &toxics, Some(toxic.clone())).await?.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&client, "POST", &toxics, Some(toxic)).await?.0,
            StatusCode::CONFLICT
        );
        // None of the refused requests left anything behind.
        let proxy = api.proxy("echo").await.ok_or("the proxy is gone")?;
        assert_eq!(proxy.toxics().len(), 1);
        assert!(api.proxy("twin").await.is_none() && api.proxy("x").await.is_none());
        Ok(())
    })
    .await
}
