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
