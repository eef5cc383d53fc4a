//! The flags the `holdfast` binary exposes, parsed through clap exactly as the
//! binary will, and run end to end on files.

use clap::Parser;
use holdfast_guard::cli::{LintMigrationsArgs, PolicyCheckArgs};
use holdfast_guard::output::Format;

use crate::support::write_files;

#[derive(Parser)]
enum Holdfast {
    LintMigrations(LintMigrationsArgs),
    Policy {
        #[command(subcommand)]
        command: Policy,
    },
}

#[derive(clap::Subcommand)]
enum Policy {
    Check(PolicyCheckArgs),
}

#[tokio::test]
async fn lint_migrations_flags_and_exit_code() {
    let (dir, _) = write_files(&[(
        "migrations/0001_index.sql",
        "CREATE INDEX idx_reservations_expiry ON stock_reservations (expires_at);\n",
    )]);
    let migrations = dir.path().join("migrations");
    let parsed = Holdfast::try_parse_from([
        "holdfast",
        "lint-migrations",
        migrations.to_str().unwrap_or_default(),
        "--large-table-rows",
        "5000",
        "--format",
        "github",
    ]);
    let Ok(Holdfast::LintMigrations(args)) = parsed else {
        panic!("lint-migrations did not parse");
    };
    assert_eq!(args.large_table_rows, 5000);
    assert_eq!(args.format, Format::Github);
    assert!(!args.trace);
    assert_eq!(args.run().await.expect("runs"), 1);
}

#[tokio::test]
async fn policy_check_flags_and_exit_code() {
    let (dir, paths) = write_files(&[
        ("new/pgbouncer.ini", "[pgbouncer]\nmax_client_conn = 20\n"),
        ("old/pgbouncer.ini", "[pgbouncer]\nmax_client_conn = 200\n"),
    ]);
    let parsed = Holdfast::try_parse_from([
        "holdfast",
        "policy",
        "check",
        paths[0].to_str().unwrap_or_default(),
        "--baseline",
        paths[1].to_str().unwrap_or_default(),
        "--fleet-nodes",
        "3",
        "--format",
        "sarif",
    ]);
    let Ok(Holdfast::Policy {
        command: Policy::Check(args),
    }) = parsed
    else {
        panic!("policy check did not parse");
    };
    assert_eq!(args.baselines.len(), 1);
    assert_eq!(args.fleet_nodes, 3);
    assert_eq!(args.run().await.expect("runs"), 1);
    drop(dir);
}

#[test]
fn traffic_share_must_be_a_fraction() {
    #[derive(Parser)]
    struct Gate {
        #[command(flatten)]
        args: holdfast_guard::cli::CanaryGateArgs,
    }
    let base = [
        "gate",
        "--canary",
        "http://127.0.0.1:1",
        "--baseline",
        "http://127.0.0.1:2",
    ];
    let ok = Gate::try_parse_from(base.iter().copied().chain(["--traffic-share", "0.05"]));
    let gate = ok.expect("0.05 is a valid share").args;
    assert_eq!(gate.max_pool_utilisation, 0.7);
    assert_eq!(gate.max_error_rate_ratio, 2.0);
    assert_eq!(gate.max_p99_ratio, 1.5);
    assert!(Gate::try_parse_from(base.iter().copied().chain(["--traffic-share", "5"])).is_err());
}
