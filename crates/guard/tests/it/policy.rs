//! Policy checker fixtures: small deploy files (and baselines), the reviewed
//! output, and the exit code.

use std::path::PathBuf;

use holdfast_guard::output::{self, Format};
use holdfast_guard::policy::{self, PolicyOptions};

use crate::support::{repo_root, scrub, write_files};

struct Case<'a> {
    files: &'a [(&'a str, &'a str)],
    baselines: &'a [(&'a str, &'a str)],
    /// Written next to `files` (for `%include`) but not passed to the check.
    support: &'a [(&'a str, &'a str)],
    fleet_nodes: u32,
    policy_dir: Option<&'a [(&'a str, &'a str)]>,
}

impl<'a> Case<'a> {
    fn new(files: &'a [(&'a str, &'a str)]) -> Self {
        Case {
            files,
            baselines: &[],
            support: &[],
            fleet_nodes: 1,
            policy_dir: None,
        }
    }
    fn baseline(mut self, baselines: &'a [(&'a str, &'a str)]) -> Self {
        self.baselines = baselines;
        self
    }
}

/// Runs `policy check` over the case's files and renders the result.
fn check(case: Case<'_>) -> (String, i32) {
    let all: Vec<(&str, &str)> = case.files.iter().chain(case.support).copied().collect();
    let (dir, mut files) = write_files(&all);
    files.truncate(case.files.len());
    let (base_dir, baselines) = write_files(&case.baselines.iter().map(|(n, t)| (*n, *t)).collect::<Vec<_>>());
    let policy_dir = case.policy_dir.map(write_files);
    let options = PolicyOptions {
        files,
        baselines,
        policy_dir: policy_dir.as_ref().map(|(d, _)| d.path().to_path_buf()),
        fleet_nodes: case.fleet_nodes,
    };
    let findings = policy::check(&options).expect("policy check runs");
    let code = output::exit_code(&findings);
    let text = output::render(Format::Human, "holdfast policy check", &findings);
    let text = scrub(&scrub(&text, dir.path()), base_dir.path());
    (format!("exit {code}\n{text}"), code)
}

const PGBOUNCER_BASELINE: &str = "\
[databases]
holdfast = host=prod-db-01.internal port=5432 dbname=holdfast

[pgbouncer]
listen_port = 6432
pool_mode = transaction
max_client_conn = 200
default_pool_size = 50
";

const PGBOUNCER_SHRUNK: &str = "\
[databases]
holdfast = host=prod-db-01.internal port=5432 dbname=holdfast

[pgbouncer]
listen_port = 6432
pool_mode = transaction
; v3.8.2: regenerated from the template
max_client_conn = 20
default_pool_size = 50
";

const HOLDFAST_TOML: &str = r#"
[database]
url = "postgres://holdfast@prod-db-01.internal:6432/holdfast"

[database.pools.read]
max_connections = 20
[database.pools.write]
max_connections = 20
[database.pools.worker]
max_connections = 10
"#;

const PUBLIC_UNENCRYPTED_TF: &str = r#"
resource "aws_db_instance" "orders" {
  identifier          = "orders-staging"
  engine              = "postgres"
  instance_class      = var.instance_class
  publicly_accessible = true
  storage_encrypted   = false
}
"#;

#[test]
fn pool_shrink_is_denied() {
    let (out, code) =
        check(Case::new(&[("pgbouncer.ini", PGBOUNCER_SHRUNK)]).baseline(&[("pgbouncer.ini", PGBOUNCER_BASELINE)]));
    assert_eq!(code, 1);
    for needle in ["pgbouncer.max_client_conn", "baseline: 200", "value:    20"] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    insta::assert_snapshot!(out);
}

