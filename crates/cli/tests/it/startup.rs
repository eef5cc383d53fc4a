//! A typo in the connection string must stop the service at start
//! with one line naming the key and the target, before anything is served.

use std::time::Duration;

use crate::{free_port, holdfast, postgres_url};

fn refuses(database_url: &str, expected: &[&str]) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let output = holdfast(
        &["serve", "--listen", &listen],
        &[
            ("HOLDFAST_DATABASE__URL", database_url),
            ("HOLDFAST_DATABASE__CONNECT_TIMEOUT_MS", "3000"),
        ],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{database_url}: started anyway\n{stderr}");
    for needle in expected {
        assert!(
            stderr.contains(needle),
            "{database_url}: expected {needle:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("hunter2"), "the password leaked:\n{stderr}");
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "{database_url}: something is listening on {listen}"
    );
}

#[test]
fn a_typo_in_the_host_names_the_host() {
    refuses(
        "postgres://app:hunter2@db-typo.invalid:5432/shop",
        &["database.url", "host db-typo.invalid", "port 5432", "database shop"],
    );
}

#[test]
fn a_wrong_port_names_the_port() {
    refuses(
        "postgres://app:hunter2@127.0.0.1:1/shop",
        &["database.url", "host 127.0.0.1", "port 1", "refused"],
    );
}

#[test]
fn a_wrong_database_name_names_the_database() {
    let Some(url) = postgres_url() else { return };
    let mut wrong = url::Url::parse(&url).expect("url");
    wrong.set_path("/no_such_database_holdfast");
    refuses(
        wrong.as_str(),
        &["database.url", "database no_such_database_holdfast", "does not exist"],
    );
}

#[test]
fn a_malformed_url_names_the_key() {
    refuses("postgres//app:hunter2@nowhere", &["database.url", "not a database URL"]);
    refuses("postgres://app:hunter2@[::1/shop", &["database.url"]);
}

#[test]
fn an_unknown_config_key_names_the_key_and_file() {
    let dir = std::env::temp_dir().join(format!("holdfast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("holdfast.toml");
    std::fs::write(&file, "[database]\nurll = \"postgres://x\"\n").expect("write");
    let output = holdfast(
        &["serve", "--config", file.to_str().expect("path")],
        &[],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("database.urll") && stderr.contains("holdfast.toml"),
        "{stderr}"
    );
    let missing = holdfast(
        &["serve", "--config", "/nonexistent/holdfast.toml"],
        &[],
        Duration::from_secs(20),
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/holdfast.toml"));
}
