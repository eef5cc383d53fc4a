//! The service in this process on a loopback port, as the integration tests,
//! the demo, the benchmarks and the drills run it: `start(config, role)`
//! builds the [`Application`], registers a fresh admin key, binds
//! `127.0.0.1:0` and serves until [`LocalService::halt`].
//!
//! The database is the caller's: it is named in `config.database.url`, made
//! beforehand (a SQLite file, or `holdfast_store::scratch` on PostgreSQL,
//! perhaps behind a PgBouncer) and dropped by the caller afterwards.

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use holdfast_store::SharedStore;

use crate::{Application, Config, Role};

/// A service serving on a loopback port, and what a client needs to reach it.
/// Every field is public so a caller's own handle can take them apart.
pub struct LocalService {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// An admin API key registered at start.
    pub admin_key: String,
    /// The service's own store, for checks that read the database directly.
    pub store: SharedStore,
    /// The configuration it runs with.
    pub config: Config,
    /// The task serving it.
    pub server: Server,
}

/// Starts the parts of the service that `role` runs, with `config`.
pub async fn start(config: Config, role: Role) -> anyhow::Result<LocalService> {
    let app = Application::build(config.clone(), role).await?;
    let admin_key = crate::http::auth::generate_key();
    app.bootstrap_admin_key(Some(&admin_key)).await?;
    let store = app.store();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let (shutdown, stop) = oneshot::channel();
    // Dropping the sender completes the shutdown future too, so a service
    // whose handle is dropped without `halt` stops as well.
    let task = tokio::spawn(app.run(listener, async move {
        let _ = stop.await;
    }));
    Ok(LocalService {
        base_url,
        admin_key,
        store,
        config,
        server: Server {
            shutdown: Some(shutdown),
            task: Some(task),
        },
    })
}

impl LocalService {
    /// Stops serving and every worker, gracefully, keeping the database:
    /// `store` stays readable, and nothing changes it any more. A second call
    /// does nothing.
    pub async fn halt(&mut self) -> anyhow::Result<()> {
        self.server.halt().await
    }
}

/// The task serving the application, and the way to ask it to stop.
pub struct Server {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// See [`LocalService::halt`].
    pub async fn halt(&mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}
