//! `holdfast subscriptions`: creator subscriptions from a shell, straight on
//! the configured database (no running service needed). `audit` is
//! Finance's check: it exits 1 on any under-charge or double charge and
//! names each one.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use holdfast_service::pipeline::subscriptions::audit::{self, AuditReport};

use super::serve::{init_logs_quiet, load};

#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Recompute the charges every subscription should have and compare them
    /// with those recorded; exit 1 on any under-charge or double charge.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only periods that start at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| format!("{raw:?} is not an RFC 3339 time such as 2026-01-31T00:00:00Z: {e}"))
}

pub async fn run(config: Option<PathBuf>, command: SubscriptionsCommand) -> anyhow::Result<u8> {
    init_logs_quiet();
    let config = load(config, Vec::new())?;
    let store = holdfast_store::connect(&config.connect_options())
        .await
        .map_err(|e| anyhow::anyhow!("config key `database.url`: {e}"))?;
    match command {
        SubscriptionsCommand::Audit(args) => {
            let report = audit::run(&store, args.since, Utc::now()).await?;
            print(&report, args.json)?;
            Ok(u8::from(!report.findings.is_empty()))
        }
    }
}

fn print(report: &AuditReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for finding in &report.findings {
        let kind = match finding.kind {
            audit::FindingKind::UnderCharge => "under-charge",
            audit::FindingKind::DoubleCharge => "double charge",
        };
        println!(
            "{kind}: {} period {}: {}",
            finding.subscription_id, finding.period_index, finding.detail
        );
    }
    println!(
        "audited {} subscriptions, {} periods, {} succeeded charges: {} under-charge(s), {} double charge(s)",
        report.subscriptions,
        report.periods,
        report.succeeded_charges,
        report.under_charges(),
        report.double_charges()
    );
    Ok(())
}
