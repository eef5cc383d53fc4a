//! The command-line surface of the guardrail tools: one clap `Args` struct per
//! subcommand, each with `run()` returning the process exit code, so the
//! `holdfast` binary only has to dispatch.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::canary::{self, GateOptions};
use crate::lint::{self, LintOptions};
use crate::output::{self, Format};
use crate::policy::{self, PolicyOptions};

/// `holdfast lint-migrations PATH…`: exit 0 clean or warnings only, 1 on an
/// error-level finding, 2 when a file does not parse.
#[derive(Debug, Clone, clap::Args)]
pub struct LintMigrationsArgs {
    /// Migration files, or directories searched for `.sql` files.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Database to read table sizes from (`pg_class.reltuples`); with
    /// `--trace`, a scratch database the migrations run in (rolled back).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Tables with more rows than this are large: a long blocking lock on
    /// one is an error.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub large_table_rows: i64,
    /// Run each migration in a rolled-back transaction and report the locks
    /// it took and the tables it rewrote. Needs `--database-url`.
    #[arg(long)]
    pub trace: bool,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

impl LintMigrationsArgs {
    pub async fn run(self) -> Result<i32> {
        let options = LintOptions {
            paths: self.paths,
            database_url: self.database_url,
            large_table_rows: self.large_table_rows,
            trace: self.trace,
        };
        let findings = lint::lint(&options).await?;
        print!("{}", output::render(self.format, "holdfast lint-migrations", &findings));
        Ok(output::exit_code(&findings))
    }
}

/// `holdfast policy check FILE…`: exit 0 when no policy denies (warnings
/// allowed), 1 on a deny, 2 when a file does not parse.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyCheckArgs {
    /// pgbouncer.ini, holdfast.toml, Terraform `.tf` or plan `.json`,
    /// Prometheus rule and Alertmanager `.yml` files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Known-good versions to compare with (matched by kind and file name).
    #[arg(long = "baseline", value_name = "FILE", num_args = 1..)]
    pub baselines: Vec<PathBuf>,
    /// Directory of extra `.rego` policies (package `holdfast.policy.<name>`).
    #[arg(long = "policy", value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Number of service nodes sharing the database, to size the pools'
    /// total demand on PgBouncer.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub fleet_nodes: u32,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

impl PolicyCheckArgs {
    pub async fn run(self) -> Result<i32> {
        let options = PolicyOptions {
            files: self.files,
            baselines: self.baselines,
            policy_dir: self.policy_dir,
            fleet_nodes: self.fleet_nodes,
        };
        // Policy evaluation is CPU-bound and synchronous; keep it off the
        // async worker threads.
        let findings = tokio::task::spawn_blocking(move || policy::check(&options))
            .await
            .context("policy evaluation panicked")??;
        print!("{}", output::render(self.format, "holdfast policy check", &findings));
        Ok(output::exit_code(&findings))
    }
}

/// `holdfast canary-gate`: exit 0 to promote, 1 to block, 2 when either
/// `/metrics` cannot be scraped or read.
#[derive(Debug, Clone, clap::Args)]
pub struct CanaryGateArgs {
    /// The canary's base URL or its `/metrics` URL.
    #[arg(long, value_name = "URL")]
    pub canary: String,
    /// A baseline (current fleet) node's base URL or `/metrics` URL.
    #[arg(long, value_name = "URL")]
    pub baseline: String,
    /// Share of traffic the canary receives, e.g. 0.05.
    #[arg(long, value_name = "F", value_parser = parse_share)]
    pub traffic_share: f64,
    /// Highest pool utilisation allowed once projected to full traffic.
    #[arg(long, value_name = "F", default_value_t = 0.7)]
    pub max_pool_utilisation: f64,
    #[arg(long, value_name = "F", default_value_t = 2.0)]
    pub max_error_rate_ratio: f64,
    #[arg(long, value_name = "F", default_value_t = 1.5)]
    pub max_p99_ratio: f64,
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{s}: the traffic share must be in (0, 1]"))
    }
}

impl CanaryGateArgs {
    pub async fn run(self) -> Result<i32> {
        let options = GateOptions {
            canary: self.canary,
            baseline: self.baseline,
            traffic_share: self.traffic_share,
            max_pool_utilisation: self.max_pool_utilisation,
            max_error_rate_ratio: self.max_error_rate_ratio,
            max_p99_ratio: self.max_p99_ratio,
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let scraped = tokio::try_join!(
            canary::scrape(&client, &options.canary),
            canary::scrape(&client, &options.baseline)
        );
        let (canary_snapshot, baseline_snapshot) = match scraped {
            Ok(pair) => pair,
            Err(e) => {
                println!("canary-gate: cannot evaluate: {e:#}");
                return Ok(2);
            }
        };
        let checks = canary::evaluate(&options, &canary_snapshot, &baseline_snapshot);
        print!("{}", canary::render(&checks));
        Ok(if checks.iter().all(|c| c.passed) { 0 } else { 1 })
    }
}
