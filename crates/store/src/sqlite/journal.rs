//! The operational event journal on SQLite. `at` is RFC 3339 text in UTC,
//! as sqlx writes every time here, so comparing the text compares the times.

use async_trait::async_trait;

use super::{SqliteStore, begin_write};
use crate::journal::JournalRow;
use crate::{Journal, JournalEntry, JournalQuery, NewJournalEntry, Result};

#[async_trait]
impl Journal for SqliteStore {
    async fn record(&self, entries: &[NewJournalEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = begin_write(&self.worker).await?;
        for entry in entries {
            sqlx::query(
                "INSERT INTO ops_journal (at, kind, subject, summary, detail, node) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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

    async fn list(&self, query: &JournalQuery) -> Result<Vec<JournalEntry>> {
        let rows: Vec<JournalRow> = sqlx::query_as(concat!(
            "SELECT ",
            journal_columns!(),
            " FROM ops_journal WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at < ?2) ",
            "AND (?3 IS NULL OR kind = ?3) ORDER BY at, seq LIMIT ?4"
        ))
        .bind(query.since)
        .bind(query.until)
        .bind(query.kind.as_deref())
        .bind(query.limit)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(JournalEntry::try_from).collect()
    }
}
