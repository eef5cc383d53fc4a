//! Subcommands of `holdfast`.

mod queue;
mod serve;
mod subscriptions;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Order and checkout service that keeps working, or fails fast and honestly"
)]
pub struct Cli {
    /// Configuration file (default: ./holdfast.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve(serve::ServeArgs),
    /// Apply database migrations for the configured backend.
    Migrate,
    /// Post-deploy check: config, database, migrations, PgBouncer limits, dependencies, a synthetic checkout.
    Preflight,
    /// Run the service on a fresh embedded database and drive checkouts through it.
    Demo(holdfast_drills::demo::DemoArgs),
    /// Benchmarks that print their figure and its ratio to a ceiling measured in the same run.
    Bench {
        #[command(subcommand)]
        bench: holdfast_drills::bench::BenchCommand,
    },
    /// Drills: real processes, load, injected faults, SLO gates and invariants; and the fault proxy.
    Drill {
        #[command(subcommand)]
        command: holdfast_drills::drill::DrillCommand,
    },
    /// Lint PostgreSQL migrations for locks that would stall a live table.
    LintMigrations(holdfast_guard::cli::LintMigrationsArgs),
    /// Check deploy configs against policies and a known-good baseline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Compare a canary's /metrics with the baseline's, projecting pool use to full traffic.
    CanaryGate(holdfast_guard::cli::CanaryGateArgs),
    /// The durable queues: depth, dead letters, redrive.
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Draft an incident report from the operational journal and, optionally, a drill's journal.
    Postmortem(holdfast_drills::postmortem::PostmortemArgs),
    /// Creator subscriptions: Finance's audit of every period's charges.
    Subscriptions {
        #[command(subcommand)]
        command: subscriptions::SubscriptionsCommand,
    },
    /// Sandbox stand-ins for outside services.
    Sandbox {
        #[command(subcommand)]
        service: serve::SandboxCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate the policies over FILE… (pgbouncer.ini, holdfast.toml, Terraform, Prometheus, Alertmanager).
    Check(holdfast_guard::cli::PolicyCheckArgs),
}

/// Guard tools return their own exit codes (0 pass, 1 deny, 2 unreadable input).
fn exit_code(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve::serve(cli.config, args).await,
        Command::Migrate => serve::migrate(cli.config).await,
        Command::Preflight => serve::preflight(cli.config).await,
        Command::Demo(args) => {
            serve::init_logs_quiet();
            holdfast_drills::demo::run(args).await
        }
        Command::Bench { bench } => {
            serve::init_logs_quiet();
            holdfast_drills::bench::run(bench).await
        }
        Command::Drill { command } => {
            serve::init_logs_quiet();
            holdfast_drills::drill::run(command, serve::shutdown_signal()).await
        }
        Command::Postmortem(args) => {
            serve::init_logs_quiet();
            holdfast_drills::postmortem::run(args).await
        }
        Command::Sandbox { service } => serve::sandbox(service).await,
        Command::Queue { command } => queue::run(cli.config, command).await,
        Command::Subscriptions { command } => subscriptions::run(cli.config, command).await,
        Command::LintMigrations(args) => Ok(exit_code(args.run().await?)),
        Command::Policy {
            command: PolicyCommand::Check(args),
        } => Ok(exit_code(args.run().await?)),
        Command::CanaryGate(args) => Ok(exit_code(args.run().await?)),
    }
}
