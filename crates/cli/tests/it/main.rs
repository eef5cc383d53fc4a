//! Tests of the `holdfast` binary itself: start-up refuses bad
//! configuration loudly (a mistyped database host), the demo runs end to end, and a worker
//! killed with SIGKILL mid-job loses no work and repeats none.

// Test code may unwrap: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod demo;
mod drill;
mod drill_invariants;
mod drill_run;
mod kill;
mod kill_pgbouncer;
mod kill_renewal;
mod postmortem;
mod preflight;
mod queue;
mod reload;
mod roles;
mod served;
mod startup;

use std::process::Output;
use std::time::Duration;

/// Runs `holdfast ARGS` with `env` and a time limit.
pub fn holdfast(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"));
    command
        .args(args)
        .env_remove("HOLDFAST_DATABASE__URL")
        .env("HOLDFAST_LOG__LEVEL", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("holdfast starts");
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "holdfast {args:?} did not exit within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The test PostgreSQL server for a test that is not async: the shared
/// check (`HOLDFAST_TEST_PG_URL`, a connect timeout, the `CI=true` rule) on a
/// runtime of its own. Async tests call `holdfast_testkit::postgres_admin_url`.
pub fn postgres_url() -> Option<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the PostgreSQL check")
        .block_on(holdfast_testkit::postgres_admin_url())
}
