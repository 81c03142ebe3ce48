//! Garbage bytes, plain HTTP on the TLS port, TLS on the plain port, and
//! ordinary HTTP requests: answered or dropped, never a crash or a stall.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;

fn exchange(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(server.addr).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = socket.read_to_end(&mut reply);
    reply
}

#[test]
fn junk_never_hurts_the_server() {
    for server in TestServer::both(json!({})) {
        let mut alice = server.login("alice");
        let mut noise: Vec<u8> =
            (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        noise.extend_from_slice(b"\r\n\r\n");
        exchange(&server, &noise);
        exchange(&server, &[0u8; 10]);
        let http = exchange(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let tls_hello = exchange(&server, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]);
        if server.is_tls() {
            // Plain HTTP on the TLS port: told to use https://, never served.
            let text = String::from_utf8_lossy(&http);
            assert!(text.starts_with("HTTP/1.1 400") && text.contains("https://"), "{text}");
        } else {
            let text = String::from_utf8_lossy(&http);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(String::from_utf8_lossy(&tls_hello).starts_with("HTTP/1.1 400"));
        }
        alice.send_json(broadcast("unharmed"));
        assert_eq!(alice.recv_json()["text"], "unharmed");
        let _bob = server.login("bob");
    }
}

#[test]
fn other_methods_and_bad_versions_get_http_errors() {
    let server = TestServer::start(json!({}));
    let post = exchange(&server, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with(b"HTTP/1.1 405"));
    let old = exchange(
        &server,
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: x\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&old);
    assert!(
        text.starts_with("HTTP/1.1 426") && text.contains("Sec-WebSocket-Version: 13"),
        "{text}"
    );
}
