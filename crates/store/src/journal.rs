//! The operational event journal: facts about the running service (breaker
//! transitions first), written by the service's journal task and read back
//! by operators and `holdfast postmortem` to draft an incident timeline.
//!
//! Entries are written on the worker pool, never by a request, and read on
//! the read pool, so the journal competes with neither checkouts nor the
//! `GET` endpoints.

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
