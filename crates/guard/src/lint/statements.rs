//! A per-statement index of a parsed migration: where each statement sits, the
//! table it targets, the blocking lock it holds for a time proportional to the
//! table's size, and the `-- holdfast-ignore` comments that apply to it.
//!
//! squawk's rules say *that* a statement is dangerous; this index says *which
//! table* it hurts, so the linter can weigh the danger by the table's size.

use squawk_syntax::ast::{self, AstNode};
use squawk_syntax::{Parse, SourceFile, SyntaxKind, SyntaxNode};

/// A possibly schema-qualified table name, normalised the way Postgres folds
/// identifiers: unquoted parts are lower-cased, quoted parts kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Parses `schema.table`, `"Schema"."Table"` or `table` as written in SQL.
    pub fn from_sql(text: &str) -> Option<TableName> {
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut quoted = false;
        let mut was_quoted = false;
        for ch in text.trim().chars() {
            match ch {
                '"' => {
                    quoted = !quoted;
                    was_quoted = true;
                }
                '.' if !quoted => {
                    parts.push(fold(&current, was_quoted));
                    current.clear();
                    was_quoted = false;
                }
                c if !quoted && c.is_whitespace() => {}
                c => current.push(c),
            }
        }
        parts.push(fold(&current, was_quoted));
        let name = parts.pop().filter(|n| !n.is_empty())?;
        Some(TableName {
            schema: parts.pop(),
            name,
        })
    }
}

fn fold(part: &str, quoted: bool) -> String {
    if quoted { part.to_string() } else { part.to_lowercase() }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A lock that blocks other sessions for as long as the statement works
/// through the whole table (index build, scan or rewrite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingLock {
    /// Postgres lock mode, e.g. `SHARE` or `ACCESS EXCLUSIVE`.
    pub mode: &'static str,
    /// What the statement does while holding it, e.g. "builds an index".
    pub work: &'static str,
    /// The statement form, e.g. `CREATE INDEX`.
    pub form: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Begin,
    Commit,
    Rollback,
    CreateTable,
    Other,
}

#[derive(Debug, Clone)]
pub struct Statement {
    /// Byte offset of the first non-trivia token.
    pub start: usize,
    pub end: usize,
    pub kind: StatementKind,
    pub table: Option<TableName>,
    pub blocking: Option<BlockingLock>,
    /// `CONCURRENTLY` forms and `VACUUM` refuse to run inside a transaction
    /// block, so the tracer cannot run them.
    pub needs_no_transaction: bool,
    /// Rules silenced by a `-- holdfast-ignore` comment just before it.
    pub ignored: Vec<String>,
}

impl Statement {
    pub fn contains(&self, offset: usize) -> bool {
        self.start <= offset && offset < self.end.max(self.start + 1)
    }

    pub fn is_ignored(&self, rule: &str) -> bool {
        self.ignored.iter().any(|r| r == rule || r == "all")
    }
}

/// The comment marker that silences rules for the next statement.
pub const IGNORE_MARKER: &str = "holdfast-ignore";

/// Builds the index for a parsed file.
pub fn index(parse: &Parse<SourceFile>) -> Vec<Statement> {
    let file = parse.tree();
    let mut statements: Vec<Statement> = file
        .stmts()
        .map(|stmt| {
            let node = stmt.syntax();
            let start = first_token_offset(node);
            Statement {
                start,
                end: usize::from(node.text_range().end()),
                kind: kind_of(&stmt),
                table: target_table(&stmt),
                blocking: blocking_lock(&stmt),
                needs_no_transaction: matches!(stmt, ast::Stmt::Vacuum(_)) || mentions(node, "concurrently"),
                ignored: Vec::new(),
            }
        })
        .collect();
    attach_ignores(file.syntax(), &mut statements);
    statements
}

fn first_token_offset(node: &SyntaxNode) -> usize {
    node.descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .find(|t| !t.kind().is_trivia())
        .map_or_else(
            || usize::from(node.text_range().start()),
            |t| usize::from(t.text_range().start()),
        )
}

