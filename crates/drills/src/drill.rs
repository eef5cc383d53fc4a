//! `holdfast drill …`: fault-injection tools and, next to them, the drill scenarios
//! that use them.

use std::future::Future;

use clap::Subcommand;

use crate::proxy::{ProxyArgs, run_proxy};

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// A fault-injecting TCP proxy with a Toxiproxy-style control API, until Ctrl-C.
    Proxy(ProxyArgs),
}

/// Runs a drill command; long-running ones end when `shutdown` completes.
pub async fn run(command: DrillCommand, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<u8> {
    match command {
        DrillCommand::Proxy(args) => run_proxy(args, shutdown).await,
    }
}
