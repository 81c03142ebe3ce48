//! Cluster history: a joiner gets the same recent broadcasts, in the
//! cluster's order, whichever node it joins, a node started after they were
//! sent included, and at most `history_max_bytes` of them.

use ragnarok_testkit::broadcast;
use ragnarok_testkit::cluster::*;
use serde_json::{Value, json};

const HISTORY: usize = 5;

/// The broadcasts as a joiner's replay shows them.
fn replayed(m: &Value) -> Value {
    json!({"msgType": "Broadcast", "SrcUser": m["SrcUser"], "text": m["text"], "history": true})
}

/// Logs `name` in on `node`, sends a live marker and returns the
/// broadcasts that came before it (the replay).
fn join_and_collect(cluster: &Cluster, node: usize, name: &str) -> Vec<Value> {
    let mut user = cluster.login(node, name);
    let marker = format!("live marker of {name}");
    user.send(broadcast(&marker));
    let mut seen = Vec::new();
    loop {
        let m =
            user.wait_for(after(CONVERGE), "its own live marker", |m| m["msgType"] == "Broadcast");
        if m["text"] == marker.as_str() {
            assert!(m.get("history").is_none(), "{name}: live marker marked history: {m}");
            assert_eq!(m["SrcUser"], name);
            return seen;
        }
        seen.push(m);
    }
}

/// Alice on node 0 and bob on node 1 send 4 broadcasts each, interleaved;
/// returns them in the order alice saw them (the cluster's order).
fn send_eight(cluster: &Cluster) -> Vec<Value> {
    let mut alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    let deadline = after(CONVERGE);
    alice.wait_users(deadline, &set(["alice", "bob"]));
    bob.wait_users(deadline, &set(["alice", "bob"]));
    for i in 0..4 {
        alice.send(broadcast(&format!("alice {i}")));
        bob.send(broadcast(&format!("bob {i}")));
    }
    let mut order = Vec::new();
    let deadline = after(CONVERGE);
    while order.len() < 8 {
        let m = alice.wait_for(deadline, "8 broadcasts", |m| m["msgType"] == "Broadcast");
        order.push(m);
    }
    // Bob saw the same order.
    for (i, expected) in order.iter().enumerate() {
        let m = bob.wait_for(deadline, "8 broadcasts", |m| m["msgType"] == "Broadcast");
        assert_eq!(&m, expected, "broadcast #{i}: bob and alice disagree");
    }
    order
}

#[test]
fn history_is_the_same_from_every_node() {
    let cluster = Cluster::start(3, json!({"history_size": HISTORY, "rate_limit_per_sec": 0}));
    let mut order = send_eight(&cluster);
    // Joins in turn on each node; each one's marker is history for the next.
    for (node, name) in [(2, "carol"), (0, "dave"), (1, "erin"), (2, "frank")] {
        let expected: Vec<Value> = order[order.len() - HISTORY..].iter().map(replayed).collect();
        let got = join_and_collect(&cluster, node, name);
        assert_eq!(got, expected, "{name}'s replay on node {node}");
        order.push(json!({"msgType": "Broadcast", "SrcUser": name, "text": format!("live marker of {name}")}));
    }
}

#[test]
fn a_node_started_later_replays_the_same_history() {
    let mut cluster = Cluster::start(2, json!({"history_size": HISTORY, "rate_limit_per_sec": 0}));
    let order = send_eight(&cluster);
    let late = cluster.add_node();
    let expected: Vec<Value> = order[order.len() - HISTORY..].iter().map(replayed).collect();
    let got = join_and_collect(&cluster, late, "carol");
    assert_eq!(got, expected, "carol's replay on the node started after the broadcasts");
}

/// At most `history_max_bytes` of replays, on a node that heard the
/// broadcasts live and on one that read them from Redis when it joined.
#[test]
fn a_joiner_is_replayed_at_most_history_max_bytes_from_every_node() {
    let config = json!({"history_size": HISTORY, "history_max_bytes": 3000});
    let mut cluster = Cluster::start(2, config);
    let mut alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    let deadline = after(CONVERGE);
    alice.wait_users(deadline, &set(["alice", "bob"]));
    let texts: Vec<String> = (0..HISTORY).map(|i| format!("#{i}:{}", "x".repeat(1000))).collect();
    for text in &texts {
        alice.send(broadcast(text));
    }
    for text in &texts {
        bob.wait_for(deadline, "alice's broadcasts", |m| m["text"] == text.as_str());
    }
    // 1,063 bytes a replay: two of them fit 3,000.
    let newest: Vec<Value> = texts[HISTORY - 2..]
        .iter()
        .map(|text| json!({"msgType": "Broadcast", "SrcUser": "alice", "text": text, "history": true}))
        .collect();
    assert_eq!(join_and_collect(&cluster, 1, "carol"), newest, "on a node that heard them");
    let late = cluster.add_node();
    // Carol's short live marker is history now, and fits beside them.
    let mut expected = newest;
    expected.push(replayed(&json!({"SrcUser": "carol", "text": "live marker of carol"})));
    let got = join_and_collect(&cluster, late, "dave");
    assert_eq!(got, expected, "on a node started later (from Redis)");
    let bytes: usize = got.iter().map(|m| m.to_string().len()).sum();
    assert!(bytes <= 3000, "{bytes} bytes of replays");
}
