//! Login as the original server does it: password frame, then username
//! frame; the welcome; and every way a login is refused.

use ragnarok_testkit::*;
use serde_json::json;

#[test]
fn login_welcome_over_ws_and_wss() {
    for server in TestServer::both(json!({})) {
        let mut bob = server.connect();
        bob.send_text(PASSWORD);
        bob.send_text("bob");
        assert_eq!(bob.recv_json(), json!({"ServerName": "Test Room"}));
        assert_eq!(bob.recv_json(), json!({"msgType": "OnlineUsers", "Users": ["bob"]}));

        // Line clients such as websocat end each frame with a newline.
        let mut alice = server.connect();
        alice.send_text(&format!("{PASSWORD}\r\n"));
        alice.send_text("alice\n");
        assert_eq!(alice.recv_json(), json!({"ServerName": "Test Room"}));
        let list = json!({"msgType": "OnlineUsers", "Users": ["alice", "bob"]});
        assert_eq!(alice.recv_json(), list);
        assert_eq!(bob.recv_json(), list, "a small room hears the full list");
        server.wait_log("\"alice\" logged in");
    }
}

fn refused(server: &TestServer, password: &str, name: &str) -> (serde_json::Value, Option<u16>) {
    let mut client = server.connect();
    client.send_text(password);
    client.send_text(name);
    let (seen, ending) = client.recv_until_end();
    assert_eq!(seen.len(), 1, "one Error before the close: {seen:?}");
    (seen[0].clone(), ending.code())
}

#[test]
fn refusals_say_why_then_close() {
    for server in TestServer::both(json!({})) {
        let _bob = server.login("bob");
        let (error, code) = refused(&server, "wrong", "carol");
        assert_eq!(
            (error["msgType"].as_str(), error["code"].as_str()),
            (Some("Error"), Some("wrong_password"))
        );
        assert_eq!(code, Some(1008));

        let (error, code) = refused(&server, PASSWORD, "bob");
        assert_eq!(error["code"], "name_taken", "{error}");
        assert!(error["text"].as_str().unwrap().contains("bob"));
        assert_eq!(code, Some(1008));

        for bad in ["", " padded", &"x".repeat(33), "bell\u{7}"] {
            let (error, code) = refused(&server, PASSWORD, bad);
            assert_eq!(error["code"], "invalid_name", "{bad:?}: {error}");
            assert_eq!(code, Some(1008));
        }
        // Nobody else noticed any of it.
        let mut carol = server.login("carol");
        carol.send_json(json!({"msgType": "OnlineUsers"}));
        assert_eq!(carol.recv_json()["Users"], json!(["bob", "carol"]));
    }
}

#[test]
fn a_public_room_takes_any_password() {
    let server = TestServer::start(json!({"server_password": ""}));
    let mut client = server.connect();
    client.send_text("whatever");
    client.send_text("dave");
    assert_eq!(client.recv_json(), json!({"ServerName": "Test Room"}));
}

#[test]
fn binary_frame_during_login_is_refused() {
    let server = TestServer::start(json!({}));
    let mut client = server.connect();
    client.send(tungstenite::Message::binary(vec![1, 2, 3]));
    let (seen, ending) = client.recv_until_end();
    assert_eq!(seen[0]["code"], "binary_unsupported");
    assert_eq!(ending.code(), Some(1003));
}