/// Each ignore comment applies to the first statement that starts after it.
fn attach_ignores(root: &SyntaxNode, statements: &mut [Statement]) {
    for token in root
        .descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .filter(|t| t.kind() == SyntaxKind::COMMENT)
    {
        let Some(rules) = parse_ignore(token.text()) else {
            continue;
        };
        let after = usize::from(token.text_range().end());
        if let Some(stmt) = statements.iter_mut().find(|s| s.start >= after) {
            stmt.ignored.extend(rules);
        }
    }
}

/// `-- holdfast-ignore rule-a, rule-b` → `["rule-a", "rule-b"]`.
fn parse_ignore(comment: &str) -> Option<Vec<String>> {
    let body = comment
        .strip_prefix("--")
        .or_else(|| comment.strip_prefix("/*").and_then(|c| c.strip_suffix("*/")))?;
    let rest = body.trim().strip_prefix(IGNORE_MARKER)?;
    let rules: Vec<String> = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    Some(if rules.is_empty() {
        vec!["all".to_string()]
    } else {
        rules
    })
}

fn kind_of(stmt: &ast::Stmt) -> StatementKind {
    match stmt {
        ast::Stmt::Begin(_) => StatementKind::Begin,
        ast::Stmt::Commit(_) => StatementKind::Commit,
        ast::Stmt::Rollback(_) => StatementKind::Rollback,
        ast::Stmt::CreateTable(_) => StatementKind::CreateTable,
        _ => StatementKind::Other,
    }
}

fn text_of(node: &impl AstNode) -> Option<TableName> {
    TableName::from_sql(&node.syntax().text().to_string())
}

/// The first path in a node, in source order; the outermost one carries the
/// full `schema.table` text.
fn first_path(node: &SyntaxNode) -> Option<TableName> {
    node.descendants()
        .find(|n| ast::PathRef::can_cast(n.kind()) || ast::Path::can_cast(n.kind()))
        .and_then(|n| TableName::from_sql(&n.text().to_string()))
}

fn target_table(stmt: &ast::Stmt) -> Option<TableName> {
    match stmt {
        ast::Stmt::CreateIndex(s) => s
            .table_relation_name()
            .and_then(|r| r.table_name_ref())
            .and_then(|t| t.path_ref())
            .and_then(|p| text_of(&p)),
        ast::Stmt::AlterTable(s) => s
            .table_relation_name()
            .and_then(|r| r.table_name_ref())
            .and_then(|t| t.path_ref())
            .and_then(|p| text_of(&p)),
        ast::Stmt::CreateTable(s) => s.table_name().and_then(|t| t.path()).and_then(|p| text_of(&p)),
        ast::Stmt::Cluster(s) => s.table_name_ref().and_then(|t| t.path_ref()).and_then(|p| text_of(&p)),
        ast::Stmt::Vacuum(s) => s.table_and_columns_list().and_then(|l| first_path(l.syntax())),
        ast::Stmt::Refresh(s) => s.view_ref().and_then(|v| first_path(v.syntax())),
        ast::Stmt::Reindex(s) => s.reindex_target().and_then(|t| first_path(t.syntax())),
        _ => None,
    }
}

fn has_child(node: &SyntaxNode, kind: SyntaxKind) -> bool {
    node.descendants().any(|n| n.kind() == kind)
}

fn mentions(node: &SyntaxNode, word: &str) -> bool {
    node.descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .any(|t| t.text().eq_ignore_ascii_case(word))
}

/// Classifies the statement forms whose lock lasts as long as the work on the
/// table. Brief `ACCESS EXCLUSIVE` locks (a nullable `ADD COLUMN`, a rename)
/// are left out on purpose: their cost does not grow with the table.
fn blocking_lock(stmt: &ast::Stmt) -> Option<BlockingLock> {
    let lock = |mode, work, form| Some(BlockingLock { mode, work, form });
    match stmt {
        ast::Stmt::CreateIndex(s) if s.concurrently_token().is_none() => {
            lock("SHARE", "builds an index", "CREATE INDEX")
        }
        ast::Stmt::AlterTable(s) => s.actions().find_map(|a| alter_action_lock(&a)),
        ast::Stmt::Cluster(_) => lock("ACCESS EXCLUSIVE", "rewrites the table", "CLUSTER"),
        ast::Stmt::Vacuum(s)
            if s.full_token().is_some() || s.vacuum_option_list().is_some_and(|o| mentions(o.syntax(), "full")) =>
        {
            lock("ACCESS EXCLUSIVE", "rewrites the table", "VACUUM FULL")
        }
        ast::Stmt::Refresh(s) if s.concurrently_token().is_none() => {
            lock("ACCESS EXCLUSIVE", "recomputes the view", "REFRESH MATERIALIZED VIEW")
        }
        ast::Stmt::Reindex(s) if !mentions(s.syntax(), "concurrently") => lock("SHARE", "rebuilds indexes", "REINDEX"),
        _ => None,
    }
}

