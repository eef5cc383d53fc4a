//! `--trace`: runs a migration inside a transaction that is always rolled back
//! and reports, statement by statement, the locks it took (from `pg_locks`) and
//! the tables it rewrote (a changed `pg_class.relfilenode`).
//!
//! Static rules guess; this shows what Postgres actually did. Locks are read
//! from the same session before `ROLLBACK`, because they are released at the
//! end of the transaction and another session could not attribute them.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::sizes::redact;
use super::statements::{Statement, StatementKind};
use crate::output::{Finding, Severity, line_col};

pub const TRACE_LOCKS_RULE: &str = "trace-locks";
pub const TRACE_REWRITE_RULE: &str = "trace-rewrite";
pub const TRACE_SKIPPED_RULE: &str = "trace-skipped";
pub const TRACE_FAILED_RULE: &str = "trace-failed";

/// A relation lock held by this session: (relation, relation kind, mode).
type HeldLock = (String, String, String);

/// Traces one migration file. Each file gets its own transaction, so the
/// database is left exactly as it was; a migration that depends on an earlier
/// one needs a scratch database with the earlier ones applied.
pub async fn trace_file(
    database_url: &str,
    display: &str,
    text: &str,
    statements: &[Statement],
) -> Result<Vec<Finding>> {
    let mut conn = PgConnection::connect(database_url)
        .await
        .with_context(|| format!("connecting to {} for --trace", redact(database_url)))?;
    sqlx::raw_sql("BEGIN").execute(&mut conn).await.context("BEGIN")?;
    // A trace must never itself stall a live table: if the migration has to
    // wait for a lock, give up quickly instead of queueing everyone behind us.
    sqlx::raw_sql("SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '120s'")
        .execute(&mut conn)
        .await
        .context("setting trace timeouts")?;
    let result = trace_statements(&mut conn, display, text, statements).await;
    // Roll back whatever happened; an error above leaves the transaction
    // aborted, and ROLLBACK clears that too.
    sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.context("ROLLBACK")?;
    result
}

async fn trace_statements(
    conn: &mut PgConnection,
    display: &str,
    text: &str,
    statements: &[Statement],
) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let mut held = held_locks(conn).await?;
    let mut filenodes = relfilenodes(conn).await?;
    for stmt in statements {
        // The file's own transaction control would commit our trace.
        if matches!(
            stmt.kind,
            StatementKind::Begin | StatementKind::Commit | StatementKind::Rollback
        ) {
            continue;
        }
        let (line, col) = line_col(text, stmt.start);
        let at = |f: Finding| f.at(display, Some(line), Some(col));
        if stmt.needs_no_transaction {
            findings.push(at(Finding::new(
                Severity::Note,
                TRACE_SKIPPED_RULE,
                "not traced: this statement cannot run inside a transaction block",
            )));
            continue;
        }
        let sql = text.get(stmt.start..stmt.end).unwrap_or_default().to_string();
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
            findings.push(at(Finding::new(
                Severity::Warning,
                TRACE_FAILED_RULE,
                format!("trace stopped: the statement failed in the scratch database: {e}"),
            )));
            break;
        }
        let now_held = held_locks(conn).await?;
        let new: Vec<String> = now_held
            .difference(&held)
            .map(|(rel, kind, mode)| format!("{mode} on {kind} {rel}"))
            .collect();
        if !new.is_empty() {
            findings.push(at(Finding::new(
                Severity::Note,
                TRACE_LOCKS_RULE,
                format!("took {}", new.join(", ")),
            )));
        }
        held = now_held;
        let now_nodes = relfilenodes(conn).await?;
        for (table, before) in &filenodes {
            if let Some(after) = now_nodes.get(table)
                && after != before
            {
                findings.push(at(Finding::new(
                    Severity::Warning,
                    TRACE_REWRITE_RULE,
                    format!("rewrote table {table} (relfilenode {before} -> {after})"),
                )));
            }
        }
        filenodes = now_nodes;
    }
    Ok(findings)
}

/// Relation locks granted to this backend outside the system catalogues.
async fn held_locks(conn: &mut PgConnection) -> Result<BTreeSet<HeldLock>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname,
                CASE c.relkind WHEN 'i' THEN 'index' WHEN 'I' THEN 'index'
                               WHEN 'S' THEN 'sequence' WHEN 'm' THEN 'materialized view'
                               WHEN 'v' THEN 'view' ELSE 'table' END,
                l.mode
           FROM pg_locks l
           JOIN pg_class c ON c.oid = l.relation
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE l.pid = pg_backend_pid()
            AND l.locktype = 'relation'
            AND l.granted
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%'",
    )
    .fetch_all(&mut *conn)
    .await
    .context("reading pg_locks")?;
    Ok(rows.into_iter().collect())
}

/// The storage file of every user table; a new one means the table was
/// rewritten.
async fn relfilenodes(conn: &mut PgConnection) -> Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, c.relfilenode::int8
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'm')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%'",
    )
    .fetch_all(&mut *conn)
    .await
    .context("reading pg_class.relfilenode")?;
    Ok(rows.into_iter().collect())
}
