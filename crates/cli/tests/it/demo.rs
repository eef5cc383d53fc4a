//! The README's first command works and its invariants hold.

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
    assert!(stdout.contains("paid"), "{stdout}");
}
