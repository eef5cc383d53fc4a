//! Scratch PostgreSQL databases for tests, benchmarks and drills: each run
//! gets its own database on a shared server and drops it afterwards.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, Row};

use crate::StoreError;

/// Creates an empty database named `holdfast_<prefix>_<random>` on the
/// server of `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str, prefix: &str) -> Result<String, StoreError> {
    let name = format!("holdfast_{prefix}_{}", uuid_suffix());
    let mut admin = admin_connection(admin_url).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await?;
    let _ = admin.close().await;
    let mut url = url::Url::parse(admin_url).map_err(|e| StoreError::Migration(e.to_string()))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Drops a database made by [`create_database`], closing its connections.
pub async fn drop_database(admin_url: &str, database_url: &str) -> Result<(), StoreError> {
    let url = url::Url::parse(database_url).map_err(|e| StoreError::Migration(e.to_string()))?;
    let name = url.path().trim_start_matches('/').to_owned();
    if !name.starts_with("holdfast_") || name.contains('"') {
        return Err(StoreError::Migration(format!(
            "refusing to drop {name}: not a scratch database"
        )));
    }
    let mut admin = admin_connection(admin_url).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .await?;
    let _ = admin.close().await;
    Ok(())
}

/// Also through PgBouncer: no startup parameter it refuses, and only simple
/// queries (no prepared statements) on this connection. Its statements are
/// not logged: a `DROP DATABASE … WITH (FORCE)` that takes a second on a busy
/// server is expected, not a slow query worth a warning in a drill's output.
async fn admin_connection(admin_url: &str) -> Result<PgConnection, StoreError> {
    let options = PgConnectOptions::from_str(admin_url)
        .map_err(|source| StoreError::Connect {
            target: crate::describe_target(admin_url),
            source,
        })?
        .extra_float_digits(None)
        .disable_statement_logging();
    PgConnection::connect_with(&options)
        .await
        .map_err(|source| StoreError::Connect {
            target: crate::describe_target(admin_url),
            source,
        })
}

fn uuid_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().r#gen();
    format!("{n:016x}")
}

/// How a [`ScratchPgBouncer`] pools.
#[derive(Debug, Clone)]
pub struct PgBouncerSettings {
    /// `session` or `transaction`.
    pub pool_mode: &'static str,
    pub max_client_conn: u32,
    /// Server connections per database and user.
    pub default_pool_size: u32,
}

impl Default for PgBouncerSettings {
    /// Transaction pooling, roomy enough for a test binary whose tests each
    /// open three pools on a database of their own.
    fn default() -> Self {
        Self {
            pool_mode: "transaction",
            max_client_conn: 2000,
            default_pool_size: 20,
        }
    }
}

/// A stock PgBouncer (no `ignore_startup_parameters`, no
/// `max_prepared_statements`) in front of a PostgreSQL server, started from
/// an ini of its own in a temporary folder, with `auth_type = trust`.
///
/// It runs under a `sh` that kills it when its standard input closes, which
/// happens when this value is dropped and also when the process holding it
/// exits: a PgBouncer kept in a `static` for a whole test binary does not
/// outlive the binary.
pub struct ScratchPgBouncer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
    user: String,
}

