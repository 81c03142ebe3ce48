//! Protocol violations close the connection with a fitting code: oversize
//! messages (1009), invalid UTF-8 (1007), broken framing (1002). Others
//! keep chatting.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::Write;
use tungstenite::Message;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

#[test]
fn oversize_message_is_closed_with_1009() {
    for server in TestServer::both(json!({"max_message_bytes": 1024})) {
        let (mut bob, mut alice) = server.login_two("bob", "alice");
        alice.send_json(broadcast(&"x".repeat(900)));
        assert_eq!(bob.recv_json()["text"].as_str().unwrap().len(), 900);
        alice.send_json(broadcast(&"x".repeat(2000)));
        let (seen, ending) = alice.recv_until_end();
        assert_eq!(ending.code(), Some(1009), "{seen:?}");
        assert!(seen.iter().any(|m| m["code"] == "message_too_big"), "{seen:?}");
        assert_eq!(bob.recv_type("OnlineUsers")["Users"], json!(["bob"]));
        server.wait_log("over the 1024 limit");
    }
}

#[test]
fn invalid_utf8_is_closed_with_1007() {
    for server in TestServer::both(json!({})) {
        let mut alice = server.login("alice");
        let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
        alice.send(Message::Frame(bad));
        let (_, ending) = alice.recv_until_end();
        assert_eq!(ending.code(), Some(1007));
        let mut bob = server.login("bob");
        bob.send_json(broadcast("fine"));
        assert_eq!(bob.recv_json()["text"], "fine");
    }
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    let server = TestServer::start(json!({}));
    let mut alice = server.login("alice");
    // A raw, unmasked text frame straight onto the socket.
    let stream = alice.ws.get_mut();
    stream.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let (_, ending) = alice.recv_until_end();
    assert_eq!(ending.code(), Some(1002));
}
