//! `holdfast drill run` for real: the shipped scenarios pass on SQLite and
//! PostgreSQL; each fails (exit 1, naming the gate or invariant) when its
//! protection is switched off with `--set`; Ctrl-C in the middle of a fault
//! heals it and leaves no process behind; and the invariant checker catches
//! an order deleted behind the service's back and a charge made twice.
//!
//! Drills measure latency, so they take a lock and run one at a time, also
//! across test processes. `bad-db-url` has no sabotaged variant: refusing to
//! start on a database it cannot reach is not something a setting turns off.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::holdfast;

/// Quick drills take 20–60 s each; the limit is for a machine under load.
const LIMIT: Duration = Duration::from_secs(420);
/// The scenarios whose gates hold today, per database. Left out:
/// `table-lock` on PostgreSQL, which breaches since checkout writes in two
/// transactions (see `docs/drills.md`). It stays shipped, so `drill run`
/// shows the breach.
const SQLITE_PASSING: [&str; 3] = ["inventory-hang", "partner-down", "payment-flaky"];
const POSTGRES_PASSING: [&str; 6] = [
    "inventory-hang",
    "partner-down",
    "payment-flaky",
    "bad-db-url",
    "latency-500ms",
    "pool-shrink",
];

/// One drill at a time across every test process on the machine.
struct DrillLock {
    _file: std::fs::File,
}

impl DrillLock {
    fn take() -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("holdfast-drill-tests.lock"))
            .expect("lock file");
        // SAFETY: flock on a file descriptor this value owns.
        let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock");
        Self { _file: file }
    }
}

fn report_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-drill-test-{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("report dir");
    dir
}

