//! `holdfast preflight` against real PostgreSQL and a real PgBouncer: one
//! line per check, naming what failed.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::{free_port, holdfast, postgres_url};

fn preflight(env: &[(&str, &str)]) -> (bool, String) {
    let output = holdfast(&["preflight"], env, Duration::from_secs(30));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn bad_database_urls_fail_with_a_line_naming_them() {
    for (url, needle) in [
        ("postgres://app@db-typo.invalid:5432/shop", "host db-typo.invalid"),
        ("postgres://app@127.0.0.1:1/shop", "port 1"),
    ] {
        let (ok, stdout) = preflight(&[("HOLDFAST_DATABASE__URL", url)]);
        assert!(!ok, "{stdout}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("FAIL database"))
            .unwrap_or_default();
        assert!(line.contains(needle), "{needle} not in: {stdout}");
    }
    let Some(admin) = postgres_url() else { return };
    let mut wrong = url::Url::parse(&admin).expect("url");
    wrong.set_path("/no_such_database_holdfast");
    let (ok, stdout) = preflight(&[("HOLDFAST_DATABASE__URL", wrong.as_str())]);
    assert!(!ok);
    assert!(
        stdout.contains("FAIL database") && stdout.contains("no_such_database_holdfast"),
        "{stdout}"
    );
}

#[test]
fn a_healthy_sqlite_deploy_passes_every_check() {
    let dir = std::env::temp_dir().join(format!("holdfast-preflight-{}", std::process::id()));
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let migrated = holdfast(
        &["migrate"],
        &[("HOLDFAST_DATABASE__URL", &url)],
        Duration::from_secs(30),
    );
    assert!(migrated.status.success());
    let (ok, stdout) = preflight(&[("HOLDFAST_DATABASE__URL", &url)]);
    assert!(ok, "{stdout}");
    for name in [
        "config",
        "database",
        "migrations",
        "payments",
        "warehouse",
        "events",
        "checkout",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "{name}: {stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unreachable_dependencies_fail_naming_their_keys() {
    let dir = std::env::temp_dir().join(format!("holdfast-preflight-deps-{}", std::process::id()));
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let (ok, stdout) = preflight(&[
        ("HOLDFAST_DATABASE__URL", &url),
        ("HOLDFAST_WAREHOUSE__URL", "http://127.0.0.1:1"),
        ("HOLDFAST_EVENTS__NATS_URL", "nats://127.0.0.1:1"),
        ("HOLDFAST_DEPENDENCIES__EVENTS__DEADLINE_MS", "1000"),
    ]);
    assert!(!ok, "{stdout}");
    for (name, key) in [("warehouse", "warehouse.url"), ("events", "events.nats_url")] {
        let line = stdout.lines().find(|l| l.contains(name)).unwrap_or_default();
        assert!(line.starts_with("FAIL") && line.contains(key), "{name}: {stdout}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A PgBouncer in front of the test server, killed on drop.
struct PgBouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_pgbouncer(max_client_conn: u32) -> Option<PgBouncer> {
    let found = Command::new("pgbouncer").arg("--version").output().is_ok();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("pgbouncer is not installed (CI=true: a test that cannot get its service fails)");
        }
        eprintln!("skipping: pgbouncer is not installed");
        return None;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("holdfast-pgbouncer-{port}"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").expect("users");
    let ini = format!(
        "[databases]\n* = host=127.0.0.1 port=5432\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
         auth_type = trust\nauth_file = {users}\nadmin_users = postgres\npool_mode = session\n\
         max_client_conn = {max_client_conn}\ndefault_pool_size = 5\nunix_socket_dir =\n\
         ignore_startup_parameters = extra_float_digits\n",
        users = dir.join("users.txt").display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).expect("ini");
    // PgBouncer refuses to run as root; as root, drop to the postgres user.
    let mut command = Command::new("pgbouncer");
    if std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
    {
        let _ = Command::new("chmod").args(["-R", "a+rwx"]).arg(&dir).status();
        command.args(["-u", "postgres"]);
    }
    let child = command
        .arg(dir.join("pgbouncer.ini"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pgbouncer starts");
    // Owned by the guard from here on, so it is killed and reaped on every path.
    let bouncer = PgBouncer { child, port, dir };
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(bouncer);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("pgbouncer did not listen on {port}");
}

#[test]
fn pools_larger_than_pgbouncer_allows_fail_the_pgbouncer_check() {
    let Some(_server) = postgres_url() else { return };
    for (max_client_conn, expect_ok) in [(10, false), (500, true)] {
        let Some(bouncer) = start_pgbouncer(max_client_conn) else {
            return;
        };
        let admin = format!("postgres://postgres@127.0.0.1:{}/pgbouncer", bouncer.port);
        let database = format!("postgres://postgres@127.0.0.1:{}/postgres", bouncer.port);
        let output = holdfast(
            &["preflight"],
            &[
                ("HOLDFAST_DATABASE__URL", &database),
                ("HOLDFAST_DATABASE__PGBOUNCER_ADMIN_URL", &admin),
            ],
            Duration::from_secs(30),
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find(|l| l.contains("pgbouncer"))
            .unwrap_or_default()
            .to_owned();
        if expect_ok {
            assert!(line.starts_with("ok"), "{stdout}");
        } else {
            assert!(!output.status.success(), "{stdout}");
            assert!(
                line.starts_with("FAIL") && line.contains("max_client_conn is 10") && line.contains("36"),
                "{stdout}"
            );
        }
    }
}
