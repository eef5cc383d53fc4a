//! The proxy over raw TCP, against an echo server: bytes, latency, timeouts, resets,
//! down and back up.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use holdfast_drills::proxy::{ProxyError, Stream, Toxic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestResult, connect, echo, echo_server, proxy_to, within};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn bytes_pass_unchanged_both_ways() -> TestResult {
    within(LIMIT, async {
        let upstream = echo_server().await?;
        let proxy = proxy_to(&upstream).await?;
        let mut stream = connect(&proxy).await?;
        // Every byte value, in a pattern that a dropped or reordered chunk would break.
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let (back, _) = echo(&mut stream, &payload).await?;
        assert!(back == payload, "the echoed bytes differ from those sent");
        let stats = proxy.stats();
        assert_eq!(stats.accepted, 1);
        assert_eq!(stats.active, 1);
        assert_eq!(stats.bytes_upstream, payload.len() as u64);
        assert_eq!(stats.bytes_downstream, payload.len() as u64);
        // A half-close passes through: the echo server sees EOF and closes its side.
        stream.shutdown().await?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await?;
        assert!(rest.is_empty());
        proxy.stop().await;
        assert!(TcpStream::connect(proxy.local_addr()).await.is_err());
        assert!(matches!(proxy.set_enabled(true).await, Err(ProxyError::Stopped)));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn latency_delays_new_and_open_connections_by_at_least_its_setting() -> TestResult {
    within(LIMIT, async {
        let upstream = echo_server().await?;
        let proxy = proxy_to(&upstream).await?;
        let mut open = connect(&proxy).await?;
        echo(&mut open, b"warm").await?;

        proxy.add_toxic(Toxic::latency(250, 0))?;
        let (back, took) = echo(&mut open, b"ping").await?;
        assert_eq!(back, b"ping");
        assert!(took >= Duration::from_millis(250), "open connection: {took:?}");
        let mut fresh = connect(&proxy).await?;
        let (_, took) = echo(&mut fresh, b"ping").await?;
        assert!(took >= Duration::from_millis(250), "new connection: {took:?}");

        // Both directions add up; jitter never takes more than itself off.
        proxy.add_toxic(Toxic::latency(100, 50).on(Stream::Upstream))?;
        for _ in 0..3 {
            let (_, took) = echo(&mut fresh, b"ping").await?;
            assert!(took >= Duration::from_millis(300), "both directions: {took:?}");
        }
        proxy.remove_toxic("latency_downstream")?;
        proxy.remove_toxic("latency_upstream")?;
        assert!(proxy.toxics().is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_toxic_with_toxicity_zero_touches_no_connection() -> TestResult {
    within(LIMIT, async {
        let upstream = echo_server().await?;
        let proxy = proxy_to(&upstream).await?;
        proxy.add_toxic(Toxic::latency(5_000, 0).with_toxicity(0.0))?;
        let mut stream = connect(&proxy).await?;
        let (_, took) = echo(&mut stream, b"ping").await?;
        assert!(took < Duration::from_millis(2_500), "{took:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn timeout_with_a_duration_drops_the_bytes_then_closes() -> TestResult {
    within(LIMIT, async {
        let upstream = echo_server().await?;
        let proxy = proxy_to(&upstream).await?;
        proxy.add_toxic(Toxic::timeout(300))?;
        let started = Instant::now();
        let mut stream = connect(&proxy).await?;
        stream.write_all(b"anyone there?").await?;
        let mut received = Vec::new();
        // EOF or a reset both mean closed; what matters is that nothing came back.
        let _ = stream.read_to_end(&mut received).await;
        assert!(received.is_empty(), "{received:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        Ok(())
    })
    .await
}

/// Whether the client saw a TCP reset: on the write if it came after the RST, else on
/// the read.
async fn saw_reset(stream: &mut TcpStream) -> bool {
    if let Err(error) = stream.write_all(b"ping").await {
        return error.kind() == ErrorKind::ConnectionReset;
    }
    let mut buf = [0; 64];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(error) => return error.kind() == ErrorKind::ConnectionReset,
        }
    }
}

#[tokio::test]
async fn reset_peer_resets_the_client() -> TestResult {
    within(LIMIT, async {
        let upstream = echo_server().await?;
        let proxy = proxy_to(&upstream).await?;
        proxy.add_toxic(Toxic::reset_peer(0))?;
        let mut stream = connect(&proxy).await?;
        assert!(saw_reset(&mut stream).await, "expected a connection reset");

        // With a delay, an open connection works until the delay has passed.
        proxy.remove_toxic("reset_peer_downstream")?;
        let mut open = connect(&proxy).await?;
        echo(&mut open, b"fine").await?;
        let added = Instant::now();
        proxy.add_toxic(Toxic::reset_peer(300))?;
        echo(&mut open, b"still fine").await?;
        let mut buf = [0; 16];
        let read = open.read(&mut buf).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "{read:?}"
        );
        assert!(added.elapsed() >= Duration::from_millis(300), "{:?}", added.elapsed());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn down_refuses_and_cuts_and_up_restores() -> TestResult {
    within(LIMIT, async {
        let upstream = echo_server().await?;
        let proxy = proxy_to(&upstream).await?;
        let mut open = connect(&proxy).await?;
        echo(&mut open, b"before").await?;

        proxy.set_enabled(false).await?;
        assert!(!proxy.is_enabled());
        let refused = TcpStream::connect(proxy.local_addr()).await;
        assert!(
            matches!(&refused, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
            "{refused:?}"
        );
        let mut buf = [0; 16];
        let cut = open.read(&mut buf).await;
        assert!(
            matches!(cut, Ok(0) | Err(_)),
            "the open connection was not cut: {cut:?}"
        );

        proxy.set_enabled(true).await?;
        let mut again = connect(&proxy).await?;
        let (back, _) = echo(&mut again, b"after").await?;
        assert_eq!(back, b"after");
        assert_eq!(proxy.stats().accepted, 2);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_client_and_is_counted() -> TestResult {
    within(LIMIT, async {
        // Bind then drop, for a local port that refuses connections.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let proxy = holdfast_drills::proxy::Proxy::start("127.0.0.1:0".parse()?, closed.to_string()).await?;
        let mut stream = connect(&proxy).await?;
        let mut buf = [0; 16];
        let read = stream.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // The counters change before the proxy lets go of the client, so they are final.
        assert_eq!(proxy.stats().upstream_failures, 1);
        assert_eq!(proxy.stats().active, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn absurd_durations_mean_forever() -> TestResult {
    within(LIMIT, async {
        let upstream = echo_server().await?;
        let proxy = proxy_to(&upstream).await?;
        proxy.add_toxic(Toxic::timeout(u64::MAX))?;
        proxy.add_toxic(Toxic::reset_peer(u64::MAX))?;
        proxy.add_toxic(Toxic::latency(u64::MAX, u64::MAX).on(Stream::Upstream))?;
        let mut stream = connect(&proxy).await?;
        stream.write_all(b"ping").await?;
        let mut buf = [0; 4];
        let silent = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await;
        assert!(silent.is_err(), "expected silence, got {silent:?}");
        proxy.remove_all_toxics();
        let mut fresh = connect(&proxy).await?;
        assert_eq!(echo(&mut fresh, b"pong").await?.0, b"pong");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_fault_with_a_time_limit_heals_itself_and_the_record_says_what_it_did() -> TestResult {
    within(LIMIT, async {
        let upstream = echo_server().await?;
        let proxy = proxy_to(&upstream).await?;
        let mut stream = connect(&proxy).await?;
        proxy.add_toxic_for(Toxic::latency(150, 0).named("slow"), Duration::from_millis(600))?;
        let (back, took) = echo(&mut stream, b"slow while the toxic is on").await?;
        assert_eq!(back, b"slow while the toxic is on");
        assert!(took >= Duration::from_millis(150), "{took:?}");
        // Nobody removes it: the proxy does, when its limit runs out.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(proxy.is_clean(), "{:?}", proxy.toxics());
        let (_, took) = echo(&mut stream, b"fast again").await?;
        assert!(took < Duration::from_millis(150), "{took:?}");

        proxy.disable_for(Duration::from_millis(300)).await?;
        assert!(TcpStream::connect(proxy.local_addr()).await.is_err());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(proxy.is_clean());
        let mut again = connect(&proxy).await?;
        assert_eq!(echo(&mut again, b"up").await?.0, b"up");

        let record = proxy.record();
        assert_eq!(record.len(), 2, "{record:?}");
        let (slow, down) = (&record[0], &record[1]);
        assert_eq!((slow.name.as_str(), slow.kind.as_str()), ("slow", "latency"));
        assert_eq!(slow.ended, Some(holdfast_drills::proxy::Ended::TimeLimit));
        assert_eq!(slow.time_limit_ms, Some(600));
        // The one connection's downstream direction, and the bytes it delayed.
        assert_eq!(slow.connections, 1, "{slow:?}");
        assert!(slow.bytes >= b"slow while the toxic is on".len() as u64, "{slow:?}");
        assert_eq!(down.kind, "down");
        assert_eq!(down.connections, 1, "the open connection was cut: {down:?}");
        assert_eq!(down.ended, Some(holdfast_drills::proxy::Ended::TimeLimit));
        Ok(())
    })
    .await
}
