//! The Postgres migration linter: squawk's rules, weighed by the size of the
//! table each statement locks, plus an optional trace of the locks a migration
//! really takes.
//!
//! squawk knows which statement forms are dangerous; it does not know that
//! `CREATE INDEX` on a 10-row lookup table is harmless while the same statement
//! on a busy `stock_reservations` blocks every checkout until it ends. This
//! module adds that knowledge: squawk's lock rules and our own `blocking-lock`
//! rule are errors on a table above `--large-table-rows` (or of unknown size)
//! and warnings on a small table or one the same migration created.

pub mod sizes;
pub mod statements;
pub mod trace;

use std::path::{Path, PathBuf};

use anyhow::Result;
use squawk_linter::{Linter, Rule, Violation};
use squawk_syntax::SourceFile;

use crate::output::{Finding, PARSE_ERROR_RULE, Severity, line_col};
use sizes::{SizeLookup, TableSize, thousands};
use statements::{Statement, TableName};

/// Our own rule for long blocking locks that squawk did not flag.
pub const BLOCKING_LOCK_RULE: &str = "blocking-lock";

/// squawk rules whose danger is a lock held while the whole table is read,
/// rewritten or indexed: their severity depends on the table's size.
const LOCK_RULES: &[Rule] = &[
    Rule::RequireConcurrentIndexCreation,
    Rule::AddingFieldWithDefault,
    Rule::ChangingColumnType,
    Rule::ConstraintMissingNotValid,
    Rule::AddingForeignKeyConstraint,
    Rule::AddingNotNullableField,
    Rule::DisallowedUniqueConstraint,
    Rule::AddingSerialPrimaryKeyField,
    Rule::RequireConcurrentReindex,
    Rule::PreferRepack,
];

/// squawk rules left out. Timeouts belong to the session that runs the
/// migrations (the runner sets `lock_timeout` and `statement_timeout` once),
/// not to every file; requiring them per file would flag every statement,
/// including the safe `CONCURRENTLY` forms.
const EXCLUDED_RULES: &[Rule] = &[Rule::RequireLockTimeout, Rule::RequireStatementTimeout];

/// squawk rules about schema style rather than safety: worth a warning, not a
/// failed deploy.
const STYLE_RULES: &[Rule] = &[
    Rule::PreferBigintOverInt,
    Rule::PreferBigintOverSmallint,
    Rule::PreferIdentity,
    Rule::PreferRobustStmts,
    Rule::PreferTextField,
    Rule::PreferTimestampTz,
    Rule::BanCharField,
    Rule::IdentifierTooLong,
];

#[derive(Debug, Clone)]
pub struct LintOptions {
    pub paths: Vec<PathBuf>,
    pub database_url: Option<String>,
    pub large_table_rows: i64,
    pub trace: bool,
}

/// Lints every `.sql` file under `paths`, in path order.
pub async fn lint(options: &LintOptions) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let files = collect_files(&options.paths, &mut findings);
    let mut sizes = SizeLookup::connect(options.database_url.as_deref()).await?;
    for file in files {
        let display = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                findings.push(
                    Finding::new(Severity::Error, PARSE_ERROR_RULE, format!("cannot read: {e}"))
                        .at(&display, None, None),
                );
                continue;
            }
        };
        let Some(file_findings) = lint_text(&display, &text, options, &mut sizes).await? else {
            findings.extend(parse_errors(&display, &text));
            continue;
        };
        findings.extend(file_findings);
        if options.trace
            && let Some(url) = &options.database_url
        {
            let parse = SourceFile::parse(&text);
            let statements = statements::index(&parse);
            findings.extend(trace::trace_file(url, &display, &text, &statements).await?);
        }
    }
    if options.trace && options.database_url.is_none() {
        findings.push(Finding::new(
            Severity::Error,
            "trace",
            "--trace needs --database-url (a scratch database the migration can run in)",
        ));
    }
    Ok(findings)
}

/// Expands directories to the `.sql` files inside them (recursively, sorted,
/// because migration order is file-name order).
fn collect_files(paths: &[PathBuf], findings: &mut Vec<Finding>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk_sql(path, &mut found, findings);
            found.sort();
            out.extend(found);
        } else if path.exists() {
            out.push(path.clone());
        } else {
            findings.push(
                Finding::new(Severity::Error, PARSE_ERROR_RULE, "no such file or directory").at(
                    path.display().to_string(),
                    None,
                    None,
                ),
            );
        }
    }
    out
}

fn walk_sql(dir: &Path, found: &mut Vec<PathBuf>, findings: &mut Vec<Finding>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            findings.push(
                Finding::new(Severity::Error, PARSE_ERROR_RULE, format!("cannot list: {e}")).at(
                    dir.display().to_string(),
                    None,
                    None,
                ),
            );
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk_sql(&path, found, findings);
        } else if path.extension().is_some_and(|e| e == "sql") {
            found.push(path);
        }
    }
}

/// squawk's parser recovers from errors and reports many follow-on ones; the
/// first one is where the author has to look.
fn parse_errors(display: &str, text: &str) -> Vec<Finding> {
    let parse = SourceFile::parse(text);
    parse
        .errors()
        .first()
        .map(|err| {
            let (line, col) = line_col(text, usize::from(err.range().start()));
            Finding::new(
                Severity::Error,
                PARSE_ERROR_RULE,
                format!("syntax error at line {line}: {}", err.message()),
            )
            .at(display, Some(line), Some(col))
        })
        .into_iter()
        .collect()
}

