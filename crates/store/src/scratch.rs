//! Scratch PostgreSQL databases for tests, benchmarks and drills: each run
//! gets its own database on a shared server and drops it afterwards.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

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

async fn admin_connection(admin_url: &str) -> Result<PgConnection, StoreError> {
    let options = PgConnectOptions::from_str(admin_url).map_err(|source| StoreError::Connect {
        target: crate::describe_target(admin_url),
        source,
    })?;
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
