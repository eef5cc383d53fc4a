//! The README's first command works and its invariants hold, webhooks to
//! the partner included.

use std::time::Duration;

use crate::holdfast;

#[test]
fn the_demo_runs_and_its_invariants_hold() {
    let output = holdfast(
        &["demo", "--orders", "300", "--shoppers", "8"],
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
