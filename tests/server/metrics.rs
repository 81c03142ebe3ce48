//! Health and metrics on their own listener (`metrics_addr`): `/healthz` is
//! 200 while serving and 503 while shutting down; `/metrics` counts what
//! happened, in a text `promtool check metrics` accepts; the chat port
//! serves neither.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn get(addr: &str, path: &str) -> (String, String) {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(socket, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn sample(text: &str, name: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '));
    line.unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn promtool_check(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("promtool not found ({e}): install it with `apt-get install prometheus`"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n{text}");
}

#[test]
fn health_and_metrics_on_their_own_listener() {
    let mut server = TestServer::start_tls(json!({"metrics_addr": "127.0.0.1:0"}));
    let line = server.wait_log("health and metrics on http://");
    let addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    assert_eq!(get(&addr, "/healthz"), ("HTTP/1.1 200 OK".into(), "ok\n".into()));
    // A request in two pieces is answered once complete.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    slow.write_all(b"GET /heal").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    slow.write_all(b"thz HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"), "{answer}");

    let (mut alice, mut bob) = server.login_two("alice", "bob");
    alice.send_json(broadcast("counted"));
    assert_eq!(bob.recv_json()["text"], "counted");
    assert_eq!(alice.recv_json()["text"], "counted");
    alice.send_text("not json");
    assert_eq!(alice.recv_json()["code"], "bad_json");

    let (status, text) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    promtool_check(&text);
    assert_eq!(sample(&text, "ragnarok_users_online"), 2.0);
    assert_eq!(sample(&text, "ragnarok_connections{phase=\"chatting\"}"), 2.0);
    assert_eq!(sample(&text, "ragnarok_deliveries_total{type=\"Broadcast\"}"), 2.0);
    assert_eq!(sample(&text, "ragnarok_messages_received_total{type=\"Broadcast\"}"), 1.0);
    assert_eq!(sample(&text, "ragnarok_refusals_total{code=\"bad_json\"}"), 1.0);
    assert!(sample(&text, "ragnarok_received_bytes_total") > 0.0);
    assert!(sample(&text, "ragnarok_sent_bytes_total") > 0.0);
    // rcgen's certificates run until 4096.
    assert!(sample(&text, "ragnarok_tls_certificate_expiry_seconds") > 1e9);

    // The chat port serves neither.
    let mut chat = server.stream();
    chat.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = chat.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // While shutting down (bob does not read his Close), health says 503.
    server.signal("TERM");
    server.wait_log("shutting down");
    assert_eq!(get(&addr, "/healthz").0, "HTTP/1.1 503 Service Unavailable");
    drop(bob);
    server.wait_exit();
}

/// 1,000 idle connections to `metrics_addr` (a stuck scraper, or anyone
/// who can reach it) do not keep `/healthz` from answering: when every
/// request slot is taken, the oldest unfinished request makes room.
#[test]
fn healthz_answers_beside_a_thousand_idle_connections() {
    let _busy = busy();
    ragnarok::fdlimit::raise(4096);
    let server = TestServer::start(json!({"metrics_addr": "127.0.0.1:0"}));
    let line = server.wait_log("health and metrics on http://");
    let addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(&addr).unwrap());
    }
    // Half of them have sent half a request.
    for socket in idle.iter_mut().step_by(2) {
        let _ = socket.write_all(b"GET /healthz HTTP/1.1\r\n");
    }
    let mut socket = TcpStream::connect(&addr).unwrap();
    socket.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"), "{answer:?}");
    drop(idle);
}
