//! Cluster: a message too large to publish safely (over 1 MiB: Redis cuts
//! off subscribers that fall behind by a few MB, which would cost every
//! node its link) is refused with `message_too_big`; the sender stays
//! connected and nobody receives it; a large one under the cap crosses.

use ragnarok_testkit::broadcast;
use ragnarok_testkit::cluster::*;
use serde_json::json;

#[test]
fn a_message_over_the_cluster_cap_is_refused() {
    let config = json!({"rate_limit_per_sec": 0, "rate_limit_bytes_per_sec": 0, "max_message_bytes": 4 << 20});
    let cluster = Cluster::start(2, config);
    let mut alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    let both = set(["alice", "bob"]);
    alice.wait_users(after(CONVERGE), &both);
    bob.wait_users(after(CONVERGE), &both);

    let huge = "x".repeat(2 << 20);
    alice.send(broadcast(&huge));
    let m = alice.wait_for(after(CONVERGE), "message_too_big", |m| {
        assert_ne!(m["msgType"], "Broadcast", "the 2 MiB broadcast was delivered");
        m["msgType"] == "Error"
    });
    assert_eq!(m["code"], "message_too_big", "{m}");

    let large = "y".repeat(512 << 10);
    alice.send(broadcast(&large));
    let m = bob.wait_for(after(CONVERGE), "the 512 KiB broadcast", |m| {
        assert_ne!(m["msgType"], "Error", "{m}");
        m["msgType"] == "Broadcast"
    });
    assert_eq!(m["text"].as_str().map(str::len), Some(512 << 10));
}
