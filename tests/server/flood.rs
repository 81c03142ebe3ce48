//! A client over the rate limit has its excess refused with an error; one
//! that keeps flooding is disconnected with 1008. Others are unaffected.

use ragnarok_testkit::*;
use serde_json::json;

#[test]
fn flood_is_refused_then_disconnected() {
    for server in TestServer::both(json!({"rate_limit_per_sec": 5, "rate_limit_burst": 10})) {
        let (mut bob, mut flooder) = server.login_two("bob", "flooder");
        for i in 0..100 {
            flooder.send_json(broadcast(&format!("spam {i}")));
        }
        let (seen, ending) = flooder.recv_until_end();
        assert_eq!(ending.code(), Some(1008), "{seen:?}");
        let delivered: Vec<_> = seen.iter().filter(|m| m["msgType"] == "Broadcast").collect();
        let refused = seen.iter().filter(|m| m["code"] == "rate_limited").count();
        // The burst got through (a refill of a message or two at most).
        assert!((10..=12).contains(&delivered.len()), "{}", delivered.len());
        assert!(refused >= 9, "{refused} refusals");
        server.wait_log("abuse from 127.0.0.1: flood");

        // Bob got exactly the accepted ones, in order, then the leave.
        for (i, m) in delivered.iter().enumerate() {
            let got = bob.recv_json();
            assert_eq!(got["text"], format!("spam {i}"));
            assert_eq!(&&got, m);
        }
        assert_eq!(bob.recv_type("OnlineUsers")["Users"], json!(["bob"]));
        bob.send_json(broadcast("calm"));
        assert_eq!(bob.recv_json()["text"], "calm");
    }
}
