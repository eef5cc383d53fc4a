//! Migration linter fixtures: each is a small migration, the table sizes the
//! database reports (if any), and the reviewed output.

use holdfast_guard::lint::{self, LintOptions};
use holdfast_guard::output::{self, Format};

use crate::support::{ScratchDb, scrub, write_files};

/// Lints `sql` as `V2__change.sql` and renders the result with its exit code.
async fn check_with(sql: &str, db: Option<&ScratchDb>, trace: bool, format: Format) -> (String, i32) {
    let (dir, paths) = write_files(&[("V2__change.sql", sql)]);
    let options = LintOptions {
        paths,
        database_url: db.map(|d| d.url.clone()),
        large_table_rows: 100_000,
        trace,
    };
    let findings = lint::lint(&options).await.expect("lint runs");
    let code = output::exit_code(&findings);
    let text = output::render(format, "holdfast lint-migrations", &findings);
    // Storage file numbers differ between runs; the fact of a rewrite does not.
    let relfilenode = regex::Regex::new(r"relfilenode \d+ -> \d+").expect("valid regex");
    let text = relfilenode.replace_all(&text, "relfilenode N -> M");
    (format!("exit {code}\n{}", scrub(&text, dir.path())), code)
}

async fn check(sql: &str) -> (String, i32) {
    check_with(sql, None, false, Format::Human).await
}

const PLAIN_INDEX_BUILD: &str =
    "-- a plain index build\nCREATE INDEX idx_reservations_expiry\n    ON stock_reservations (expires_at);\n";

/// A `stock_reservations` table with `rows` rows, analysed so that
/// `pg_class.reltuples` knows its size.
async fn reservations(rows: i64) -> Option<ScratchDb> {
    let db = ScratchDb::create().await?;
    db.execute(&format!(
        "CREATE TABLE stock_reservations (id bigint PRIMARY KEY, sku text NOT NULL, qty int NOT NULL, expires_at timestamptz NOT NULL);
         INSERT INTO stock_reservations SELECT g, 'SKU-' || (g % 500), 1, now() + interval '15 minutes'
           FROM generate_series(1, {rows}) g;
         ANALYZE stock_reservations;"
    ))
    .await;
    Some(db)
}

#[tokio::test]
async fn plain_index_build_without_a_database_counts_as_large() {
    let (out, code) = check(PLAIN_INDEX_BUILD).await;
    assert_eq!(code, 1);
    insta::assert_snapshot!(out);
}

#[tokio::test]
async fn plain_index_build_on_a_large_table_is_an_error() {
    let Some(db) = reservations(150_000).await else {
        return;
    };
    let (out, code) = check_with(PLAIN_INDEX_BUILD, Some(&db), false, Format::Human).await;
    assert_eq!(code, 1);
    assert!(out.contains("~150,000 rows"), "{out}");
    insta::assert_snapshot!(out);
}

#[tokio::test]
async fn plain_index_build_on_a_small_table_is_a_warning() {
    let Some(db) = reservations(200).await else {
        return;
    };
    let (out, code) = check_with(PLAIN_INDEX_BUILD, Some(&db), false, Format::Human).await;
    assert_eq!(code, 0);
    assert!(out.contains("warning [require-concurrent-index-creation]"), "{out}");
    insta::assert_snapshot!(out);
}

#[tokio::test]
async fn unknown_table_counts_as_large() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let (out, code) = check_with(PLAIN_INDEX_BUILD, Some(&db), false, Format::Human).await;
    assert_eq!(code, 1);
    assert!(out.contains("was not found in the database"), "{out}");
}

