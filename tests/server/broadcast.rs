//! Broadcasts reach every online user, the sender included, in the order the
//! server accepted them, with the server's `SrcUser`.

use ragnarok_testkit::*;
use serde_json::json;

#[test]
fn broadcast_reaches_everyone_with_server_set_source() {
    for server in TestServer::both(json!({})) {
        let (mut alice, mut bob) = server.login_two("alice", "bob");
        alice.send_json(
            json!({"msgType": "Broadcast", "text": "hi all", "SrcUser": "mallory", "extra": [1]}),
        );
        let expected = json!({"msgType": "Broadcast", "SrcUser": "alice", "text": "hi all"});
        assert_eq!(alice.recv_json(), expected);
        assert_eq!(bob.recv_json(), expected);
    }
}

#[test]
fn broadcasts_from_many_senders_arrive_in_one_order_for_all() {
    for server in TestServer::both(json!({"rate_limit_per_sec": 0})) {
        let mut clients: Vec<Client> = (0..4).map(|i| server.login(&format!("user{i}"))).collect();
        // Drain the presence updates so only broadcasts remain.
        // (The last one read the full list at login.)
        for client in clients.iter_mut().take(3) {
            while client.recv_type("OnlineUsers")["Users"].as_array().unwrap().len() < 4 {}
        }
        const EACH: usize = 200;
        for n in 0..EACH {
            for (i, client) in clients.iter_mut().enumerate() {
                client.send_json(broadcast(&format!("{i}:{n}")));
            }
        }
        let mut orders = Vec::new();
        for client in clients.iter_mut() {
            let order: Vec<String> = (0..EACH * 4)
                .map(|_| {
                    let m = client.recv_json();
                    assert_eq!(m["msgType"], "Broadcast", "{m}");
                    format!("{}>{}", m["SrcUser"].as_str().unwrap(), m["text"].as_str().unwrap())
                })
                .collect();
            // Each sender's messages keep their order.
            for i in 0..4 {
                let mine: Vec<_> =
                    order.iter().filter(|t| t.starts_with(&format!("user{i}>"))).collect();
                let expected: Vec<String> = (0..EACH).map(|n| format!("user{i}>{i}:{n}")).collect();
                assert_eq!(mine, expected.iter().collect::<Vec<_>>());
            }
            orders.push(order);
        }
        assert!(orders.windows(2).all(|w| w[0] == w[1]), "every user saw the same order");
    }
}
