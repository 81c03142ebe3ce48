//! A client that never reads and floods pings, before logging in, costs a
//! bounded amount: pings cost rate-limit tokens before login too, so it is
//! closed as a flood, and memory stays flat meanwhile; everyone else chats on.

use ragnarok_testkit::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn ping_flood_before_login_costs_bounded_memory() {
    for server in TestServer::both(json!({})) {
        let baseline = server.rss_kib();
        let mut flooder = server.raw_upgrade();
        let ping = masked_frame(0x9, &[b'p'; 125]);
        let written = write_until_stalled(&mut flooder, &ping, 64 << 20, Duration::from_secs(1));
        let grown = server.rss_kib().saturating_sub(baseline);
        // The kernel buffers a few MB; the server must not take in the rest.
        assert!(written < 32 << 20, "the server kept reading: {written} bytes taken");
        assert!(grown < 8 * 1024, "RSS grew by {grown} KiB after {written} bytes of pings");

        let (mut alice, mut bob) = server.login_two("alice", "bob");
        alice.send_json(broadcast("unbothered"));
        assert_eq!(bob.recv_json()["text"], "unbothered");
        drop(flooder);
    }
}
