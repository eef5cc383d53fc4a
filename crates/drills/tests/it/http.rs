//! The proxy in front of a real HTTP server, driven by a pooling HTTP client the way
//! Holdfast calls its dependencies: hangs, latency and bandwidth on live keep-alive
//! connections.

use std::time::{Duration, Instant};

use holdfast_drills::proxy::Toxic;

use crate::support::{BIG_BYTES, TestResult, http_client, http_server, proxy_to, within};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_hang_times_out_callers_and_removing_it_lets_new_requests_through() -> TestResult {
    within(LIMIT, async {
        let upstream = http_server().await?;
        let proxy = proxy_to(&upstream).await?;
        let url = format!("http://{}/hello", proxy.local_addr());
        proxy.add_toxic(Toxic::timeout(0))?;

        let started = Instant::now();
        let hung = http_client(Duration::from_millis(300))?.get(&url).send().await;
        assert!(matches!(&hung, Err(e) if e.is_timeout()), "{hung:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));

        proxy.remove_toxic("timeout_downstream")?;
        let answer = http_client(Duration::from_secs(5))?.get(&url).send().await?;
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await?, "hello");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_hang_reaches_an_open_keep_alive_connection() -> TestResult {
    within(LIMIT, async {
        let upstream = http_server().await?;
        let proxy = proxy_to(&upstream).await?;
        let url = format!("http://{}/hello", proxy.local_addr());
        let client = http_client(Duration::from_millis(300))?;
        assert_eq!(client.get(&url).send().await?.text().await?, "hello");
        assert_eq!(proxy.stats().accepted, 1);

        proxy.add_toxic(Toxic::timeout(0))?;
        let hung = client.get(&url).send().await;
        assert!(matches!(&hung, Err(e) if e.is_timeout()), "{hung:?}");
        // No new connection was made: the pooled one is the one that hung.
        assert_eq!(proxy.stats().accepted, 1);

        proxy.remove_toxic("timeout_downstream")?;
        assert_eq!(client.get(&url).send().await?.text().await?, "hello");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn latency_slows_each_request_on_a_pooled_connection() -> TestResult {
    within(LIMIT, async {
        let upstream = http_server().await?;
        let proxy = proxy_to(&upstream).await?;
        let url = format!("http://{}/hello", proxy.local_addr());
        let client = http_client(Duration::from_secs(5))?;
        client.get(&url).send().await?.text().await?;

        proxy.add_toxic(Toxic::latency(200, 0))?;
        for _ in 0..2 {
            let started = Instant::now();
            assert_eq!(client.get(&url).send().await?.text().await?, "hello");
            assert!(
                started.elapsed() >= Duration::from_millis(200),
                "{:?}",
                started.elapsed()
            );
        }
        assert_eq!(proxy.stats().accepted, 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bandwidth_slows_a_200_kb_transfer() -> TestResult {
    within(LIMIT, async {
        let upstream = http_server().await?;
        let proxy = proxy_to(&upstream).await?;
        let url = format!("http://{}/big", proxy.local_addr());
        let client = http_client(Duration::from_secs(10))?;
        proxy.add_toxic(Toxic::bandwidth(200))?;
        let started = Instant::now();
        let body = client.get(&url).send().await?.bytes().await?;
        let took = started.elapsed();
        assert_eq!(body.len(), BIG_BYTES);
        // 200 KB at 200 KB/s: the first tenth goes at once, the other nine 100 ms apart.
        assert!(took >= Duration::from_millis(800), "{took:?}");
        Ok(())
    })
    .await
}
