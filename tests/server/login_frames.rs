//! Before login, frames are small: a password or name frame over 4 KiB (or
//! one that only announces such a length) is refused with Close 1009,
//! whatever `max_message_bytes` allows after login.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::Write;

#[test]
fn big_frames_before_login_are_refused() {
    // (The byte budget must take the largest message at once.)
    let config = json!({"max_message_bytes": 1 << 20, "rate_limit_bytes_burst": 1 << 20});
    for server in TestServer::both(config) {
        let mut client = server.connect();
        client.send_text(&"p".repeat(5000));
        let (seen, ending) = client.recv_until_end();
        assert_eq!(seen[0]["code"], "message_too_big", "{seen:?}");
        assert_eq!(ending.code(), Some(1009));

        // Only the header of a 64 KiB frame: refused before the payload.
        let mut raw = server.raw_upgrade();
        let frame = masked_frame(0x1, &vec![b'x'; 65536]);
        raw.write_all(&frame[..14]).unwrap(); // 2 + 8 length + 4 mask
        raw.flush().unwrap();
        let mut client = Client {
            ws: tungstenite::WebSocket::from_raw_socket(
                raw,
                tungstenite::protocol::Role::Client,
                None,
            ),
        };
        let (_, ending) = client.recv_until_end();
        assert_eq!(ending.code(), Some(1009));

        // After login, the configured limit applies.
        let mut alice = server.login("alice");
        alice.send_json(broadcast(&"b".repeat(100_000)));
        assert_eq!(alice.recv_json()["text"].as_str().map(str::len), Some(100_000));
    }
}
