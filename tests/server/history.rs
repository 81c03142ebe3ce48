//! History on join: the last `history_size` broadcasts, in order, marked
//! `"history": true`, before live traffic; never private messages; off at 0.

use ragnarok_testkit::*;
use serde_json::json;

fn join_and_collect(server: &TestServer, name: &str) -> (Client, Vec<serde_json::Value>) {
    let mut client = server.connect();
    client.send_text(PASSWORD);
    client.send_text(name);
    // Mark the end of the welcome with a live message of our own.
    client.send_json(broadcast("live marker"));
    let mut seen = Vec::new();
    loop {
        let m = client.recv_json();
        if m["text"] == "live marker" {
            assert!(m.get("history").is_none());
            return (client, seen);
        }
        seen.push(m);
    }
}

#[test]
fn joiners_get_the_recent_broadcasts_in_order() {
    for server in TestServer::both(json!({"history_size": 3, "rate_limit_per_sec": 0})) {
        let mut alice = server.login("alice");
        let _bob = server.login("bob");
        for i in 0..5 {
            alice.send_json(broadcast(&format!("m{i}")));
        }
        alice.send_json(
            json!({"msgType": "PrivateMessage", "TgtUser": "bob", "text": "never kept"}),
        );
        for _ in 0..5 {
            alice.recv_type("Broadcast");
        }
        let (_carol, seen) = join_and_collect(&server, "carol");
        let replays: Vec<_> = seen.iter().filter(|m| m["msgType"] == "Broadcast").collect();
        let expected: Vec<_> = (2..5)
            .map(|i| json!({"msgType": "Broadcast", "SrcUser": "alice", "text": format!("m{i}"), "history": true}))
            .collect();
        assert_eq!(replays, expected.iter().collect::<Vec<_>>());
        assert!(seen[0]["ServerName"].is_string(), "welcome first: {seen:?}");
        assert!(!format!("{seen:?}").contains("never kept"));
    }
}

#[test]
fn history_off_at_zero() {
    let server = TestServer::start(json!({"history_size": 0}));
    let mut alice = server.login("alice");
    alice.send_json(broadcast("forgotten"));
    alice.recv_type("Broadcast");
    let (_bob, seen) = join_and_collect(&server, "bob");
    assert!(seen.iter().all(|m| m["msgType"] != "Broadcast"), "{seen:?}");
}
