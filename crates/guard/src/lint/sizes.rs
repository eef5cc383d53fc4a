//! Table sizes from the planner's statistics (`pg_class.reltuples`), used to
//! weigh a blocking lock by how long it will be held.
//!
//! `reltuples` is an estimate kept by `ANALYZE` and autovacuum; it costs one
//! catalogue lookup, where `count(*)` would scan the very table we worry about.

use std::collections::HashMap;

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection};

use super::statements::TableName;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TableSize {
    Rows(i64),
    /// The table exists but has never been analysed (`reltuples = -1`).
    NeverAnalyzed,
    NotFound,
    /// No `--database-url` was given.
    NoDatabase,
}

/// Looks sizes up once per table and remembers them across files.
pub struct SizeLookup {
    conn: Option<PgConnection>,
    cache: HashMap<TableName, TableSize>,
}

impl SizeLookup {
    pub async fn connect(database_url: Option<&str>) -> Result<SizeLookup> {
        let conn = match database_url {
            Some(url) => Some(
                PgConnection::connect(url)
                    .await
                    .with_context(|| format!("connecting to {}", redact(url)))?,
            ),
            None => None,
        };
        Ok(SizeLookup {
            conn,
            cache: HashMap::new(),
        })
    }

    pub async fn size(&mut self, table: &TableName) -> Result<TableSize> {
        if let Some(size) = self.cache.get(table) {
            return Ok(*size);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(TableSize::NoDatabase);
        };
        // Without a schema, resolve the name the way the migration would:
        // through the search path (`pg_table_is_visible`).
        let row: Option<(f64,)> = sqlx::query_as(
            "SELECT c.reltuples::float8
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relname = $1
                AND c.relkind IN ('r', 'p', 'm')
                AND (($2::text IS NULL AND pg_table_is_visible(c.oid)) OR n.nspname = $2)
              LIMIT 1",
        )
        .bind(&table.name)
        .bind(table.schema.as_deref())
        .fetch_optional(&mut *conn)
        .await
        .with_context(|| format!("reading pg_class.reltuples for {table}"))?;
        let size = match row {
            None => TableSize::NotFound,
            Some((n,)) if n < 0.0 => TableSize::NeverAnalyzed,
            Some((n,)) => TableSize::Rows(n.round() as i64),
        };
        self.cache.insert(table.clone(), size);
        Ok(size)
    }
}

/// Hides the password of a connection URL before it goes into a message.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable database url>".to_string(),
    }
}

/// Groups digits so that 1250000 reads as 1,250,000 in a message.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_250_000), "1,250,000");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@db:5432/x"), "postgres://u:***@db:5432/x");
    }
}
