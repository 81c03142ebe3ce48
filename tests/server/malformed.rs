//! Malformed or unknown messages get an `Error` with a stable code and the
//! connection stays open; other users notice nothing.

use ragnarok_testkit::*;
use serde_json::json;
use std::time::Duration;
use tungstenite::Message;

#[test]
fn each_bad_message_gets_an_error_and_the_session_goes_on() {
    for server in TestServer::both(json!({})) {
        let (mut alice, mut bob) = server.login_two("alice", "bob");
        let cases = [
            ("not json at all", "bad_json"),
            ("{\"msgType\": \"Broadcast\", ", "bad_json"),
            ("[\"Broadcast\"]", "bad_json"),
            ("\"just a string\"", "bad_json"),
            ("{\"text\": \"no type\"}", "missing_field"),
            ("{\"msgType\": \"Broadcast\"}", "missing_field"),
            ("{\"msgType\": \"PrivateMessage\", \"text\": \"x\"}", "missing_field"),
            ("{\"msgType\": \"Broadcast\", \"text\": 42}", "invalid_field"),
            ("{\"msgType\": null}", "invalid_field"),
            ("{\"msgType\": \"SelfDestruct\"}", "unknown_type"),
        ];
        for (input, code) in cases {
            alice.send_text(input);
            let error = alice.recv_json();
            assert_eq!(error["msgType"], "Error", "{input}");
            assert_eq!(error["code"], code, "{input}: {error}");
            assert!(!error["text"].as_str().unwrap().is_empty());
        }
        alice.send(Message::binary(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(alice.recv_json()["code"], "binary_unsupported");

        // Eleven refusals, one log line: the rest are counted for later.
        server.wait_log("refused a message: bad_json");
        let lines = server.log().iter().filter(|l| l.contains("refused")).count();
        assert_eq!(lines, 1, "{:#?}", server.log());
        bob.expect_silence(Duration::from_millis(200));
        alice.send_json(broadcast("after all that"));
        assert_eq!(bob.recv_json()["text"], "after all that");
        assert_eq!(alice.recv_json()["text"], "after all that");
    }
}
