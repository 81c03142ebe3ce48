//! Whatever a client sends, its share of the log stays a few lines a
//! minute: refusals are logged once per interval with a count.

use ragnarok_testkit::*;
use serde_json::json;
use tungstenite::Message;

#[test]
fn ten_thousand_refusals_make_one_log_line() {
    let _busy = busy(); // loads the machine
    for server in TestServer::both(json!({"rate_limit_per_sec": 0})) {
        let (mut alice, mut bob) = server.login_two("alice", "bob");
        let port = alice.ws.get_ref().tcp().local_addr().unwrap().port().to_string();
        let before = server.log().len();
        for i in 0..10_000 {
            match i % 4 {
                0 => alice.send_text("not json"),
                1 => alice.send(Message::binary(vec![1, 2, 3])),
                2 => alice.send_json(json!({"msgType": "x".repeat(1000)})),
                _ => alice.send_json(
                    json!({"msgType": "PrivateMessage", "TgtUser": "nobody", "text": "x"}),
                ),
            }
            if i % 100 == 99 {
                // Read the replies so that this is not a slow reader.
                for _ in 0..100 {
                    alice.recv_json();
                }
            }
        }
        alice.send_json(broadcast("done"));
        assert_eq!(bob.recv_json()["text"], "done");
        let lines: Vec<_> = server.log().into_iter().skip(before).collect();
        let from_alice = lines.iter().filter(|l| l.contains(&port)).count();
        assert!(from_alice <= 2, "{from_alice} lines for 10,000 refusals: {lines:#?}");
        let bytes: usize = lines.iter().map(|l| l.len()).sum();
        assert!(bytes < 1000, "{bytes} bytes of log");
    }
}
