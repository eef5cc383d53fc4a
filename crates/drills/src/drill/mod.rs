//! `holdfast drill …`: the fault proxy, and drills that replay an incident
//! for real. A drill starts the processes a scenario names, drives load
//! through four phases (baseline, fault, heal, recovery), injects and heals
//! the faults, checks SLO gates and business invariants in one verdict, and
//! writes its journal and reports. Exit 0 when everything holds, 1 on any
//! breach, 2 when a drill could not decide.
//!
//! Layers: `mod.rs` (the commands) → `runner` (one drill) → `rig` (its
//! processes), `traffic` (its load), `faults`, `watch`; then `invariants`,
//! `metrics` (gates), `report`; `scenario` and `journal` are the formats
//! every layer shares.

mod faults;
pub mod invariants;
pub mod journal;
pub mod metrics;
pub mod plot;
mod process;
pub mod report;
pub mod rig;
pub mod runner;
pub mod scenario;
pub mod traffic;
mod watch;

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::proxy::{ProxyArgs, run_proxy};
use journal::Verdict;
use rig::DatabaseChoice;
use runner::{Outcome, RunOptions};
use scenario::{Backend, Scenario};

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// A fault-injecting TCP proxy with a Toxiproxy-style control API, until Ctrl-C.
    Proxy(ProxyArgs),
    /// Run drills: real processes, load, faults, SLO gates and invariants, reports.
    Run(RunArgs),
    /// The shipped scenarios.
    List,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario names (see `holdfast drill list`), or `all`.
    #[arg(value_name = "SCENARIO")]
    pub scenarios: Vec<String>,
    /// Shorter phases, for CI.
    #[arg(long)]
    pub quick: bool,
    /// Write each drill's reports to DIR/SCENARIO/ and DIR/summary.md (default:
    /// a new folder under the system's temporary folder).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// A PostgreSQL server; the nodes get scratch databases on it. SQLite when absent.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// A configuration key of every holdfast node the drill starts, e.g.
    /// `dependencies.inventory.deadline_ms=60000`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Seeds the load's choices (SKUs, cards, nodes), to repeat a run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A scenario file of your own; repeatable.
    #[arg(long = "scenario", value_name = "FILE")]
    pub scenario_files: Vec<PathBuf>,
    /// The holdfast binary the nodes run (default: this one).
    #[arg(long, value_name = "FILE", hide = true)]
    pub holdfast: Option<PathBuf>,
}

/// Runs a drill command; long-running ones end when `shutdown` completes.
pub async fn run(command: DrillCommand, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<u8> {
    match command {
        DrillCommand::Proxy(args) => run_proxy(args, shutdown).await,
        DrillCommand::Run(args) => run_drills(args, shutdown).await,
        DrillCommand::List => {
            for scenario in Scenario::all_shipped()? {
                let backends: Vec<&str> = scenario.backends.iter().map(|b| b.as_str()).collect();
                println!("{:<16} {:<16} {}", scenario.name, backends.join(","), scenario.summary);
            }
            Ok(0)
        }
    }
}

fn scenarios(args: &RunArgs) -> anyhow::Result<Vec<Scenario>> {
    let mut chosen = Vec::new();
    for name in &args.scenarios {
        if name == "all" {
            chosen.extend(Scenario::all_shipped()?);
        } else {
            chosen.push(Scenario::shipped(name)?);
        }
    }
    for file in &args.scenario_files {
        let text = std::fs::read_to_string(file).with_context(|| format!("--scenario {}", file.display()))?;
        chosen.push(Scenario::parse(&text, &file.display().to_string())?);
    }
    anyhow::ensure!(
        !chosen.is_empty(),
        "name a scenario (see `holdfast drill list`), `all`, or --scenario FILE"
    );
    Ok(chosen)
}

fn overrides(set: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    set.iter()
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .filter(|(key, _)| !key.trim().is_empty())
                .ok_or_else(|| anyhow::anyhow!("--set {pair}: expected KEY=VALUE"))?;
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

async fn run_drills(args: RunArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<u8> {
    let scenarios = scenarios(&args)?;
    let database = match args.database_url.as_deref() {
        Some(url) if url.starts_with("postgres") => DatabaseChoice::Postgres {
            admin_url: url.to_owned(),
        },
        Some(url) => anyhow::bail!("--database-url {url}: expected a postgres:// URL (SQLite is the default)"),
        None => DatabaseChoice::Sqlite,
    };
    let reports = match &args.report {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "holdfast-drills-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        )),
    };
    std::fs::create_dir_all(&reports).with_context(|| format!("--report {}", reports.display()))?;
    let holdfast = match &args.holdfast {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding the holdfast binary")?,
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let options = RunOptions {
        holdfast,
        database: database.clone(),
        overrides: overrides(&args.set)?,
        quick: args.quick,
        seed,
        reports: reports.clone(),
    };
    let (interrupt, interrupted) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = interrupt.send(true);
    });
    println!(
        "{} drill(s){} on {}, seed {seed}, reports in {}",
        scenarios.len(),
        if args.quick { " (quick)" } else { "" },
        database.backend().as_str(),
        reports.display()
    );
    let mut outcomes = Vec::new();
    for scenario in &scenarios {
        if *interrupted.borrow() {
            break;
        }
        let outcome = if scenario.backends.contains(&database.backend()) {
            println!("\n{}: {}", scenario.name, scenario.summary);
            runner::run(scenario, &options, &interrupted).await
        } else {
            skipped(scenario, &database, &reports)
        };
        println!(
            "{}: {} ({} s) — {}",
            outcome.scenario,
            outcome.verdict.as_str().to_uppercase(),
            metrics::number(outcome.elapsed.as_secs_f64()),
            outcome.reason
        );
        outcomes.push(outcome);
    }
    report::write_summary(&reports, &outcomes)?;
    println!("\nsummary: {}", reports.join("summary.md").display());
    let code = if outcomes.iter().any(|o| o.verdict == Verdict::Fail) {
        1
    } else if *interrupted.borrow() || outcomes.iter().any(|o| o.verdict == Verdict::Undecided) {
        2
    } else {
        0
    };
    Ok(code)
}

/// A scenario that cannot run on the chosen database.
fn skipped(scenario: &Scenario, database: &DatabaseChoice, reports: &std::path::Path) -> Outcome {
    let needs: Vec<&str> = scenario.backends.iter().map(|b| b.as_str()).collect();
    let hint = if scenario.backends.contains(&Backend::Postgres) {
        " (pass --database-url postgres://…)"
    } else {
        ""
    };
    Outcome {
        scenario: scenario.name.clone(),
        verdict: Verdict::Undecided,
        reason: format!(
            "runs on {}, not {}{hint}",
            needs.join(" or "),
            database.backend().as_str()
        ),
        dir: reports.join(&scenario.name),
        elapsed: std::time::Duration::ZERO,
    }
}
