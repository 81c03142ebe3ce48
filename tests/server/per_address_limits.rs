//! One address cannot take every slot: its unfinished logins and its open
//! connections are capped (`max_handshakes_per_ip`,
//! `max_connections_per_ip`), with a clear refusal, while others get in.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::Read;
use std::net::TcpStream;

/// Whatever the server says to a new plain connection before closing it.
fn refusal(server: &TestServer) -> String {
    let mut socket = TcpStream::connect(server.addr).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    answer
}

#[test]
fn idle_sockets_from_one_address_cannot_take_every_slot() {
    let server =
        TestServer::start(json!({"max_connections_per_ip": 5, "max_handshakes_per_ip": 3}));
    let idle: Vec<_> = (0..3).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    let answer = refusal(&server);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many unfinished logins from your address"), "{answer}");
    server.wait_log("abuse from 127.0.0.1: too_many_handshakes");

    // A logged-in user no longer counts as unfinished.
    drop(idle);
    std::thread::sleep(std::time::Duration::from_millis(300)); // the server sees them go
    let (mut alice, _bob) = server.login_two("alice", "bob");
    let _more: Vec<_> = (0..3).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    let answer = refusal(&server);
    assert!(answer.contains("too many connections from your address"), "{answer}");
    alice.send_json(broadcast("still here"));
    assert_eq!(alice.recv_json()["text"], "still here");
}

#[test]
fn over_tls_a_refused_connection_is_closed() {
    let server = TestServer::start_tls(json!({"max_handshakes_per_ip": 2}));
    let _idle: Vec<_> = (0..2).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    assert_eq!(refusal(&server), "", "closed without a TLS handshake");
    server.wait_log("abuse from 127.0.0.1: too_many_handshakes");
}

/// What `/metrics` on `metrics_addr` says.
fn metrics(addr: &str) -> String {
    use std::io::Write;
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(socket, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    answer
}

/// New connections from one address come at most at
/// `connections_per_minute_per_ip` (a burst of as many, then that rate),
/// checked at accept: over the rate, plain gets 503 with the reason, TLS is
/// closed before any handshake work. Once the bucket refills, they get in.
#[test]
fn new_connections_from_one_address_have_a_rate() {
    let metrics_port = ragnarok_testkit::cluster::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    // 60 a minute: a burst of 60, then one a second.
    let rate = json!({"connections_per_minute_per_ip": 60, "metrics_addr": metrics_addr});
    let server = TestServer::start(rate.clone());
    for _ in 0..60 {
        drop(server.connect());
    }
    let answer = refusal(&server);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many new connections from your address"), "{answer}");
    server.wait_log("abuse from 127.0.0.1: too_many_new_connections");
    let text = metrics(&metrics_addr);
    assert!(
        text.contains(
            r#"ragnarok_connections_refused_total{reason="per_address_connection_rate"} 1"#
        ),
        "{text}"
    );
    // A second later one more is let in (a deadline, not a measurement).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = refusal(&server);
        if !answer.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused: {answer}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(server);

    let mut tls = rate;
    tls["metrics_addr"] = json!(format!("127.0.0.1:{}", ragnarok_testkit::cluster::free_port()));
    let server = TestServer::start_tls(tls);
    for _ in 0..60 {
        drop(server.connect());
    }
    assert_eq!(refusal(&server), "", "closed without a TLS handshake");
    server.wait_log("abuse from 127.0.0.1: too_many_new_connections");
}
