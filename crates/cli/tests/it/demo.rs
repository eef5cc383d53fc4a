//! The README's first command works and its invariants hold, webhooks to
//! the partner included.

use std::time::Duration;

use crate::holdfast;

#[test]
fn the_demo_runs_and_its_invariants_hold() {
    let output = holdfast(
        &["demo", "--orders", "300", "--shoppers", "8", "--subscribers", "40"],
        &[],
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("All invariants held."), "{stdout}");
    // Paid orders go on through fulfillment: the demo waits until they ship.
    assert!(stdout.contains("shipped"), "{stdout}");
    let received = figure(&stdout, "deliveries received");
    assert!(received > 0, "the partner received no webhook:\n{stdout}");
    assert_eq!(figure(&stdout, "deliveries verified"), received, "{stdout}");
    assert_eq!(figure(&stdout, "events missing at the partner"), 0, "{stdout}");
    // A year of subscriptions on a test clock, and the audit finds nothing.
    assert_eq!(figure(&stdout, "subscribers"), 40, "{stdout}");
    assert!(figure(&stdout, "charges succeeded") > 40, "{stdout}");
    assert!(
        figure(&stdout, "charges failed") > 0,
        "declining cards went through dunning:\n{stdout}"
    );
    assert!(stdout.contains("12 of 12 months advanced and settled"), "{stdout}");
    assert_eq!(figure(&stdout, "audit"), 0, "{stdout}");
}

/// The number printed after `label` on its line of the report.
fn figure(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no figure for {label:?} in:\n{stdout}"))
}

/// A partner that never accepts anything: the drain cannot finish. The demo
/// says exactly that, with what is still pending, and reports no invariant
/// it could not measure as broken: the stock it checks after stopping the
/// service still adds up.
#[test]
fn a_drain_that_cannot_finish_is_reported_as_not_drained() {
    let output = holdfast(
        &[
            "demo",
            "--orders",
            "60",
            "--shoppers",
            "4",
            "--drain-timeout-s",
            "3",
            "--partner-down",
            "--subscribers",
            "0",
        ],
        &[],
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Not drained within the drain timeout"), "{stdout}");
    let webhooks_line = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("webhooks "))
        .unwrap_or_else(|| panic!("no pending line for the webhooks queue:\n{stdout}"));
    let pending: u64 = webhooks_line
        .split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    assert!(pending > 0, "deliveries are pending: {webhooks_line}");
    assert_eq!(figure(&stdout, "oversells"), 0, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.contains("events missing at the partner") && line.contains("not checked")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.contains("cold path drained in time") && line.contains("BROKEN")),
        "{stdout}"
    );
}
