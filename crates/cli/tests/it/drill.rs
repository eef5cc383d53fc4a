//! `holdfast drill proxy` as its own process: bytes pass through to the
//! upstream, and a hang added through its Toxiproxy-style API stops them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// Kills and reaps the proxy process on every path out of the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An upstream that answers each connection's bytes in upper case.
fn shouting_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n].to_ascii_uppercase()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

fn round_trip(address: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_millis(700)))?;
    stream.write_all(b"holdfast")?;
    let mut answer = [0u8; 8];
    stream.read_exact(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn the_proxy_forwards_and_its_api_injects_a_hang() {
    let upstream = shouting_upstream();
    let (listen, api) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args([
            "drill",
            "proxy",
            "--listen",
            &listen,
            "--upstream",
            &upstream,
            "--api",
            &api,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("holdfast drill proxy starts");
    let _running = Running(child);
    let mut ready = false;
    for _ in 0..100 {
        if TcpStream::connect(&api).is_ok() && TcpStream::connect(&listen).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "the proxy and its API never listened");
    assert_eq!(round_trip(&listen).expect("through the proxy"), "HOLDFAST");

    let toxic = r#"{"name": "hang", "type": "timeout", "attributes": {"timeout": 0}}"#;
    let mut control = TcpStream::connect(&api).expect("api");
    let request = format!(
        "POST /proxies/default/toxics HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{toxic}",
        toxic.len()
    );
    control.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    control.read_to_string(&mut response).expect("answer");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let hung = round_trip(&listen);
    assert!(hung.is_err(), "no answer while the dependency hangs: {hung:?}");
}
