//! Plain HTTP sent to the TLS port gets an HTTP 400 that says to use
//! https:// (as nginx does), not a TLS alert; TLS clients are unaffected.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;

#[test]
fn plain_http_to_the_tls_port_is_told_to_use_https() {
    let server = TestServer::start_tls(json!({}));
    let mut socket = TcpStream::connect(server.addr).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");

    let (mut alice, mut bob) = server.login_two("alice", "bob");
    alice.send_json(broadcast("over TLS"));
    assert_eq!(bob.recv_json()["text"], "over TLS");
}
