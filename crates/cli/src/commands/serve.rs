//! `holdfast serve`, `holdfast migrate` and `holdfast sandbox`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use holdfast_service::config::LogFormat;
use holdfast_service::{Application, Config, Role, Sources};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    All,
    Api,
    Workers,
    /// Only the inventory API (stock and holds) for order nodes running
    /// `inventory.mode = "remote"`, and the sweeper of expired holds.
    Inventory,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Which parts to run.
    #[arg(long, value_enum, default_value = "all")]
    role: RoleArg,
}

pub(crate) fn load(config: Option<PathBuf>, overrides: Vec<(String, String)>) -> anyhow::Result<Config> {
    Ok(Config::load(&Sources {
        file: config,
        env: true,
        overrides,
    })?)
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Warnings only, for commands that print their own report.
pub fn init_logs_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn serve(config: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<u8> {
    let overrides = args
        .listen
        .map(|listen| vec![("server.listen".to_owned(), listen)])
        .unwrap_or_default();
    let config_path = config.clone();
    let config = load(config, overrides)?;
    init_logs(&config);
    let role = match args.role {
        RoleArg::All => Role::All,
        RoleArg::Api => Role::Api,
        RoleArg::Workers => Role::Workers,
        RoleArg::Inventory => Role::Inventory,
    };
    let address = config.listen_addr()?;
    let app = Application::build(config, role).await?;
    reload_on_sighup(config_path.clone(), app.dependencies());
    let supplied = std::env::var("HOLDFAST_BOOTSTRAP_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    if let Some(key) = app.bootstrap_admin_key(supplied.as_deref()).await? {
        println!("Generated an admin API key (shown once, store it now): {key}");
    }
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("config key `server.listen`: cannot listen on {address}: {e}"))?;
    app.run(listener, shutdown_signal()).await?;
    Ok(0)
}

/// On SIGHUP, reads the configuration again (same file and environment) and
/// applies the `[dependencies.*]` tables to the running breakers, keeping
/// their state. A file that no longer parses changes nothing and says why.
#[cfg(unix)]
fn reload_on_sighup(config: Option<PathBuf>, dependencies: std::sync::Arc<holdfast_resilience::Registry>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; dependency settings reload only through the admin API");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloaded = load(config.clone(), Vec::new()).and_then(|fresh| {
                let tables = fresh.dependencies.all().map(|(name, table)| (name, table.clone()));
                dependencies
                    .apply(tables)
                    .map_err(|e| anyhow::anyhow!("config key `{}`: {}", e.key, e.reason))
            });
            match reloaded {
                Ok(()) => tracing::info!("SIGHUP: dependency settings reloaded"),
                Err(error) => tracing::error!(
                    error = format!("{error:#}"),
                    "SIGHUP: reload refused; settings unchanged"
                ),
            }
        }
    });
}

#[cfg(not(unix))]
fn reload_on_sighup(_config: Option<PathBuf>, _dependencies: std::sync::Arc<holdfast_resilience::Registry>) {}

/// Completes on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

pub async fn migrate(config: Option<PathBuf>) -> anyhow::Result<u8> {
    let config = load(config, Vec::new())?;
    init_logs(&config);
    let store = holdfast_store::connect(&config.connect_options())
        .await
        .map_err(|e| anyhow::anyhow!("config key `database.url`: {e}"))?;
    store.migrate().await?;
    let status = store.migration_status().await?;
    println!(
        "migrations current on {}: {:?}",
        store.backend().as_str(),
        status.applied
    );
    Ok(0)
}

/// One line per check; exit 1 if any failed.
pub async fn preflight(config: Option<PathBuf>) -> anyhow::Result<u8> {
    init_logs_quiet();
    let config = match load(config, Vec::new()) {
        Ok(config) => config,
        Err(error) => {
            println!("FAIL config      {error:#}");
            return Ok(1);
        }
    };
    let checks = holdfast_service::preflight::run(&config).await;
    for check in &checks {
        println!(
            "{} {:<10} {}",
            if check.ok { "ok  " } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    Ok(if checks.iter().all(|c| c.ok) { 0 } else { 1 })
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// A Stripe-like payment provider that signs its webhooks.
    Payments(SandboxPaymentsArgs),
}

#[derive(Debug, Args)]
pub struct SandboxPaymentsArgs {
    #[arg(long, default_value_t = 12111)]
    port: u16,
    /// Where to send signed webhooks, e.g. http://127.0.0.1:8080/api/v1/payments/webhook.
    #[arg(long)]
    webhook_url: Option<String>,
    #[arg(
        long,
        env = "HOLDFAST_SANDBOX_WEBHOOK_SECRET",
        default_value = "whsec_holdfast_sandbox"
    )]
    webhook_secret: String,
    /// Fraction of API calls answered with 500 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Latency added to every API call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

pub async fn sandbox(command: SandboxCommand) -> anyhow::Result<u8> {
    init_logs_quiet();
    match command {
        SandboxCommand::Payments(args) => {
            if !(0.0..=1.0).contains(&args.failure_rate) {
                anyhow::bail!("--failure-rate must be between 0 and 1, got {}", args.failure_rate);
            }
            let sandbox = holdfast_sandbox::SandboxPayments::new(holdfast_sandbox::PaymentsConfig {
                webhook_url: args.webhook_url,
                webhook_secret: args.webhook_secret,
                failure_rate: args.failure_rate,
                latency: Duration::from_millis(args.latency_ms),
                ..Default::default()
            });
            let listener = TcpListener::bind(("127.0.0.1", args.port))
                .await
                .map_err(|e| anyhow::anyhow!("--port {}: {e}", args.port))?;
            println!("sandbox payments listening on http://{}", listener.local_addr()?);
            sandbox.serve(listener, shutdown_signal()).await?;
            Ok(0)
        }
    }
}
