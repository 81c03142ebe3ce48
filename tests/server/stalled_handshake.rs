//! Clients that never finish their TCP/TLS/WebSocket handshake are dropped
//! after `handshake_timeout_secs`, those that never finish logging in after
//! `login_timeout_secs`, and they cost nobody else anything.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn closed_within(mut socket: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("still open after {:?}: {e}", start.elapsed()),
        }
    }
}

#[test]
fn stalled_handshakes_are_dropped_while_others_chat() {
    let _quiet = quiet(); // a 1-s timeout seen within 3 s
    for server in TestServer::both(json!({"handshake_timeout_secs": 1})) {
        // Silent TCP, a half-sent TLS hello or HTTP request.
        let silent = TcpStream::connect(server.addr).unwrap();
        let mut partial = TcpStream::connect(server.addr).unwrap();
        if server.is_tls() {
            partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        } else {
            partial.write_all(b"GET / HTTP/1.1\r\nUpgrade: webso").unwrap();
        }
        // Meanwhile a normal user logs in and chats at once.
        let mut alice = server.login("alice");
        alice.send_json(broadcast("not blocked"));
        assert_eq!(alice.recv_json()["text"], "not blocked");

        for socket in [silent, partial] {
            let took = closed_within(socket, Duration::from_secs(5));
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
        server.wait_log("handshake timeout");
        // alice is a chatting user: no login timeout for her.
        alice.send_json(broadcast("still here"));
        assert_eq!(alice.recv_json()["text"], "still here");
    }
}

#[test]
fn unfinished_login_gets_an_error_and_close() {
    let _quiet = quiet(); // a 1-s timeout seen within 3 s
    for server in TestServer::both(json!({"login_timeout_secs": 1})) {
        let mut client = server.connect();
        client.send_text(PASSWORD);
        let start = Instant::now();
        let (seen, ending) = client.recv_until_end();
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(seen[0]["code"], "login_timeout");
        assert_eq!(ending.code(), Some(1008));
    }
}