fn alter_action_lock(action: &ast::AlterTableAction) -> Option<BlockingLock> {
    let lock = |mode, work, form| Some(BlockingLock { mode, work, form });
    match action {
        ast::AlterTableAction::AlterColumn(c) => match c.option()? {
            ast::AlterColumnOption::SetType(_) => lock(
                "ACCESS EXCLUSIVE",
                "rewrites the table",
                "ALTER TABLE … ALTER COLUMN … TYPE",
            ),
            ast::AlterColumnOption::SetNotNull(_) => {
                lock("ACCESS EXCLUSIVE", "scans the table", "ALTER TABLE … SET NOT NULL")
            }
            _ => None,
        },
        ast::AlterTableAction::AddConstraint(c) => {
            let not_valid = has_child(c.syntax(), SyntaxKind::NOT_VALID);
            let using_index = has_child(c.syntax(), SyntaxKind::USING_INDEX);
            match c.constraint()? {
                ast::Constraint::ForeignKeyConstraint(_) | ast::Constraint::ReferencesConstraint(_) if !not_valid => {
                    lock(
                        "SHARE ROW EXCLUSIVE",
                        "scans the table",
                        "ALTER TABLE … ADD FOREIGN KEY",
                    )
                }
                ast::Constraint::CheckConstraint(_) if !not_valid => {
                    lock("ACCESS EXCLUSIVE", "scans the table", "ALTER TABLE … ADD CHECK")
                }
                ast::Constraint::PrimaryKeyConstraint(_) | ast::Constraint::UniqueConstraint(_) if !using_index => {
                    lock(
                        "ACCESS EXCLUSIVE",
                        "builds an index",
                        "ALTER TABLE … ADD PRIMARY KEY/UNIQUE",
                    )
                }
                ast::Constraint::ExcludeConstraint(_) => {
                    lock("ACCESS EXCLUSIVE", "builds an index", "ALTER TABLE … ADD EXCLUDE")
                }
                _ => None,
            }
        }
        ast::AlterTableAction::SetTablespace(_) => {
            lock("ACCESS EXCLUSIVE", "rewrites the table", "ALTER TABLE … SET TABLESPACE")
        }
        ast::AlterTableAction::SetLogged(_) | ast::AlterTableAction::SetUnlogged(_) => lock(
            "ACCESS EXCLUSIVE",
            "rewrites the table",
            "ALTER TABLE … SET LOGGED/UNLOGGED",
        ),
        ast::AlterTableAction::SetAccessMethod(_) => lock(
            "ACCESS EXCLUSIVE",
            "rewrites the table",
            "ALTER TABLE … SET ACCESS METHOD",
        ),
        _ => None,
    }
}

/// Tables created by a `CREATE TABLE` that comes before `offset` in the file.
pub fn created_before(statements: &[Statement], offset: usize) -> Vec<&TableName> {
    statements
        .iter()
        .filter(|s| s.kind == StatementKind::CreateTable && s.end <= offset)
        .filter_map(|s| s.table.as_ref())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_identifiers_like_postgres() {
        let t = TableName::from_sql(r#"Public."StockReservations""#);
        assert_eq!(
            t,
            Some(TableName {
                schema: Some("public".into()),
                name: "StockReservations".into()
            })
        );
    }

    #[test]
    fn ignore_comment_lists_rules() {
        assert_eq!(
            parse_ignore("-- holdfast-ignore a, b"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(parse_ignore("-- just a comment"), None);
    }
}