#[tokio::test]
async fn fixtures() {
    let cases: &[(&str, &str, i32)] = &[
        (
            "concurrently",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_reservations_expiry ON stock_reservations (expires_at);\n",
            0,
        ),
        (
            "concurrently_in_transaction",
            "BEGIN;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS idx_reservations_expiry ON stock_reservations (expires_at);\nCOMMIT;\n",
            1,
        ),
        (
            "volatile_default",
            "ALTER TABLE orders ADD COLUMN public_token uuid DEFAULT gen_random_uuid();\n",
            1,
        ),
        (
            "set_not_null",
            "ALTER TABLE orders ALTER COLUMN email SET NOT NULL;\n",
            1,
        ),
        (
            "foreign_key_without_not_valid",
            "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id);\n",
            1,
        ),
        (
            "foreign_key_not_valid_then_validate",
            "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id) NOT VALID;\nALTER TABLE orders VALIDATE CONSTRAINT orders_customer_fk;\n",
            0,
        ),
        (
            "index_on_table_created_in_same_file",
            "CREATE TABLE payment_attempts (id bigint PRIMARY KEY, order_id bigint NOT NULL);\nCREATE INDEX payment_attempts_order_idx ON payment_attempts (order_id);\n",
            0,
        ),
        (
            "cluster_is_ours",
            "-- holdfast-ignore prefer-repack\nCLUSTER stock_reservations USING stock_reservations_pkey;\n",
            1,
        ),
        (
            "ignore_comment",
            "-- holdfast-ignore require-concurrent-index-creation\nCREATE INDEX idx_reservations_expiry ON stock_reservations (expires_at);\n",
            0,
        ),
        (
            "ignore_only_next_statement",
            "-- holdfast-ignore require-concurrent-index-creation\nCREATE INDEX a_idx ON stock_reservations (sku);\nCREATE INDEX b_idx ON stock_reservations (qty);\n",
            1,
        ),
        (
            "parse_error",
            "CREATE TABLE t (id bigint PRIMARY KEY);\n\nALTER TABLE t ADD COLUMN;\n",
            2,
        ),
    ];
    for (name, sql, expected) in cases {
        let (out, code) = check(sql).await;
        assert_eq!(code, *expected, "{name}:\n{out}");
        insta::assert_snapshot!(*name, out);
    }
}

#[tokio::test]
async fn parse_error_names_file_and_line() {
    let (out, code) = check("SELECT 1;\nSELECT 2;\nCREAT INDEX oops ON t (c);\n").await;
    assert_eq!(code, 2);
    assert!(out.contains("V2__change.sql:3:"), "{out}");
}

#[tokio::test]
async fn output_formats() {
    for (name, format) in [
        ("format_json", Format::Json),
        ("format_github", Format::Github),
        ("format_sarif", Format::Sarif),
    ] {
        let (out, code) = check_with(PLAIN_INDEX_BUILD, None, false, format).await;
        assert_eq!(code, 1);
        insta::assert_snapshot!(name, out);
    }
}

#[tokio::test]
async fn trace_reports_the_share_lock_of_a_plain_index_build() {
    let Some(db) = reservations(1_000).await else {
        return;
    };
    let (out, _) = check_with(PLAIN_INDEX_BUILD, Some(&db), true, Format::Human).await;
    assert!(
        out.contains("trace-locks]: took") && out.contains("ShareLock on table public.stock_reservations"),
        "{out}"
    );
    insta::assert_snapshot!(out);
    // The trace rolled back: the index must not exist afterwards.
    let (again, _) = check_with(PLAIN_INDEX_BUILD, Some(&db), true, Format::Human).await;
    assert!(!again.contains("trace-failed"), "{again}");
}

#[tokio::test]
async fn trace_reports_a_table_rewrite() {
    let Some(db) = reservations(1_000).await else {
        return;
    };
    let sql = "ALTER TABLE stock_reservations ALTER COLUMN qty TYPE bigint;\n";
    let (out, code) = check_with(sql, Some(&db), true, Format::Human).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("AccessExclusiveLock on table public.stock_reservations"),
        "{out}"
    );
    assert!(out.contains("rewrote table public.stock_reservations"), "{out}");
    insta::assert_snapshot!(out);
}