fn drill(report: &Path, args: &[&str]) -> Output {
    let _lock = DrillLock::take();
    let mut all = vec![
        "drill",
        "run",
        "--quick",
        "--report",
        report.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    holdfast(&all, &[], LIMIT)
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn report(dir: &Path, scenario: &str) -> Value {
    let path = dir.join(scenario).join("report.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("report.json parses")
}

/// Every scenario passed, and its report says so gate by gate.
fn assert_all_pass(dir: &Path, output: &Output, scenarios: &[&str]) {
    assert_eq!(output.status.code(), Some(0), "{}", text(output));
    for scenario in scenarios {
        let report = report(dir, scenario);
        assert_eq!(report["scenario"], *scenario);
        assert_eq!(report["verdict"], "pass", "{report:#}");
        let gates = report["gates"].as_array().expect("gates");
        assert!(gates.len() >= 4, "{report:#}");
        for gate in gates {
            assert!(gate["name"].is_string() && gate["threshold"].is_number(), "{gate}");
            assert_eq!(gate["ok"], true, "{gate}");
        }
        let invariants = report["invariants"].as_array().expect("invariants");
        assert!(invariants.len() >= 4, "{report:#}");
        assert!(invariants.iter().all(|i| i["ok"] == true), "{report:#}");
        let phases: Vec<&str> = report["phases"]
            .as_array()
            .expect("phases")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(phases, ["baseline", "fault", "heal", "recovery"]);
        let markdown = std::fs::read_to_string(dir.join(scenario).join("report.md")).expect("report.md");
        assert!(markdown.contains("## Gates") && markdown.contains("PASS"), "{markdown}");
        assert_plot_shades_each_fault(&dir.join(scenario), &report);
        let postmortem = std::fs::read_to_string(dir.join(scenario).join("postmortem.md")).expect("postmortem.md");
        for section in [
            "## Summary",
            "## Customer impact",
            "## Timeline",
            "**Detection gap:**",
            "## Root cause",
            "## Action items",
        ] {
            assert!(postmortem.contains(section), "no {section} in\n{postmortem}");
        }
    }
    let summary = std::fs::read_to_string(dir.join("summary.md")).expect("summary.md");
    assert!(scenarios.iter().all(|s| summary.contains(s)), "{summary}");
}

/// `plot.svg` is an SVG document with one shaded band per fault (the fault
/// colour is used for nothing else), and its panels' titles.
fn assert_plot_shades_each_fault(dir: &Path, report: &Value) {
    let svg = std::fs::read_to_string(dir.join("plot.svg")).expect("plot.svg");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "not an SVG document"
    );
    let faults = report["faults"].as_array().expect("faults").len();
    assert!(faults >= 1, "{report:#}");
    let shaded = svg
        .lines()
        .filter(|line| line.contains("<rect") && line.contains(r##"fill="#E6786E""##))
        .count();
    assert_eq!(shaded, faults, "one shaded window per fault");
    for title in [
        "latency",
        "error rate",
        "checkouts per second",
        "circuit breakers",
        "p99",
        "p50",
    ] {
        assert!(svg.contains(title), "no {title} in the plot");
    }
}

#[test]
fn the_shipped_scenarios_pass_on_sqlite() {
    let dir = report_dir("sqlite");
    let output = drill(&dir, &SQLITE_PASSING);
    assert_all_pass(&dir, &output, &SQLITE_PASSING);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_scenarios_pass_on_postgres() {
    let Some(url) = crate::postgres_url() else { return };
    let dir = report_dir("postgres");
    let mut args = POSTGRES_PASSING.to_vec();
    args.extend(["--database-url", url.as_str()]);
    let output = drill(&dir, &args);
    assert_all_pass(&dir, &output, &POSTGRES_PASSING);
    assert_eq!(report(&dir, "inventory-hang")["backend"], "postgres");
    // The postmortem drafted again from the saved journals, as HTML: the
    // service's own breaker transitions are in its timeline.
    let drill_dir = dir.join("inventory-hang");
    let html = holdfast(
        &[
            "postmortem",
            "--drill-report",
            drill_dir.to_str().expect("utf-8"),
            "--format",
            "html",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(html.status.code(), Some(0), "{}", text(&html));
    let html = String::from_utf8_lossy(&html.stdout);
    assert!(html.starts_with("<!doctype html>"), "{html}");
    for section in [
        "Customer impact",
        "Timeline",
        "Detection gap",
        "Root cause",
        "Action items",
    ] {
        assert!(html.contains(section), "no {section} in\n{html}");
    }
    assert!(html.contains("inventory breaker closed → open"), "{html}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `scenario` with `set` and checks that it fails on `failing`, a gate or
/// an invariant, by name, in the output and in the report.
fn sabotaged(scenario: &str, set: &str, failing: &str) {
    sabotaged_on(scenario, set, failing, &[]);
}

fn sabotaged_on(scenario: &str, set: &str, failing: &str, more: &[&str]) {
    let dir = report_dir(scenario);
    let mut args = vec![scenario, "--set", set];
    args.extend_from_slice(more);
    let output = drill(&dir, &args);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(failing),
        "{}",
        text(&output)
    );
    let report = report(&dir, scenario);
    assert_eq!(report["verdict"], "fail");
    let failed: Vec<&str> = report["gates"]
        .as_array()
        .into_iter()
        .chain(report["invariants"].as_array())
        .flatten()
        .filter(|check| check["ok"] == false)
        .filter_map(|check| check["name"].as_str())
        .collect();
    assert!(failed.contains(&failing), "{failed:?}\n{report:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inventory_hang_fails_without_its_deadline() {
    sabotaged(
        "inventory-hang",
        "dependencies.inventory.deadline_ms=60000",
        "checkout p99 while inventory hangs",
    );
}

#[test]
fn payment_flaky_fails_without_its_deadline() {
    sabotaged(
        "payment-flaky",
        "dependencies.payments.deadline_ms=60000",
        "a lost answer costs about the payments deadline",
    );
}

#[test]
fn table_lock_fails_without_its_lock_timeout() {
    let Some(url) = crate::postgres_url() else { return };
    sabotaged_on(
        "table-lock",
        "database.lock_timeout_ms=60000",
        "checkout keeps taking orders while the table is locked",
        &["--database-url", &url],
    );
}

#[test]
fn a_scenario_that_needs_postgres_is_undecided_on_sqlite() {
    let dir = report_dir("needs-postgres");
    let output = drill(&dir, &["table-lock"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("--database-url"),
        "{}",
        text(&output)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_set_key_is_named_and_nothing_runs() {
    let dir = report_dir("bad-set");
    let output = drill(&dir, &["partner-down", "--set", "dependencies.inventory.deadline=5"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let report = report(&dir, "partner-down");
    assert_eq!(report["verdict"], "undecided");
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("dependencies.inventory.deadline"),
        "{report:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn partner_down_fails_when_deliveries_give_up() {
    sabotaged(
        "partner-down",
        "queues.webhooks.max_receives=2",
        "webhooks_delivered_in_order",
    );
}

/// The pids of every process the drill started, from its journal.
fn started_pids(journal: &str) -> Vec<i32> {
    journal
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["event"] == "process" && entry["action"] == "started")
        .filter_map(|entry| {
            let detail = entry["detail"].as_str()?;
            let pid = detail.split("(pid ").nth(1)?.trim_end_matches(')');
            pid.parse().ok()
        })
        .collect()
}

#[test]
fn ctrl_c_in_the_middle_of_a_fault_heals_it_and_stops_every_process() {
    let _lock = DrillLock::take();
    let dir = report_dir("sigint");
    // Not quick: the fault lasts 25 s, so the interrupt lands inside it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args([
            "drill",
            "run",
            "inventory-hang",
            "--report",
            dir.to_str().expect("utf-8"),
        ])
        .env_remove("HOLDFAST_DATABASE__URL")
        // Files, not pipes: nothing reads a pipe until the drill exits, and a
        // full one would block the drill's logging and so its exit.
        .stdout(Stdio::from(
            std::fs::File::create(dir.join("stdout.log")).expect("stdout file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr.log")).expect("stderr file"),
        ))
        .spawn()
        .expect("holdfast drill run starts");
    let journal_path = dir.join("inventory-hang").join("journal.jsonl");
    let started = Instant::now();
    loop {
        let journal = std::fs::read_to_string(&journal_path).unwrap_or_default();
        if journal.contains("\"event\":\"inject\"") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the fault never began:\n{journal}"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the drill ended before its fault"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let interrupted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            interrupted.elapsed() < Duration::from_secs(60),
            "the drill did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = ["stdout.log", "stderr.log"]
        .map(|name| std::fs::read_to_string(dir.join(name)).unwrap_or_default())
        .join("\n");
    assert_eq!(status.code(), Some(2), "{output}");
    let journal = std::fs::read_to_string(&journal_path).expect("journal");
    let entries: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).expect("journal line"))
        .collect();
    let heal = entries
        .iter()
        .find(|e| e["event"] == "heal")
        .unwrap_or_else(|| panic!("no heal in the journal:\n{journal}"));
    assert_eq!(heal["ok"], true, "{heal}");
    // The proxy's own record: the toxic was removed by the heal, not left
    // until the proxy stopped or its time limit ran out.
    let effect = entries.iter().find(|e| e["event"] == "effect").expect("effect");
    assert_eq!(effect["detail"][0]["ended"], "removed", "{effect}");
    assert!(effect["affected"].as_u64().unwrap_or(0) > 0, "{effect}");
    assert!(
        journal.contains("cleanup: every fault healed, every proxy clean, every process stopped"),
        "{journal}"
    );
    let verdict = entries.iter().find(|e| e["event"] == "verdict").expect("verdict");
    assert_eq!(verdict["verdict"], "undecided");
    assert!(
        verdict["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("interrupted during the fault phase")
    );
    let pids = started_pids(&journal);
    assert_eq!(pids.len(), 2, "an inventory node and an order node: {pids:?}");
    for pid in pids {
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "process {pid} is still running after the drill ended");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
