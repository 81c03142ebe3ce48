//! `reuse_port`: several processes listen on one port and the kernel spreads
//! the connections over them; without it a second process on the port stops
//! with one clear line that names the setting.

use ragnarok_testkit::*;
use serde_json::json;
use std::process::Command;

/// At most the logins one address may have logged a minute (20, the rest
/// counted: src/peerlog.rs), so that each log shows each of its logins.
const LOGINS: usize = 20;

/// Lines of this server's log that record a login.
fn logins(server: &TestServer) -> usize {
    server.log().iter().filter(|line| line.contains("logged in")).count()
}

#[test]
fn two_processes_share_one_port_and_both_get_connections() {
    // The first picks a free port; the second asks for the same one.
    let first = TestServer::start(json!({"reuse_port": true}));
    let port = first.addr.port();
    let second = TestServer::start(json!({"reuse_port": true, "server_port": port}));
    assert_eq!(second.addr, first.addr);

    // Each connection is a new source port, hashed by the kernel to one of
    // the two: all 20 on one side happens with odds of 2 in 2^20.
    let clients: Vec<Client> = (0..LOGINS).map(|i| first.login(&format!("user{i}"))).collect();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while logins(&first) + logins(&second) < LOGINS && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (a, b) = (logins(&first), logins(&second));
    assert_eq!(a + b, LOGINS, "every login in one of the logs: {a} + {b}");
    assert!(a > 0 && b > 0, "both processes got logins: {a} and {b}");
    drop(clients);
}

#[test]
fn without_reuse_port_the_second_process_stops_and_names_the_setting() {
    let first = TestServer::start(json!({}));
    let port = first.addr.port();
    let dir = temp_dir("reuse-port");
    let mut config = base_config();
    config["server_port"] = json!(port);
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    // The first server holds the port, so this one exits at once.
    let output =
        Command::new(binary()).arg("--config").arg(&path).env_remove("RUST_LOG").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or("");
    assert!(last.starts_with("ragnarok: cannot listen on 127.0.0.1:"), "{stderr}");
    assert!(last.contains("in use") && last.contains("\"reuse_port\": true"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The first one goes on serving.
    first.login("still-here");
    let _ = std::fs::remove_dir_all(&dir);
}
