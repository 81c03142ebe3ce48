//! A logged-in user who never reads and floods binary frames (each worth an
//! `Error`) costs a bounded amount even with rate limiting off: the server
//! stops reading from it while its errors wait to be read.

use ragnarok_testkit::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn binary_flood_without_reading_is_held_back() {
    for server in TestServer::both(json!({"rate_limit_per_sec": 0})) {
        let (mut alice, flooder) = server.login_two("alice", "flooder");
        let baseline = server.rss_kib();
        let mut stream = flooder.ws.into_inner();
        let empty_binary = masked_frame(0x2, &[]);
        let written =
            write_until_stalled(&mut stream, &empty_binary, 64 << 20, Duration::from_secs(1));
        let grown = server.rss_kib().saturating_sub(baseline);
        // Over 5 million frames offered; the kernel buffers a few MB of them.
        assert!(written < 32 << 20, "the server kept reading: {written} bytes taken");
        assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");

        let mut bob = server.login("bob");
        alice.recv_type("OnlineUsers");
        bob.send_json(broadcast("still fine"));
        assert_eq!(alice.recv_json()["text"], "still fine");
        drop(stream);
    }
}
