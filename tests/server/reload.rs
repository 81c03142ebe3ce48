//! SIGHUP reads config.json again: the password, the room's name, the
//! limits and the history's bounds change without dropping anyone or the
//! history; keys that need a restart are reported and keep their old
//! values; a config that does not load is refused whole, naming the key.

use std::time::{Duration, Instant};

use ragnarok_testkit::*;
use serde_json::{Value, json};

/// Rewrites the server's config.json (the test config with `overrides`),
/// sends SIGHUP, and returns the line that says what came of it.
fn reload(server: &TestServer, overrides: Value) -> String {
    let mut config = base_config();
    for (k, v) in overrides.as_object().unwrap() {
        config[k] = v.clone();
    }
    let said = |line: &String| {
        line.contains("SIGHUP: reloaded config") || line.contains("SIGHUP: kept the old config")
    };
    let before = server.log().iter().filter(|l| said(l)).count();
    std::fs::write(server.dir.join("config.json"), config.to_string()).unwrap();
    server.signal("HUP");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(line) = server.log().into_iter().filter(said).nth(before) {
            return line;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no reload line in {:#?}", server.log());
}

/// Sends `password` and `name`; the first thing the server answers.
fn try_login(server: &TestServer, password: &str, name: &str) -> (Client, Value) {
    let mut client = server.connect();
    client.send_text(password);
    client.send_text(name);
    let first = client.recv_json();
    (client, first)
}

#[test]
fn reload_keeps_everyone_and_the_history() {
    let server = TestServer::start(json!({"history_size": 10}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");
    alice.send_json(broadcast("before"));
    assert_eq!(alice.recv_type("Broadcast")["text"], "before");
    assert_eq!(bob.recv_type("Broadcast")["text"], "before");

    let line = reload(&server, json!({"history_size": 20, "log_level": "debug"}));
    assert!(line.contains(r#"applied ["history_size", "log_level"]"#), "{line}");
    assert!(line.contains("needs a restart, kept: []"), "{line}");

    bob.send_json(broadcast("after"));
    assert_eq!(alice.recv_type("Broadcast")["text"], "after");
    assert_eq!(bob.recv_type("Broadcast")["text"], "after");
    // A joiner is replayed what was said on both sides of the reload.
    let mut carol = server.login("carol");
    let replayed: Vec<Value> = (0..2).map(|_| carol.recv_type("Broadcast")).collect();
    assert_eq!((&replayed[0]["text"], &replayed[0]["history"]), (&json!("before"), &json!(true)));
    assert_eq!(replayed[1]["text"], "after");
    // log_level took effect: debug lines appear from now on.
    server.wait_log("DEBUG");

    // A smaller history is trimmed to its new bound, the newest kept.
    let line = reload(&server, json!({"history_size": 1}));
    assert!(line.contains(r#"applied ["history_size", "log_level"]"#), "{line}");
    let mut dave = server.login("dave");
    let last = dave.recv_type("Broadcast");
    assert_eq!((&last["text"], &last["history"]), (&json!("after"), &json!(true)));
    dave.send_json(broadcast("now"));
    assert_eq!(dave.recv_type("Broadcast")["history"], Value::Null, "the replay was one");
    for user in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(user.recv_type("Broadcast")["text"], "now");
    }
}

#[test]
fn reload_changes_the_password_for_new_logins() {
    let mut server = TestServer::start(json!({}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");

    let line = reload(&server, json!({"server_password": "new secret"}));
    assert!(line.contains(r#"applied ["server_password"]"#), "{line}");

    let (mut old, error) = try_login(&server, PASSWORD, "carol");
    assert_eq!((&error["msgType"], &error["code"]), (&json!("Error"), &json!("wrong_password")));
    assert_eq!(old.recv_until_end().1.code(), Some(1008));
    server.password = "new secret".into();
    let mut carol = server.login("carol");
    // Those logged in with the old one stay.
    alice.send_json(broadcast("hi"));
    assert_eq!(bob.recv_type("Broadcast")["text"], "hi");
    assert_eq!(carol.recv_type("Broadcast")["text"], "hi");
}

#[test]
fn reload_renames_the_room_for_new_joiners() {
    let server = TestServer::start(json!({}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");

    let line = reload(&server, json!({"server_name": "Renamed"}));
    assert!(line.contains(r#"applied ["server_name"]"#), "{line}");

    let (mut carol, welcome) = try_login(&server, PASSWORD, "carol");
    assert_eq!(welcome, json!({"ServerName": "Renamed"}));
    assert_eq!(carol.recv_json()["Users"], json!(["alice", "bob", "carol"]));
    carol.send_json(broadcast("hello"));
    assert_eq!(alice.recv_type("Broadcast")["text"], "hello");
    assert_eq!(bob.recv_type("Broadcast")["text"], "hello");
}

#[test]
fn reload_lowers_max_message_bytes_for_new_logins() {
    let server = TestServer::start(json!({}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");

    let line = reload(&server, json!({"max_message_bytes": 1024}));
    assert!(line.contains(r#"applied ["max_message_bytes"]"#), "{line}");

    // A user in the room keeps the limit their page was told...
    alice.send_json(broadcast(&"a".repeat(2000)));
    assert_eq!(bob.recv_type("Broadcast")["text"].as_str().map(str::len), Some(2000));
    // ...a new login has the new one.
    let mut carol = server.login("carol");
    carol.send_json(broadcast(&"c".repeat(2000)));
    let (seen, ending) = carol.recv_until_end();
    assert_eq!(ending.code(), Some(1009), "{seen:?}");
    assert!(seen.iter().any(|m| m["code"] == "message_too_big"), "{seen:?}");
    server.wait_log("over the 1024 limit");
    alice.send_json(broadcast("still here"));
    assert_eq!(bob.recv_type("Broadcast")["text"], "still here");
}

#[test]
fn reload_applies_the_rate_limit_in_the_room_and_origins_to_new_requests() {
    let _quiet = quiet(); // a rate
    let server = TestServer::start(json!({}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");
    let origins = json!(["https://chat.example.org"]);
    let line = reload(
        &server,
        json!({"rate_limit_per_sec": 1, "rate_limit_burst": 3, "allowed_origins": origins}),
    );
    assert!(
        line.contains(r#"applied ["rate_limit_per_sec", "rate_limit_burst", "allowed_origins"]"#),
        "{line}"
    );

    // Users logged in before the reload have the new rate limit (a burst
    // of 3, where they had 40): refused, not disconnected (a flood would be
    // a sixth message at once).
    for i in 0..5 {
        alice.send_json(broadcast(&format!("m{i}")));
    }
    let mut refused = 0;
    let mut delivered = 0;
    while refused + delivered < 5 {
        let message = alice.recv_json();
        match (message["msgType"].as_str(), message["code"].as_str()) {
            (Some("Error"), Some("rate_limited")) => refused += 1,
            (Some("Broadcast"), _) => delivered += 1,
            _ => {}
        }
    }
    assert!(refused >= 1 && delivered >= 1, "{refused} refused, {delivered} delivered");
    assert_eq!(bob.recv_type("Broadcast")["text"], "m0");

    // A page from another origin cannot open a WebSocket any more.
    let upgrade = |origin: &str| {
        use std::io::{Read, Write};
        let mut stream = server.stream();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Origin: {origin}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).into_owned()
    };
    assert_eq!(upgrade("https://evil.example"), "403");
    assert_eq!(upgrade("https://chat.example.org"), "101");
}

#[test]
fn reload_reports_keys_that_need_a_restart_and_keeps_them() {
    let mut server = TestServer::start(json!({}));
    let mut alice = server.login("alice");
    let port = server.addr.port();
    let taken = if port == 65535 { 65534 } else { port + 1 };

    let line =
        reload(&server, json!({"server_port": taken, "reuse_port": true, "server_password": "p2"}));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains(r#"applied ["server_password"]"#), "{line}");
    assert!(line.contains(r#"needs a restart, kept: ["server_port", "reuse_port"]"#), "{line}");

    // Still on the old port, with the new password.
    server.password = "p2".into();
    let mut bob = server.login("bob");
    alice.recv_type("OnlineUsers");
    bob.send_json(broadcast("same port"));
    assert_eq!(alice.recv_type("Broadcast")["text"], "same port");
}

#[test]
fn reload_refuses_a_bad_config_whole() {
    let mut server = TestServer::start(json!({}));
    let mut alice = server.login("alice");

    // A new password beside a bad value: neither is taken.
    let line = reload(&server, json!({"server_password": "p2", "max_connections": 0}));
    assert!(line.contains("ERROR") && line.contains("SIGHUP: kept the old config"), "{line}");
    assert!(line.contains("\"max_connections\""), "names the key: {line}");
    assert!(line.contains("config.json"), "names the file: {line}");
    let mut bob = server.login("bob");
    alice.recv_type("OnlineUsers");

    // Not JSON at all, then an unknown key: the same.
    std::fs::write(server.dir.join("config.json"), "{\"server_password\": ").unwrap();
    server.signal("HUP");
    server.wait_log("is not valid JSON");
    let line = reload(&server, json!({"server_pasword": "p3"}));
    assert!(line.contains("unknown key \"server_pasword\""), "{line}");
    let (_, error) = try_login(&server, "p3", "carol");
    assert_eq!(error["code"], "wrong_password");
    let mut dave = server.login("dave");

    // A good one after the bad: taken.
    let line = reload(&server, json!({"server_password": "p4"}));
    assert!(line.contains(r#"applied ["server_password"]"#), "{line}");
    server.password = "p4".into();
    let _erin = server.login("erin");
    bob.send_json(broadcast("all here"));
    for user in [&mut alice, &mut bob, &mut dave] {
        assert_eq!(user.recv_type("Broadcast")["text"], "all here");
    }
}
