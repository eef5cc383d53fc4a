//! `holdfast serve --role inventory` and an order node in
//! `inventory.mode = "remote"`, as two real processes: the order node's
//! products and stock reads reach the inventory node, the inventory node
//! serves no checkout, and `preflight` checks the inventory node and its key.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, holdfast};

const INVENTORY_KEY: &str = "hf_roles_test_inventory_key_0123456789";
const ORDERS_KEY: &str = "hf_roles_test_orders_admin_key_0123456";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; returns the status and the body.
fn call(listen: &str, method: &str, path: &str, key: &str, body: Option<&str>) -> Option<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect(listen).ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {listen}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let json = serde_json::from_str(response.split("\r\n\r\n").nth(1)?).unwrap_or(serde_json::Value::Null);
    Some((status, json))
}

fn serve(role: &str, listen: &str, database: &str, env: &[(&str, &str)]) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    command
        .args(["serve", "--role", role, "--listen", listen])
        .env("HOLDFAST_DATABASE__URL", database)
        .env("HOLDFAST_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let running = Running(command.spawn().expect("serve starts"));
    for _ in 0..100 {
        if call(listen, "GET", "/readyz", "", None).is_some_and(|(status, _)| status == 200) {
            return running;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("holdfast serve --role {role} never became ready on {listen}");
}

#[test]
fn an_order_node_keeps_its_stock_on_an_inventory_node() {
    let dir = std::env::temp_dir().join(format!("holdfast-roles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let inventory_listen = format!("127.0.0.1:{}", free_port());
    let inventory_url = format!("http://{inventory_listen}");
    let _inventory = serve(
        "inventory",
        &inventory_listen,
        &format!("sqlite://{}/inventory.db", dir.display()),
        &[("HOLDFAST_BOOTSTRAP_ADMIN_KEY", INVENTORY_KEY)],
    );
    let orders_db = format!("sqlite://{}/orders.db", dir.display());
    let remote = [
        ("HOLDFAST_INVENTORY__MODE", "remote"),
        ("HOLDFAST_INVENTORY__URL", inventory_url.as_str()),
        ("HOLDFAST_INVENTORY__API_KEY", INVENTORY_KEY),
    ];
    let orders_listen = format!("127.0.0.1:{}", free_port());
    let mut env = remote.to_vec();
    env.push(("HOLDFAST_BOOTSTRAP_ADMIN_KEY", ORDERS_KEY));
    let orders = serve("all", &orders_listen, &orders_db, &env);

    let product = r#"{"sku": "TILLER", "name": "Tiller", "price": {"amount": 9900, "currency": "USD"}, "on_hand": 7}"#;
    let created = call(&orders_listen, "POST", "/api/v1/products", ORDERS_KEY, Some(product));
    assert_eq!(created.map(|(status, _)| status), Some(201));
    let on_inventory = call(
        &inventory_listen,
        "GET",
        "/api/v1/inventory/TILLER",
        INVENTORY_KEY,
        None,
    );
    let (status, level) = on_inventory.expect("inventory node answers");
    assert_eq!((status, &level["on_hand"]), (200, &serde_json::json!(7)), "{level}");
    let through = call(&orders_listen, "GET", "/api/v1/inventory/TILLER", ORDERS_KEY, None).expect("answer");
    assert_eq!(through.1["available"], 7, "{}", through.1);
    // An inventory node takes no orders.
    let refused = call(&inventory_listen, "GET", "/api/v1/orders", INVENTORY_KEY, None).expect("answer");
    assert_eq!(refused.0, 404, "{}", refused.1);
    drop(orders);

    let mut env: Vec<(&str, &str)> = remote.to_vec();
    env.push(("HOLDFAST_DATABASE__URL", orders_db.as_str()));
    let checked = holdfast(&["preflight"], &env, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(stdout.contains("inventory"), "{stdout}");

    let bad_key = [
        ("HOLDFAST_INVENTORY__MODE", "remote"),
        ("HOLDFAST_INVENTORY__URL", inventory_url.as_str()),
        ("HOLDFAST_INVENTORY__API_KEY", "hf_not_the_inventory_key_0000000000000"),
        ("HOLDFAST_DATABASE__URL", orders_db.as_str()),
    ];
    let refused = holdfast(&["preflight"], &bad_key, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{stdout}");
    assert!(stdout.contains("inventory.api_key"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}
