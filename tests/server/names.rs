//! Names a person can trust (issue 11): with "alice" online, no name that
//! looks like hers gets in; names are shown to everyone in NFC; a private
//! message finds its user the way names are compared.

use ragnarok_testkit::*;
use serde_json::{Value, json};

/// Logs in with `name` and returns the one `Error` seen and the Close code.
fn refused(server: &TestServer, name: &str) -> (Value, Option<u16>) {
    let mut client = server.connect();
    client.send_text(PASSWORD);
    client.send_text(name);
    let (seen, ending) = client.recv_until_end();
    assert_eq!(seen.len(), 1, "{name:?}: one Error before the close: {seen:?}");
    (seen[0].clone(), ending.code())
}

#[test]
fn look_alikes_of_an_online_name_are_refused() {
    let server = TestServer::start(json!({}));
    let mut alice = server.login("alice");
    let cases = [
        ("\u{202E}ecila", "invalid_name"), // right-to-left override: renders "alice"
        ("al\u{200D}ice", "invalid_name"), // zero-width joiner
        ("alice\u{200B}", "invalid_name"), // zero-width space
        ("\u{FEFF}alice", "invalid_name"), // byte order mark
        ("ali\u{2028}ce", "invalid_name"), // line separator
        ("\u{3164}", "invalid_name"),      // Hangul filler: nothing visible
        ("\u{2800}", "invalid_name"),      // braille blank: nothing visible
        ("alice\u{2800}", "invalid_name"), // "alice" and a blank
        ("Alice", "name_taken"),
        ("ALICE", "name_taken"),
        ("\u{430}lice", "name_taken"), // Cyrillic а
    ];
    for (name, code) in cases {
        let (error, close) = refused(&server, name);
        assert_eq!(error["msgType"], "Error", "{name:?}: {error}");
        assert_eq!(error["code"], code, "{name:?}: {error}");
        assert_eq!(close, Some(1008), "{name:?}");
    }
    // None of them got in: alice is still alone.
    alice.send_json(json!({"msgType": "OnlineUsers"}));
    assert_eq!(alice.recv_json(), json!({"msgType": "OnlineUsers", "Users": ["alice"]}));
}

#[test]
fn names_are_shown_in_nfc_and_compared_after_normalizing() {
    let server = TestServer::start(json!({}));
    let mut bob = server.login("bob");
    let nfd = "A\u{30A}sa";
    let nfc = "\u{C5}sa";

    // Åsa logs in with a decomposed Å: everyone sees the composed one.
    let mut asa = server.connect();
    asa.send_text(PASSWORD);
    asa.send_text(nfd);
    assert_eq!(asa.recv_json(), json!({"ServerName": "Test Room"}));
    let list = json!({"msgType": "OnlineUsers", "Users": ["bob", nfc]});
    assert_eq!(asa.recv_json(), list);
    assert_eq!(bob.recv_json(), list);
    asa.send_json(broadcast("hej"));
    let heard = bob.recv_type("Broadcast");
    assert_eq!(heard["SrcUser"], nfc, "{heard}");

    // The same name in either form is taken.
    for name in [nfc, nfd, "\u{E5}SA"] {
        let (error, close) = refused(&server, name);
        assert_eq!(error["code"], "name_taken", "{name:?}: {error}");
        assert!(error["text"].as_str().unwrap().contains(nfc), "{error}");
        assert_eq!(close, Some(1008));
    }
}

#[test]
fn private_messages_find_the_user_by_the_compared_name() {
    let server = TestServer::start(json!({}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");
    for target in ["alice", "Alice", "\u{430}lice"] {
        bob.send_json(json!({"msgType": "PrivateMessage", "TgtUser": target, "text": target}));
        let got = alice.recv_json();
        assert_eq!(got, json!({"msgType": "PrivateMessage", "SrcUser": "bob", "text": target}));
    }
    // An invalid target is simply not online.
    bob.send_json(json!({"msgType": "PrivateMessage", "TgtUser": "al\u{200D}ice", "text": "x"}));
    let error = bob.recv_json();
    assert_eq!(error["code"], "user_offline", "{error}");
    assert_eq!(error["TgtUser"], "al\u{200D}ice");
}
