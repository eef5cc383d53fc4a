//! The operational event journal: facts about the running service (breaker
//! transitions first), written by the service's journal task and read back
//! by operators and `holdfast postmortem` to draft an incident timeline.
//!
//! Entries are written on the worker pool, never by a request, and read on
//! the read pool, so the journal competes with neither checkouts nor the
//! `GET` endpoints.
//!
//! Both backends run the same SQL ([`impl_journal!`]); nothing here is per
//! backend. On SQLite `at` is RFC 3339 text in UTC, as sqlx writes every time
//! there, so comparing the text compares the times.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;

/// An entry to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJournalEntry {
    /// When it happened (not when it was written).
    pub at: DateTime<Utc>,
    /// `breaker`, `journal`, …
    pub kind: String,
    /// What it is about, e.g. the dependency `payments`.
    pub subject: String,
    /// One human line.
    pub summary: String,
    pub detail: serde_json::Value,
    /// The process that saw it: hostname:pid or its listen address.
    pub node: String,
}

/// An entry as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    /// Write order; entries are listed by `at`, then `seq`.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub subject: String,
    pub summary: String,
    pub detail: serde_json::Value,
    pub node: String,
}

/// Which entries to list: `[since, until)`, of one kind or all, oldest
/// first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalQuery {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub kind: Option<String>,
    pub limit: i64,
}

#[async_trait]
pub trait Journal: Send + Sync {
    /// Writes `entries` in one transaction (all or none), on the worker pool.
    async fn record(&self, entries: &[NewJournalEntry]) -> Result<()>;

    /// Entries matching `query`, oldest first (by `at`, then `seq`).
    async fn list(&self, query: &JournalQuery) -> Result<Vec<JournalEntry>>;
}

/// The columns `JournalRow` reads.
macro_rules! journal_columns {
    () => {
        "seq, at, kind, subject, summary, detail, node"
    };
}

#[derive(sqlx::FromRow)]
pub(crate) struct JournalRow {
    seq: i64,
    at: DateTime<Utc>,
    kind: String,
    subject: String,
    summary: String,
    detail: String,
    node: String,
}

impl TryFrom<JournalRow> for JournalEntry {
    type Error = crate::StoreError;

    fn try_from(row: JournalRow) -> Result<Self> {
        Ok(JournalEntry {
            detail: serde_json::from_str(&row.detail)
                .map_err(|_| crate::error::corrupt("journal detail", &row.seq.to_string()))?,
            seq: row.seq,
            at: row.at,
            kind: row.kind,
            subject: row.subject,
            summary: row.summary,
            node: row.node,
        })
    }
}

/// `Journal` for a backend's store: the same SQL on both. See the crate's
/// docs for what a backend provides (`begin_write`, the `read` and `worker`
/// pools).
macro_rules! impl_journal {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::Journal for $store {
            async fn record(&self, entries: &[$crate::NewJournalEntry]) -> $crate::Result<()> {
                if entries.is_empty() {
                    return Ok(());
                }
                let mut tx = begin_write(&self.worker).await?;
                for entry in entries {
                    sqlx::query(
                        "INSERT INTO ops_journal (at, kind, subject, summary, detail, node) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(entry.at)
                    .bind(&entry.kind)
                    .bind(&entry.subject)
                    .bind(&entry.summary)
                    .bind(entry.detail.to_string())
                    .bind(&entry.node)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn list(&self, query: &$crate::JournalQuery) -> $crate::Result<Vec<$crate::JournalEntry>> {
                let rows: Vec<$crate::journal::JournalRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    journal_columns!(),
                    " FROM ops_journal WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) ",
                    "AND ($3 IS NULL OR kind = $3) ORDER BY at, seq LIMIT $4"
                ))
                .bind(query.since)
                .bind(query.until)
                .bind(query.kind.as_deref())
                .bind(query.limit)
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map($crate::JournalEntry::try_from).collect()
            }
        }
    };
}