#[test]
fn fixtures() {
    let include_main = "%include common.ini\n\n[pgbouncer]\nmax_client_conn = 190\n";
    let include_common = "[databases]\nholdfast = host=prod-db-01.internal dbname=holdfast\n";
    let fleet = Case {
        fleet_nodes: 5,
        ..Case::new(&[("pgbouncer.ini", PGBOUNCER_BASELINE), ("holdfast.toml", HOLDFAST_TOML)])
    };
    let include_files = [("pgbouncer.ini", include_main)];
    let include_support = [("common.ini", include_common)];
    let typo = HOLDFAST_TOML.replace("prod-db-01", "prod-db-O1");
    let typo_files = [("holdfast.toml", typo.as_str())];
    let cases: Vec<(&str, Case<'_>, i32)> = vec![
        (
            "good_config",
            Case::new(&[("pgbouncer.ini", PGBOUNCER_BASELINE), ("holdfast.toml", HOLDFAST_TOML)])
                .baseline(&[("pgbouncer.ini", PGBOUNCER_BASELINE), ("holdfast.toml", HOLDFAST_TOML)]),
            0,
        ),
        (
            "include_within_80_percent",
            Case {
                support: &include_support,
                ..Case::new(&include_files).baseline(&[("pgbouncer.ini", PGBOUNCER_BASELINE)])
            },
            0,
        ),
        ("fleet_needs_more_than_max_client_conn", fleet, 1),
        (
            "public_unencrypted_terraform",
            Case::new(&[("rds.tf", PUBLIC_UNENCRYPTED_TF)]),
            1,
        ),
        (
            "public_unencrypted_terraform_plan",
            Case::new(&[(
                "plan.json",
                r#"{"format_version": "1.2", "resource_changes": [
                    {"address": "aws_db_instance.orders", "type": "aws_db_instance", "name": "orders",
                     "change": {"actions": ["create"], "after": {"publicly_accessible": true, "storage_encrypted": false}}},
                    {"address": "aws_db_instance.old", "type": "aws_db_instance", "name": "old",
                     "change": {"actions": ["delete"], "after": null}}]}"#,
            )]),
            1,
        ),
        (
            "private_encrypted_db",
            Case::new(&[(
                "rds.tf",
                "resource \"aws_db_instance\" \"orders\" {\n  publicly_accessible = false\n  storage_encrypted = true\n}\n",
            )]),
            0,
        ),
        (
            "db_host_changed",
            Case::new(&typo_files).baseline(&[("holdfast.toml", HOLDFAST_TOML)]),
            1,
        ),
        (
            "connection_string_does_not_parse",
            Case::new(&[(
                "pgbouncer.ini",
                "[databases]\nholdfast = host=db port=five\n[pgbouncer]\nmax_client_conn = 200\n",
            )]),
            1,
        ),
        (
            "payment_queue_retention",
            Case::new(&[(
                "queues.tf",
                "resource \"aws_sqs_queue\" \"payment_retries\" {\n  name = \"payment-retries.fifo\"\n  fifo_queue = true\n  message_retention_seconds = 345600\n}\n",
            )]),
            1,
        ),
        (
            "payment_queue_ttl_in_holdfast_toml",
            Case::new(&[(
                "holdfast.toml",
                "[queues.payment_retries]\nvisibility_timeout_s = 300\nttl_s = 3600\n",
            )]),
            1,
        ),
        (
            "db_alert_to_slack_only",
            Case::new(&[
                (
                    "alerts.yml",
                    "groups:\n  - name: db\n    rules:\n      - alert: PgBouncerSaturated\n        expr: up == 0\n        labels:\n          severity: warning\n",
                ),
                (
                    "alertmanager.yml",
                    "route:\n  receiver: slack-low\n  routes:\n    - receiver: pagerduty\n      matchers: ['severity=\"critical\"']\nreceivers:\n  - name: slack-low\n    slack_configs: [{channel: '#alerts-low', api_url: 'http://127.0.0.1/x'}]\n  - name: pagerduty\n    pagerduty_configs: [{routing_key: x}]\n",
                ),
            ]),
            1,
        ),
        (
            "db_alert_without_alertmanager_warns",
            Case::new(&[(
                "alerts.yml",
                "groups:\n  - name: db\n    rules:\n      - alert: PgBouncerSaturated\n        expr: up == 0\n",
            )]),
            0,
        ),
        (
            "user_policy",
            Case {
                policy_dir: Some(&[(
                    "pool_mode.rego",
                    "package holdfast.policy.pool_mode\n\ndeny contains d if {\n\tsome f in input.files\n\tf.kind == \"pgbouncer\"\n\tf.doc.pgbouncer.pool_mode != \"transaction\"\n\td := {\"msg\": \"pool_mode must be transaction\", \"file\": f.path, \"path\": \"pgbouncer.pool_mode\", \"value\": f.doc.pgbouncer.pool_mode}\n}\n",
                )]),
                ..Case::new(&[(
                    "pgbouncer.ini",
                    "[pgbouncer]\npool_mode = session\nmax_client_conn = 200\n",
                )])
            },
            1,
        ),
        (
            "malformed_ini",
            Case::new(&[(
                "pgbouncer.ini",
                "[pgbouncer]\nmax_client_conn = 200\nthis line has no equals sign\n",
            )]),
            2,
        ),
        (
            "malformed_hcl",
            Case::new(&[(
                "rds.tf",
                "resource \"aws_db_instance\" \"x\" {\n  a = 1\n  b = = 2\n}\n",
            )]),
            2,
        ),
        (
            "malformed_yaml",
            Case::new(&[("alerts.yml", "groups:\n  - name: x\n    rules: [\n  bad: : yaml\n")]),
            2,
        ),
        (
            "malformed_toml",
            Case::new(&[("holdfast.toml", "[database]\nurl = \"postgres://x\"\npools = {\n")]),
            2,
        ),
        (
            "malformed_json",
            Case::new(&[("plan.json", "{\n  \"resource_changes\": [\n}\n")]),
            2,
        ),
        (
            "missing_include",
            Case::new(&[("pgbouncer.ini", "[pgbouncer]\n%include nowhere.ini\n")]),
            2,
        ),
    ];
    for (name, case, expected) in cases {
        let (out, code) = check(case);
        assert_eq!(code, expected, "{name}:\n{out}");
        insta::assert_snapshot!(name, out);
    }
}

#[test]
fn malformed_files_name_file_and_line() {
    let (out, _) = check(Case::new(&[(
        "pgbouncer.ini",
        "[pgbouncer]\nmax_client_conn = 200\nno equals here\n",
    )]));
    assert!(out.contains("pgbouncer.ini:3: error [parse-error]"), "{out}");
    let (out, _) = check(Case::new(&[(
        "rds.tf",
        "resource \"a\" \"b\" {\n  x = 1\n  y = = 2\n}\n",
    )]));
    assert!(out.contains("rds.tf:3: error [parse-error]"), "{out}");
    let (out, _) = check(Case::new(&[("alerts.yml", "groups:\n  - name: x\n  bad: [\n")]));
    assert!(out.contains("alerts.yml:") && out.contains("[parse-error]"), "{out}");
}

#[test]
fn shipped_ops_files_pass() {
    let root = repo_root();
    let options = PolicyOptions {
        files: vec![
            root.join("ops/prometheus/alerts.yml"),
            root.join("ops/alertmanager/alertmanager.yml"),
            root.join("ops/grafana/holdfast.json"),
        ],
        baselines: Vec::<PathBuf>::new(),
        policy_dir: None,
        fleet_nodes: 1,
    };
    let findings = policy::check(&options).expect("policy check runs");
    assert_eq!(output::exit_code(&findings), 0, "{findings:#?}");
    assert!(findings.is_empty(), "{findings:#?}");
}
