//! `holdfast queue`: stats, dead letters and redrive from a shell, on a real
//! database with a job that really went to the dead-letter state.

use std::time::Duration;

use chrono::Utc;
use holdfast_store::{ConnectOptions, NewJob, PoolOptions, Pools};

use crate::holdfast;

fn run(args: &[&str], url: &str) -> (bool, String, String) {
    let output = holdfast(args, &[("HOLDFAST_DATABASE__URL", url)], Duration::from_secs(30));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven() {
    let dir = std::env::temp_dir().join(format!("holdfast-queue-cli-{}", uuid_suffix()));
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let pool = PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
    };
    let store = holdfast_store::connect(&ConnectOptions {
        url: url.clone(),
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        lock_timeout: Duration::from_secs(5),
        pgbouncer: holdfast_store::PgBouncer::Off,
        pools: Pools {
            read: pool,
            write: pool,
            worker: pool,
        },
    })
    .await
    .expect("store");
    store.migrate().await.expect("migrate");
    let now = Utc::now();
    let job = NewJob::new("fulfillment", "ord_1", serde_json::json!({"order_id": "ord_1"}), now).max_receives(1);
    store.queue().enqueue(&job).await.expect("enqueue");
    let claimed = store
        .queue()
        .claim_batch("fulfillment", "test", 1, now)
        .await
        .expect("claim");
    store
        .queue()
        .fail(&claimed[0].job.id, &claimed[0].lease_token, "warehouse said no", now)
        .await
        .expect("fail");

    let (ok, stdout, stderr) = run(&["queue", "stats", "--json"], &url);
    assert!(ok, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(stats["queues"][0]["queue"], "fulfillment", "{stdout}");
    assert_eq!(stats["queues"][0]["dead"], 1, "{stdout}");

    let (ok, stdout, stderr) = run(&["queue", "dlq", "list", "--queue", "fulfillment"], &url);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(job.id.as_str()) && stdout.contains("warehouse said no"),
        "{stdout}"
    );

    let (ok, _, stderr) = run(
        &["queue", "dlq", "redrive", "--queue", "fulfillment", "--job", "nope"],
        &url,
    );
    assert!(!ok && stderr.contains("--job \"nope\""), "{stderr}");
    let (ok, stdout, stderr) = run(
        &[
            "queue",
            "dlq",
            "redrive",
            "--queue",
            "fulfillment",
            "--job",
            job.id.as_str(),
        ],
        &url,
    );
    assert!(ok && stdout.contains("redrove 1 job(s)"), "{stdout}{stderr}");
    let (ok, stdout, _) = run(&["queue", "stats"], &url);
    assert!(ok);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("fulfillment"))
        .unwrap_or_default();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        columns.get(1..5),
        Some(&["1", "0", "0", "0"][..]),
        "ready again: {stdout}"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

fn uuid_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}
