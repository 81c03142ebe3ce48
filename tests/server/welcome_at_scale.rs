//! A joiner of a room whose snapshot (everyone's key) is larger than its
//! whole output limit still logs in and gets all of it: the snapshot is
//! streamed in parts as the joiner reads.

use ragnarok_testkit::e2e;
use ragnarok_testkit::*;
use serde_json::json;
use std::collections::BTreeSet;

#[test]
fn joiner_gets_a_snapshot_larger_than_its_limit() {
    let _busy = busy(); // loads the machine
    const USERS: usize = 100;
    let config = json!({"max_outbound_bytes": 4096, "max_connections_per_ip": 0,
                        "max_handshakes_per_ip": 0, "rate_limit_per_sec": 0});
    for server in TestServer::both(config) {
        // 100 users with keys (182 bytes each, the only size there is): a
        // 20 KB snapshot, more than four times the limit.
        let mut users = Vec::new();
        for i in 0..USERS {
            let mut user = server.login(&format!("user{i:03}"));
            let key = e2e::Keys::generate().published();
            user.send_json(json!({"msgType": "PublicKey", "key": key}));
            users.push(user);
        }
        let mut joiner = server.login("joiner");
        let mut keys = BTreeSet::new();
        while keys.len() < USERS {
            let m = joiner.recv_json();
            match m["msgType"].as_str() {
                Some("PublicKeys") => keys.extend(m["Keys"].as_object().unwrap().keys().cloned()),
                Some("PublicKey") => {
                    keys.insert(m["SrcUser"].as_str().unwrap().to_owned());
                }
                Some("UsersJoined" | "OnlineUsers") => {}
                _ => panic!("unexpected {m}"),
            }
        }
        assert_eq!(keys.len(), USERS);
        // Still connected and chatting: not cut off as a slow reader.
        joiner.send_json(broadcast("thanks"));
        assert_eq!(joiner.recv_type("Broadcast")["text"], "thanks");
        assert!(server.log().iter().all(|l| !l.contains("slow reader")), "{:#?}", server.log());
    }
}
