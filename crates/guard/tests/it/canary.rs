//! Canary gate against real `/metrics` pages served over HTTP from inside the
//! test.

use holdfast_guard::canary::{self, GateOptions};
use holdfast_guard::cli::CanaryGateArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `body` as `/metrics` on 127.0.0.1 until the test ends.
async fn serve_metrics(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a port");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = request.starts_with(b"GET /metrics ");
                let (status, body) = if ok {
                    ("200 OK", body)
                } else {
                    ("404 Not Found", String::new())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A `/metrics` page in the service's format: pool gauges, request counters
/// and a latency histogram with `fast` of 100 requests under 50 ms.
fn metrics(in_use: u32, max: u32, requests: u32, errors: u32, slow_le: &str) -> String {
    let ok = requests - errors;
    format!(
        "# HELP holdfast_db_pool_connections_in_use Connections checked out.\n\
         # TYPE holdfast_db_pool_connections_in_use gauge\n\
         holdfast_db_pool_connections_in_use{{pool=\"read\"}} 0\n\
         holdfast_db_pool_connections_in_use{{pool=\"write\"}} {in_use}\n\
         # TYPE holdfast_db_pool_connections_max gauge\n\
         holdfast_db_pool_connections_max{{pool=\"read\"}} 20\n\
         holdfast_db_pool_connections_max{{pool=\"write\"}} {max}\n\
         # TYPE holdfast_http_requests_total counter\n\
         holdfast_http_requests_total{{route=\"/api/v1/orders\",status=\"201\"}} {ok}\n\
         holdfast_http_requests_total{{route=\"/api/v1/orders\",status=\"503\"}} {errors}\n\
         # TYPE holdfast_http_request_duration_seconds histogram\n\
         holdfast_http_request_duration_seconds_bucket{{route=\"/api/v1/orders\",le=\"0.05\"}} {}\n\
         holdfast_http_request_duration_seconds_bucket{{route=\"/api/v1/orders\",le=\"{slow_le}\"}} {requests}\n\
         holdfast_http_request_duration_seconds_bucket{{route=\"/api/v1/orders\",le=\"+Inf\"}} {requests}\n\
         holdfast_http_request_duration_seconds_sum{{route=\"/api/v1/orders\"}} 1.5\n\
         holdfast_http_request_duration_seconds_count{{route=\"/api/v1/orders\"}} {requests}\n",
        requests * 95 / 100
    )
}

fn args(canary: String, baseline: String) -> CanaryGateArgs {
    CanaryGateArgs {
        canary,
        baseline,
        traffic_share: 0.05,
        max_pool_utilisation: 0.7,
        max_error_rate_ratio: 2.0,
        max_p99_ratio: 1.5,
    }
}

/// Scrapes both servers, renders the checks, and runs the CLI entry point.
async fn check(canary_body: String, baseline_body: String) -> (String, i32) {
    let canary_url = serve_metrics(canary_body).await;
    let baseline_url = serve_metrics(baseline_body).await;
    let client = reqwest::Client::new();
    let c = canary::scrape(&client, &canary_url).await.expect("scraping canary");
    let b = canary::scrape(&client, &baseline_url).await.expect("scraping baseline");
    let a = args(canary_url.clone(), baseline_url.clone());
    let options = GateOptions {
        canary: a.canary.clone(),
        baseline: a.baseline.clone(),
        traffic_share: a.traffic_share,
        max_pool_utilisation: a.max_pool_utilisation,
        max_error_rate_ratio: a.max_error_rate_ratio,
        max_p99_ratio: a.max_p99_ratio,
    };
    let rendered = canary::render(&canary::evaluate(&options, &c, &b));
    let code = a.run().await.expect("canary gate runs");
    (format!("exit {code}\n{rendered}"), code)
}

#[tokio::test]
async fn canary_at_15_of_20_on_5_percent_is_blocked() {
    let (out, code) = check(metrics(15, 20, 1000, 1, "0.1"), metrics(40, 200, 20000, 20, "0.1")).await;
    assert_eq!(code, 1);
    assert!(out.contains("BLOCK pool utilisation"), "{out}");
    assert!(out.contains("1500.0% at full traffic"), "{out}");
    insta::assert_snapshot!(out);
}

#[tokio::test]
async fn healthy_canary_passes() {
    let (out, code) = check(metrics(1, 200, 1000, 1, "0.1"), metrics(40, 200, 20000, 20, "0.1")).await;
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!(out);
}

#[tokio::test]
async fn error_rate_and_latency_regressions_block() {
    let (out, code) = check(metrics(0, 200, 1000, 50, "0.5"), metrics(40, 200, 20000, 20, "0.1")).await;
    assert_eq!(code, 1);
    assert!(out.contains("BLOCK error rate"), "{out}");
    assert!(out.contains("BLOCK p99 latency"), "{out}");
    insta::assert_snapshot!(out);
}

#[tokio::test]
async fn unreachable_canary_cannot_be_promoted() {
    let baseline = serve_metrics(metrics(40, 200, 20000, 20, "0.1")).await;
    // Bind and drop a listener to get a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let code = args(format!("http://127.0.0.1:{port}"), baseline)
        .run()
        .await
        .expect("runs");
    assert_eq!(code, 2);
}