/// Lints one file's text; `None` when it does not parse.
pub async fn lint_text(
    display: &str,
    text: &str,
    options: &LintOptions,
    sizes: &mut SizeLookup,
) -> Result<Option<Vec<Finding>>> {
    let parse = SourceFile::parse(text);
    if !parse.errors().is_empty() {
        return Ok(None);
    }
    let statements = statements::index(&parse);
    let violations = Linter::with_rules(&[], EXCLUDED_RULES).lint(&parse, text);
    let mut findings = Vec::new();
    let mut lock_flagged = vec![false; statements.len()];
    for violation in violations {
        let start = usize::from(violation.text_range.start());
        let stmt_index = statements.iter().position(|s| s.contains(start));
        let stmt = stmt_index.map(|i| &statements[i]);
        let is_lock_rule = LOCK_RULES.contains(&violation.code);
        // A lock rule, even an ignored one, has spoken for this statement:
        // `blocking-lock` must not repeat it (or undo the ignore).
        if is_lock_rule && let Some(i) = stmt_index {
            lock_flagged[i] = true;
        }
        if stmt.is_some_and(|s| s.is_ignored(&violation.code.to_string())) {
            continue;
        }
        let (line, col) = line_col(text, start);
        let finding = if is_lock_rule {
            let verdict = weigh(stmt, &statements, options, sizes).await?;
            squawk_finding(&violation, verdict.severity, Some(&verdict.explanation))
        } else if STYLE_RULES.contains(&violation.code) {
            squawk_finding(&violation, Severity::Warning, None)
        } else {
            squawk_finding(&violation, Severity::Error, None)
        };
        findings.push(finding.at(display, Some(line), Some(col)));
    }
    for (i, stmt) in statements.iter().enumerate() {
        let Some(lock) = &stmt.blocking else { continue };
        if lock_flagged[i] || stmt.is_ignored(BLOCKING_LOCK_RULE) {
            continue;
        }
        let verdict = weigh(Some(stmt), &statements, options, sizes).await?;
        let table = stmt
            .table
            .as_ref()
            .map_or_else(|| "its table".to_string(), ToString::to_string);
        let (line, col) = line_col(text, stmt.start);
        findings.push(
            Finding::new(
                verdict.severity,
                BLOCKING_LOCK_RULE,
                format!(
                    "{} holds {} on {table} while it {}. {}",
                    lock.form, lock.mode, lock.work, verdict.explanation
                ),
            )
            .at(display, Some(line), Some(col)),
        );
    }
    findings.sort_by_key(|f| (f.line, f.column));
    Ok(Some(findings))
}

fn squawk_finding(v: &Violation, severity: Severity, size: Option<&str>) -> Finding {
    let message = match size {
        Some(size) => format!("{} {size}", v.message),
        None => v.message.clone(),
    };
    let finding = Finding::new(severity, v.code.to_string(), message);
    match &v.help {
        Some(h) => finding.with_help(h.clone()),
        None => finding,
    }
}

struct Verdict {
    severity: Severity,
    explanation: String,
}

/// Decides how bad a blocking lock is from the size of the table it locks.
async fn weigh(
    stmt: Option<&Statement>,
    statements: &[Statement],
    options: &LintOptions,
    sizes: &mut SizeLookup,
) -> Result<Verdict> {
    let threshold = options.large_table_rows;
    let Some((stmt, table)) = stmt.and_then(|s| s.table.as_ref().map(|t| (s, t))) else {
        return Ok(Verdict {
            severity: Severity::Error,
            explanation: "The target table is unknown, so it counts as large.".into(),
        });
    };
    if statements::created_before(statements, stmt.start)
        .iter()
        .any(|created| same_table(created, table))
    {
        return Ok(Verdict {
            severity: Severity::Warning,
            explanation: format!("{table} is created earlier in this migration, so it is empty."),
        });
    }
    let (severity, explanation) = match sizes.size(table).await? {
        TableSize::Rows(n) if n > threshold => (
            Severity::Error,
            format!(
                "{table} has ~{} rows, above the large-table threshold of {}.",
                thousands(n),
                thousands(threshold)
            ),
        ),
        TableSize::Rows(n) => (
            Severity::Warning,
            format!(
                "{table} has ~{} rows, within the large-table threshold of {}.",
                thousands(n),
                thousands(threshold)
            ),
        ),
        TableSize::NeverAnalyzed => (
            Severity::Error,
            format!("{table} has never been analysed, so its size is unknown and it counts as large."),
        ),
        TableSize::NotFound => (
            Severity::Error,
            format!("{table} was not found in the database, so its size is unknown and it counts as large."),
        ),
        TableSize::NoDatabase => (
            Severity::Error,
            format!("The size of {table} is unknown without --database-url, so it counts as large."),
        ),
    };
    Ok(Verdict { severity, explanation })
}

/// An unqualified name matches a qualified one: the migration created it in
/// its search path.
fn same_table(a: &TableName, b: &TableName) -> bool {
    a.name == b.name && (a.schema.is_none() || b.schema.is_none() || a.schema == b.schema)
}
