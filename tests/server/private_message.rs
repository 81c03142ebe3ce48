//! Private messages go to the target alone; an offline target is an error
//! for the sender.

use ragnarok_testkit::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn private_message_reaches_only_the_target() {
    for server in TestServer::both(json!({})) {
        let mut alice = server.login("alice");
        let mut bob = server.login("bob");
        let mut carol = server.login("carol");
        alice.recv_type("OnlineUsers");
        alice.recv_type("OnlineUsers");
        bob.recv_type("OnlineUsers");
        let opaque = "6a1f09:ciphertext-the-server-cannot-read";
        alice.send_json(json!({"msgType": "PrivateMessage", "TgtUser": "bob", "text": opaque, "SrcUser": "carol"}));
        assert_eq!(
            bob.recv_json(),
            json!({"msgType": "PrivateMessage", "SrcUser": "alice", "text": opaque})
        );
        carol.expect_silence(Duration::from_millis(300));
        alice.expect_silence(Duration::from_millis(100));
    }
}

#[test]
fn offline_target_is_an_error_for_the_sender() {
    for server in TestServer::both(json!({})) {
        let mut alice = server.login("alice");
        alice.send_json(json!({"msgType": "PrivateMessage", "TgtUser": "nobody", "text": "x"}));
        let error = alice.recv_json();
        assert_eq!(error["msgType"], "Error");
        assert_eq!(error["code"], "user_offline");
        assert_eq!(error["TgtUser"], "nobody");
        // Still connected.
        alice.send_json(broadcast("still here"));
        assert_eq!(alice.recv_json()["text"], "still here");
    }
}
