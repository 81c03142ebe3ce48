//! A user who stops reading is cut off once their queue passes
//! `max_outbound_bytes`; everyone else receives everything, in order.

use ragnarok_testkit::*;
use serde_json::json;

#[test]
fn slow_reader_is_cut_off_and_nobody_else_notices() {
    let _busy = busy(); // loads the machine
    // The rates off: the talker sends 5 MB as fast as it can.
    let config = json!({"rate_limit_per_sec": 0, "rate_limit_bytes_per_sec": 0, "max_outbound_bytes": 65536});
    for server in TestServer::both(config) {
        let mut sleeper = server.login("sleeper");
        let mut talker = server.login("talker");
        sleeper.recv_type("OnlineUsers");
        const COUNT: usize = 5000;
        let filler = "y".repeat(1000);
        // The talker sends 5 MB of broadcasts, staying at most 32 messages
        // ahead of its own copies, and checks every copy arrives in order.
        let mut presence = Vec::new();
        let mut check = |talker: &mut Client, n: usize| loop {
            let m = talker.recv_json();
            if m["msgType"] == "OnlineUsers" {
                presence.push(m);
                continue;
            }
            let text = m["text"].as_str().unwrap();
            assert!(text.starts_with(&format!("{n}:")), "expected #{n}");
            break;
        };
        for i in 0..COUNT {
            talker.send_json(broadcast(&format!("{i}:{filler}")));
            if i >= 32 {
                check(&mut talker, i - 32);
            }
        }
        for n in COUNT - 32..COUNT {
            check(&mut talker, n);
        }
        server.wait_log("slow reader");
        // The talker heard that the sleeper is gone.
        assert_eq!(presence, [json!({"msgType": "OnlineUsers", "Users": ["talker"]})]);

        // The sleeper wakes: an in-order prefix, then why, then the close.
        let (seen, ending) = sleeper.recv_until_end();
        assert_eq!(ending.code(), Some(1008));
        let last = seen.last().unwrap();
        assert_eq!(last["code"], "slow_reader", "{last}");
        let texts: Vec<_> = seen.iter().filter(|m| m["msgType"] == "Broadcast").collect();
        assert!(texts.len() < COUNT, "the sleeper was cut off early");
        for (i, m) in texts.iter().enumerate() {
            assert!(m["text"].as_str().unwrap().starts_with(&format!("{i}:")));
        }
    }
}
