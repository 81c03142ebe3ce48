//! Resuming in a cluster, from the flaky side: what a resumable session is
//! told must stay in one rising order of `seq` (a client drops a message
//! at or below the highest it has seen as a repeat), even when Redis loses
//! the room's memory under it.

use ragnarok_testkit::cluster::*;
use serde_json::{Value, json};
use std::time::Duration;

const RECOVERY: Duration = Duration::from_secs(20);

/// A resumable login on `server` (retried while the node joins).
fn login_resumable(cluster: &Cluster, node: usize, name: &str) -> User {
    let deadline = after(READY);
    loop {
        let mut client = cluster.nodes[node].connect();
        client.send_text(&cluster.nodes[node].password.clone());
        client.send_json(json!({"msgType": "Login", "name": name}));
        let mut user = User::new(name, client);
        let first = user.next(deadline).expect("an answer");
        if first["code"] == "cluster_unavailable" {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert!(first["resume"]["token"].is_string(), "{first}");
        user.wait_for(deadline, "OnlineUsers", |m| m["msgType"] == "OnlineUsers");
        return user;
    }
}

fn seq(m: &Value) -> Option<u64> {
    m["seq"].as_u64()
}

/// Redis emptied: the room's count starts over there, but a session that
/// lives on must not be handed numbers it has seen already (its client
/// would drop every message as a repeat until the count caught up).
#[test]
fn numbers_keep_rising_for_a_live_session_when_redis_is_emptied() {
    let cluster = Cluster::start(2, json!({"rate_limit_per_sec": 0}));
    let mut alice = login_resumable(&cluster, 0, "alice");
    let mut bob = cluster.login(1, "bob");
    alice.wait_users(after(CONVERGE), &set(["alice", "bob"]));
    let mut highest = 0;
    for i in 0..20 {
        bob.send(json!({"msgType": "Broadcast", "text": format!("before {i}")}));
    }
    let last = alice.wait_for(after(CONVERGE), "bob's 20th", |m| {
        highest = highest.max(seq(m).unwrap_or(0));
        m["text"] == "before 19"
    });
    assert!(seq(&last).is_some(), "{last}");

    assert_eq!(cluster.redis.command("FLUSHALL"), "+OK");
    let deadline = after(RECOVERY);
    let mut round = 0;
    loop {
        bob.send(json!({"msgType": "Broadcast", "text": format!("after {round}")}));
        round += 1;
        let window = after(Duration::from_millis(200)).min(deadline);
        let mut heard = false;
        while let Some(m) = alice.next(window) {
            if let Some(n) = seq(&m)
                && m["msgType"] == "Broadcast"
            {
                assert!(n > highest, "{m} after seq {highest}: a client drops it as a repeat");
                highest = n;
                heard |= m["SrcUser"] == "bob";
            }
        }
        if heard {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "bob not heard again: {}", alice.recent());
    }
}
