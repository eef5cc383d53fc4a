//! Applying migrations through PgBouncer in transaction mode.
//!
//! sqlx's `Migrator::run` serialises migrators with `pg_advisory_lock`, a
//! session-level lock: behind transaction pooling it is taken on one server
//! connection and its unlock may reach another, leaving the first locked for
//! every later migrator. Its queries are named prepared statements as well.
//! This runner keeps sqlx's bookkeeping (the `_sqlx_migrations` table, its
//! checksums and its advisory lock key, so it excludes sqlx's migrator on
//! nodes that connect directly) but applies each migration in a transaction
//! of its own that takes the lock with `pg_advisory_xact_lock`. Direct and
//! session-mode connections still use sqlx's migrator.

use std::collections::HashMap;
use std::time::Instant;

use sqlx::Executor;
use sqlx::migrate::{MigrateError, Migration, Migrator};

use super::Pool;
use crate::{Result, StoreError};

const TABLE: &str = "_sqlx_migrations";

/// Applies every pending migration, one transaction each.
pub(super) async fn run(migrator: &Migrator, pool: &Pool) -> Result<()> {
    let pending: Vec<&Migration> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    if let Some(migration) = pending.iter().find(|m| m.no_tx) {
        return Err(StoreError::Migration(format!(
            "migration {} must run outside a transaction, which PgBouncer's transaction pooling cannot give it: \
             run `holdfast migrate` with database.pgbouncer = \"off\" against PostgreSQL itself",
            migration.version
        )));
    }
    while apply_next(&pending, pool).await? {}
    Ok(())
}

/// Applies the first migration not yet applied; `false` when there was none.
async fn apply_next(migrations: &[&Migration], pool: &Pool) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *tx)
        .await?;
    // Waits for any other migrator of this database, whichever runner it uses.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_id(&database))
        .execute(&mut *tx)
        .await?;
    (&mut *tx)
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, \
             execution_time BIGINT NOT NULL)"
        )))
        .await?;
    let rows: Vec<(i64, Vec<u8>, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, checksum, success FROM {TABLE} ORDER BY version"
    )))
    .fetch_all(&mut *tx)
    .await?;
    if let Some((version, _, _)) = rows.iter().find(|(_, _, success)| !success) {
        return Err(migration_error(MigrateError::Dirty(*version)));
    }
    let applied: HashMap<i64, Vec<u8>> = rows.into_iter().map(|(v, checksum, _)| (v, checksum)).collect();
    if let Some(unknown) = applied.keys().find(|v| !migrations.iter().any(|m| m.version == **v)) {
        return Err(migration_error(MigrateError::VersionMissing(*unknown)));
    }
    for migration in migrations {
        if let Some(checksum) = applied.get(&migration.version)
            && checksum.as_slice() != &*migration.checksum
        {
            return Err(migration_error(MigrateError::VersionMismatch(migration.version)));
        }
    }
    let Some(next) = migrations.iter().find(|m| !applied.contains_key(&m.version)) else {
        tx.commit().await?;
        return Ok(false);
    };
    let started = Instant::now();
    (&mut *tx)
        .execute(sqlx::raw_sql(next.sql.clone()))
        .await
        .map_err(|e| migration_error(MigrateError::ExecuteMigration(e, next.version)))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {TABLE} (version, description, success, checksum, execution_time) VALUES ($1, $2, TRUE, $3, $4)"
    )))
    .bind(next.version)
    .bind(&*next.description)
    .bind(&*next.checksum)
    .bind(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

fn migration_error(error: MigrateError) -> StoreError {
    StoreError::Migration(error.to_string())
}

/// sqlx's key for its migrator's advisory lock: `0x3d32ad9e` times the
/// CRC-32 (IEEE) of the database's name.
fn lock_id(database: &str) -> i64 {
    0x3d32ad9e * i64::from(crc32(database.as_bytes()))
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_checksum() {
        // The check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
