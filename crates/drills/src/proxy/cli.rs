//! `holdfast drill proxy`: one proxy named `default` plus the control API, until
//! the process is told to stop, for drills run by hand or from another process.

use std::future::Future;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use super::{ControlApi, ProxySpec};

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address the proxy listens on, e.g. 127.0.0.1:15432.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Address it forwards to, e.g. 127.0.0.1:5432.
    #[arg(long, value_name = "ADDR")]
    pub upstream: String,
    /// Address of the Toxiproxy-style control API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8474")]
    pub api: String,
}

/// Runs until `shutdown` completes, then stops the proxy.
pub async fn run_proxy(args: ProxyArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<u8> {
    let api = ControlApi::new();
    let listener = TcpListener::bind(args.api.as_str())
        .await
        .with_context(|| format!("--api: cannot listen on {}", args.api))?;
    let api_addr = listener.local_addr().context("reading the control API's address")?;
    let proxy = api
        .create_proxy(ProxySpec {
            name: "default".into(),
            listen: args.listen.clone(),
            upstream: args.upstream.clone(),
            enabled: true,
        })
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    println!("proxy default: {} -> {}", proxy.local_addr(), args.upstream);
    println!("control API: http://{api_addr} (Toxiproxy-style: /proxies, /proxies/default/toxics, /reset)");
    let served = api.serve(listener, shutdown).await;
    api.stop_all().await;
    served.context("serving the control API")?;
    Ok(0)
}
