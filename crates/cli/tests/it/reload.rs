//! `kill -HUP` reloads the dependency settings from the config file into
//! the running breakers, and a file that no longer parses changes nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

const ADMIN: &str = "hf_reload_test_admin_key_0123456789";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn min_calls(listen: &str) -> Option<String> {
    let mut stream = TcpStream::connect(listen).ok()?;
    let request = format!(
        "GET /api/v1/ops/breakers HTTP/1.1\r\nHost: {listen}\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let body = response.split("\r\n\r\n").nth(1)?;
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let warehouse = json["data"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == "warehouse")?
        .clone();
    Some(warehouse["config"]["breaker"]["min_calls"].to_string())
}

fn wait_for(listen: &str, expected: &str) {
    for _ in 0..100 {
        if min_calls(listen).as_deref() == Some(expected) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("warehouse min_calls never became {expected}: {:?}", min_calls(listen));
}

fn hangup(child: &Child) {
    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
}

#[test]
fn sighup_reloads_dependency_settings() {
    let dir = std::env::temp_dir().join(format!("holdfast-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("holdfast.toml");
    let table = |min: u32| format!("[dependencies.warehouse]\nbreaker = {{ min_calls = {min} }}\n");
    std::fs::write(&file, table(11)).expect("config");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    let child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["--config", file.to_str().expect("path"), "serve", "--listen", &listen])
        .env("HOLDFAST_DATABASE__URL", &url)
        .env("HOLDFAST_BOOTSTRAP_ADMIN_KEY", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let running = Running(child);
    wait_for(&listen, "11");

    std::fs::write(&file, table(33)).expect("config");
    hangup(&running.0);
    wait_for(&listen, "33");

    std::fs::write(&file, "[dependencies.warehouse]\nbreaker = { min_calls = \"many\" }\n").expect("config");
    hangup(&running.0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(min_calls(&listen).as_deref(), Some("33"), "a bad file changes nothing");
    drop(running);
    let _ = std::fs::remove_dir_all(dir);
}
