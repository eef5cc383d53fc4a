//! Shared test plumbing: the skip-or-fail rule for missing services, scratch
//! databases, and temporary fixture files.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A test that cannot get a service it needs prints why and skips, except
/// under `CI=true`, where a missing service is a failure.
pub fn unavailable(what: &str, why: impl std::fmt::Display) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is required under CI=true but unavailable: {why}");
    }
    eprintln!("skipping: {what} unavailable: {why}");
}

/// A uniquely named database, dropped when the value is dropped.
pub struct ScratchDb {
    admin_url: String,
    name: String,
    pub url: String,
}

impl ScratchDb {
    /// `None` (after [`unavailable`]) when PostgreSQL cannot be reached.
    pub async fn create() -> Option<ScratchDb> {
        let admin_url = holdfast_testkit::postgres_admin_url().await?;
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connecting to the PostgreSQL server that just answered");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("guard_test_{}_{nanos}", std::process::id());
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("creating the scratch database");
        let mut url = url::Url::parse(&admin_url).expect("HOLDFAST_TEST_PG_URL is a URL");
        url.set_path(&format!("/{name}"));
        Some(ScratchDb {
            admin_url,
            name,
            url: url.to_string(),
        })
    }

    pub async fn execute(&self, sql: &str) {
        let mut conn = PgConnection::connect(&self.url)
            .await
            .expect("connecting to scratch db");
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .expect("running setup SQL");
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async context; use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.map_err(std::io::Error::other)?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .execute(&mut admin)
                .await
                .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
    }
}

/// Writes `(name, contents)` files into a fresh temporary directory.
pub fn write_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let paths = files
        .iter()
        .map(|(name, text)| {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("creating fixture dirs");
            }
            std::fs::write(&path, text).expect("writing a fixture");
            path
        })
        .collect();
    (dir, paths)
}

/// Replaces the temporary directory in rendered output so snapshots are stable.
pub fn scrub(text: &str, dir: &Path) -> String {
    text.replace(&format!("{}/", dir.display()), "")
        .replace(&dir.display().to_string(), "<dir>")
}

/// The workspace root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