impl std::fmt::Debug for ScratchPgBouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScratchPgBouncer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl ScratchPgBouncer {
    /// Whether a `pgbouncer` binary is on the PATH.
    pub fn installed() -> bool {
        std::process::Command::new("pgbouncer")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Starts PgBouncer on a free loopback port in front of the server of
    /// `server_url`, and waits until it accepts connections.
    pub fn start(server_url: &str, settings: &PgBouncerSettings) -> Result<Self, String> {
        let server = url::Url::parse(server_url).map_err(|e| format!("{server_url}: {e}"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("holdfast-pgbouncer-{port}-{}", uuid_suffix()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let user = if server.username().is_empty() {
            "postgres".to_owned()
        } else {
            server.username().to_owned()
        };
        let ini = format!(
            "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/users.txt\nadmin_users = {user}\n\
             pool_mode = {mode}\nmax_client_conn = {max_client_conn}\ndefault_pool_size = {pool}\n\
             server_idle_timeout = 10\nlogfile = {dir}/pgbouncer.log\n",
            host = server.host_str().unwrap_or("127.0.0.1"),
            server_port = server.port().unwrap_or(5432),
            dir = dir.display(),
            mode = settings.pool_mode,
            max_client_conn = settings.max_client_conn,
            pool = settings.default_pool_size,
        );
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        write("pgbouncer.ini", &ini)?;
        write("users.txt", &format!("\"{user}\" \"\"\n"))?;
        let mut bouncer = Self {
            port,
            dir,
            child: None,
            user,
        };
        bouncer.start_again()?;
        Ok(bouncer)
    }

    /// Starts it again on the same port after [`Self::stop`].
    pub fn start_again(&mut self) -> Result<(), String> {
        self.stop();
        // PgBouncer refuses to run as root; as root, it drops to `postgres`,
        // which must be able to write its log into the folder.
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n");
        let user_flag = if as_root {
            let _ = std::process::Command::new("chmod")
                .args(["-R", "a+rwx"])
                .arg(&self.dir)
                .status();
            "-u postgres"
        } else {
            ""
        };
        let script = format!("pgbouncer {user_flag} \"$0\" & child=$!; read _; kill $child; wait $child",);
        let child = std::process::Command::new("sh")
            .args(["-c", &script])
            .arg(self.dir.join("pgbouncer.ini"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("sh (to start pgbouncer): {e}"))?;
        self.child = Some(child);
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "pgbouncer exited ({status}); see {}",
                    self.log_path().display()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(format!("pgbouncer did not listen on port {} within 10 s", self.port))
    }

    /// Stops it and waits until it has exited; clients see their
    /// connections close, as in a PgBouncer restart.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Closing its standard input makes the shell kill PgBouncer.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `database_url` (a database on the server PgBouncer fronts) as reached
    /// through PgBouncer.
    pub fn url_for(&self, database_url: &str) -> Result<String, String> {
        let mut url = url::Url::parse(database_url).map_err(|e| format!("{database_url}: {e}"))?;
        url.set_host(Some("127.0.0.1")).map_err(|e| e.to_string())?;
        url.set_port(Some(self.port))
            .map_err(|()| "cannot set a port".to_owned())?;
        let _ = url.set_password(None);
        Ok(url.to_string())
    }

    /// The admin console (`SHOW CONFIG`, `SHOW POOLS`, `RECONNECT`, …).
    pub fn admin_url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/pgbouncer", self.user, self.port)
    }

    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir.join("pgbouncer.log")
    }

    pub fn ini_path(&self) -> std::path::PathBuf {
        self.dir.join("pgbouncer.ini")
    }
}

/// A connection to a PgBouncer's admin console. A drill that lowers
/// `max_client_conn` opens it before and holds it until the limit is back,
/// so the connection that restores the limit is never one that is refused.
pub async fn pgbouncer_admin(admin_url: &str) -> Result<PgConnection, StoreError> {
    admin_connection(admin_url).await
}

/// Rewrites `max_client_conn` in `ini` and has PgBouncer reload it. With
/// `restart_clients_of`, every client connection to that database is then
/// dropped (`KILL`, at once `RESUME`), as restarting PgBouncer to apply the
/// change would: its clients must connect again, under the new limit. Returns
/// how many client connections to that database it dropped (0 without).
pub async fn set_max_client_conn(
    ini: &std::path::Path,
    admin: &mut PgConnection,
    max_client_conn: u32,
    restart_clients_of: Option<&str>,
) -> Result<u64, StoreError> {
    let io = |e: std::io::Error| StoreError::Migration(format!("{}: {e}", ini.display()));
    let text = std::fs::read_to_string(ini).map_err(io)?;
    let rewritten: Vec<String> = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("max_client_conn") {
                format!("max_client_conn = {max_client_conn}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(ini, rewritten.join("\n") + "\n").map_err(io)?;
    admin.execute("RELOAD").await?;
    if let Some(database) = restart_clients_of {
        if !database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Migration(format!(
                "PgBouncer's console takes plain database names, not {database:?}"
            )));
        }
        let clients = sqlx::raw_sql("SHOW CLIENTS").fetch_all(&mut *admin).await?;
        let cut = clients
            .iter()
            .filter(|row| row.try_get::<String, _>("database").is_ok_and(|name| name == database))
            .count() as u64;
        let killed = admin.execute(sqlx::AssertSqlSafe(format!("KILL {database}"))).await;
        // RESUME whatever KILL did, so new clients are never left paused.
        let resumed = admin.execute(sqlx::AssertSqlSafe(format!("RESUME {database}"))).await;
        killed?;
        resumed?;
        return Ok(cut);
    }
    Ok(0)
}

impl Drop for ScratchPgBouncer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
