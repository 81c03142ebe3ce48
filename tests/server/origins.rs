//! `allowed_origins`: a browser page from another origin cannot open a
//! WebSocket (403); listed origins and non-browser clients (no `Origin`)
//! can. Upgrades with many header lines (browsers behind proxies) pass.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::{Read, Write};

fn status_of(server: &TestServer, extra_headers: &str) -> String {
    let mut stream = server.stream();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).into_owned()
}

#[test]
fn only_listed_origins_may_open_a_websocket() {
    let allowed = json!({"allowed_origins": ["https://chat.example.org"]});
    for server in TestServer::both(allowed) {
        assert_eq!(status_of(&server, "Origin: https://chat.example.org\r\n"), "101");
        assert_eq!(status_of(&server, "Origin: https://evil.example\r\n"), "403");
        assert_eq!(status_of(&server, ""), "101", "no Origin: not a browser");
        let many: String = (0..45).map(|i| format!("X-Forwarded-Hop-{i}: proxy\r\n")).collect();
        assert_eq!(status_of(&server, &many), "101");
    }
}
