//! `holdfast postmortem` against a running node's operational journal
//! (`GET /api/v1/ops/journal`), and its answers to a window it cannot use.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, holdfast};

const ADMIN_KEY: &str = "hf_postmortem_test_admin_key_0123456789";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_draft_from_a_running_nodes_journal_has_every_section() {
    let dir = std::env::temp_dir().join(format!("holdfast-postmortem-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let since = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let _node = Running(
        Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["serve", "--listen", &listen])
            .env(
                "HOLDFAST_DATABASE__URL",
                format!("sqlite://{}/holdfast.db", dir.display()),
            )
            .env("HOLDFAST_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("HOLDFAST_LOG__LEVEL", "warn")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let url = format!("http://{listen}");
    let mut ready = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(&listen).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "the node never listened");
    std::thread::sleep(Duration::from_millis(500));
    let output = holdfast(
        &["postmortem", "--url", &url, "--since", &since],
        &[("HOLDFAST_ADMIN_KEY", ADMIN_KEY)],
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for section in [
        "# Postmortem",
        "## Summary",
        "## Customer impact",
        "## Timeline (UTC)",
        "**Detection gap:**",
        "## Root cause",
        "## Action items",
    ] {
        assert!(text.contains(section), "no {section} in\n{text}");
    }
    assert!(text.contains("operational journal recorded"), "{text}");

    let wrong_key = holdfast(
        &[
            "postmortem",
            "--url",
            &url,
            "--since",
            &since,
            "--api-key",
            "hf_not_a_key_of_this_node_000000",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_ne!(wrong_key.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&wrong_key.stderr).contains("HTTP 401"),
        "{wrong_key:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_window_it_cannot_use_is_named() {
    let bad = holdfast(
        &["postmortem", "--since", "yesterday", "--url", "http://127.0.0.1:9"],
        &[],
        Duration::from_secs(10),
    );
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--since yesterday"),
        "{bad:?}"
    );
    let none = holdfast(&["postmortem"], &[], Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("--drill-report"),
        "{none:?}"
    );
}
