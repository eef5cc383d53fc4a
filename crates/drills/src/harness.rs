//! Starts Holdfast in-process on a fresh database, as the demo, benchmarks
//! and drills need it: the database is made and dropped here, the service
//! runs through `holdfast_service::local`.

use std::path::PathBuf;

use holdfast_service::local::{self, LocalService};
use holdfast_service::{Config, Role};
use holdfast_store::SharedStore;

/// A running service and what a driver needs to talk to it.
pub struct RunningService {
    pub base_url: String,
    pub admin_key: String,
    pub store: SharedStore,
    pub database_url: String,
    /// The configuration it runs with.
    pub config: Config,
    server: local::Server,
    cleanup: Cleanup,
}

enum Cleanup {
    SqliteDir(PathBuf),
    PostgresDatabase {
        admin_url: String,
    },
    /// A database someone else made and drops.
    Nothing,
}

/// Where the fresh database goes: a temporary SQLite file, or a scratch
/// database on the PostgreSQL server of `admin_url`.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite,
    Postgres { admin_url: String },
}

impl Database {
    pub fn from_flag(url: Option<&str>) -> Self {
        match url {
            Some(url) if url.starts_with("postgres") => Database::Postgres {
                admin_url: url.to_owned(),
            },
            _ => Database::Sqlite,
        }
    }
}

pub async fn start(database: &Database, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<RunningService> {
    start_as(database, Role::All, tweak).await
}

/// [`start`] with only the parts `role` runs (`Role::Inventory`: an
/// inventory node for order nodes in `inventory.mode = "remote"`).
pub async fn start_as(
    database: &Database,
    role: Role,
    tweak: impl FnOnce(&mut Config),
) -> anyhow::Result<RunningService> {
    let (database_url, cleanup) = match database {
        Database::Sqlite => {
            let dir = std::env::temp_dir().join(format!("holdfast-run-{}", uuid::Uuid::now_v7().simple()));
            std::fs::create_dir_all(&dir)?;
            (
                format!("sqlite://{}/holdfast.db", dir.display()),
                Cleanup::SqliteDir(dir),
            )
        }
        Database::Postgres { admin_url } => {
            let url = holdfast_store::scratch::create_database(admin_url, "run").await?;
            (
                url,
                Cleanup::PostgresDatabase {
                    admin_url: admin_url.clone(),
                },
            )
        }
    };
    serve(database_url, cleanup, role, tweak).await
}

/// A service on a database that already exists and is migrated or empty
/// (e.g. a scratch database the caller made, reached through PgBouncer); its
/// `stop` leaves the database to the caller.
pub async fn start_on(database_url: &str, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<RunningService> {
    serve(database_url.to_owned(), Cleanup::Nothing, Role::All, tweak).await
}

async fn serve(
    database_url: String,
    cleanup: Cleanup,
    role: Role,
    tweak: impl FnOnce(&mut Config),
) -> anyhow::Result<RunningService> {
    let mut config = Config::defaults()?;
    config.database.url = holdfast_service::config::Secret::new(database_url.clone());
    config.log.level = "warn".into();
    // Every partner the harness runs listens on 127.0.0.1.
    config.webhooks.allow_private_networks = true;
    tweak(&mut config);
    let LocalService {
        base_url,
        admin_key,
        store,
        config,
        server,
    } = local::start(config, role).await?;
    Ok(RunningService {
        base_url,
        admin_key,
        store,
        database_url,
        config,
        server,
        cleanup,
    })
}

impl RunningService {
    /// Stops serving and every worker, gracefully, keeping the database:
    /// `store` stays readable, and nothing changes it any more.
    pub async fn halt(&mut self) -> anyhow::Result<()> {
        self.server.halt().await
    }

    /// Stops the service gracefully and removes its database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.halt().await?;
        match &self.cleanup {
            Cleanup::SqliteDir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PostgresDatabase { admin_url } => {
                holdfast_store::scratch::drop_database(admin_url, &self.database_url).await?;
            }
            Cleanup::Nothing => {}
        }
        Ok(())
    }
}
