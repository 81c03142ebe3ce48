//! Public key relay: publish, relay to the room, hand joiners the keys of
//! everyone online, refuse oversize keys, forget keys of users who left.
//! And two clients of the documented scheme exchanging a private message
//! the server only ever sees as ciphertext.

use ragnarok_testkit::e2e;
use ragnarok_testkit::*;
use serde_json::json;

#[test]
fn keys_are_relayed_and_handed_to_joiners() {
    for server in TestServer::both(json!({})) {
        let (mut alice, mut bob) = server.login_two("alice", "bob");
        let alice_key = e2e::KeyPair::generate().public_b64();
        alice.send_json(json!({"msgType": "PublicKey", "key": alice_key}));
        let relayed = json!({"msgType": "PublicKey", "SrcUser": "alice", "key": alice_key});
        assert_eq!(alice.recv_json(), relayed);
        assert_eq!(bob.recv_json(), relayed);

        alice.send_json(json!({"msgType": "PublicKey", "key": "k".repeat(1025)}));
        assert_eq!(alice.recv_json()["code"], "key_too_large");
        alice.send_json(json!({"msgType": "PublicKey"}));
        assert_eq!(alice.recv_json()["code"], "missing_field");

        let mut carol = server.connect();
        carol.send_text(PASSWORD);
        carol.send_text("carol");
        assert!(carol.recv_json()["ServerName"].is_string());
        assert_eq!(carol.recv_json()["msgType"], "OnlineUsers");
        assert_eq!(
            carol.recv_json(),
            json!({"msgType": "PublicKeys", "Keys": {"alice": alice_key}})
        );

        drop(alice);
        // Until the server has seen alice leave: the list pushed when carol
        // joined may still be unread, so wait for one without alice.
        while bob.recv_type("OnlineUsers")["Users"].as_array().unwrap().contains(&json!("alice")) {}
        let mut dave = server.connect();
        dave.send_text(PASSWORD);
        dave.send_text("dave");
        dave.recv_json();
        dave.recv_json();
        // No keys left: no PublicKeys message; the next thing is live traffic.
        bob.send_json(broadcast("after alice"));
        assert_eq!(dave.recv_json()["text"], "after alice");
    }
}

/// Issue 17: a user named `!` published `not*base64`, sorted first in every
/// joiner's `PublicKeys`, and the page's import stopped at it. A key is the
/// documented format or it is refused, relayed to no one, handed to no joiner.
#[test]
fn a_key_not_in_the_documented_format_is_refused() {
    for server in TestServer::both(json!({})) {
        let (mut bang, mut bob) = server.login_two("!", "bob");
        let good = e2e::KeyPair::generate().public_b64();
        assert_eq!(good.len(), 88);
        let not_a_point = format!("C{}", &good[1..]); // first byte 0x08: not uncompressed SEC1
        for bad in
            ["not*base64", &good[..87], &format!("{good}="), &not_a_point, &good.replace('=', "A")]
        {
            bang.send_json(json!({"msgType": "PublicKey", "key": bad}));
            let refused = bang.recv_json();
            assert_eq!(refused["code"], "invalid_field", "{bad:?}: {refused}");
            assert!(refused["text"].as_str().unwrap().contains("base64"), "{refused}");
        }
        // Still the limit it always was, checked before anything else.
        bang.send_json(json!({"msgType": "PublicKey", "key": "k".repeat(15_000)}));
        assert_eq!(bang.recv_json()["code"], "key_too_large");
        bob.send_json(json!({"msgType": "PublicKey", "key": good}));
        assert_eq!(bang.recv_type("PublicKey")["SrcUser"], "bob");
        // Nothing of `!`'s reached bob: the next thing is bob's own key.
        assert_eq!(bob.recv_json(), json!({"msgType": "PublicKey", "SrcUser": "bob", "key": good}));
        let mut carol = server.login("carol");
        assert_eq!(
            carol.recv_type("PublicKeys"),
            json!({"msgType": "PublicKeys", "Keys": {"bob": good}})
        );
    }
}

#[test]
fn documented_scheme_round_trip_through_the_server() {
    for server in TestServer::both(json!({})) {
        let (mut alice, mut bob) = server.login_two("alice", "bob");
        let (alice_keys, bob_keys) = (e2e::KeyPair::generate(), e2e::KeyPair::generate());
        let (alice_pub, bob_pub) = (alice_keys.public_b64(), bob_keys.public_b64());
        alice.send_json(json!({"msgType": "PublicKey", "key": alice_pub}));
        bob.send_json(json!({"msgType": "PublicKey", "key": bob_pub}));
        // Each learns the other's key from the relay.
        let bob_seen = alice.recv_type("PublicKey");
        let bob_seen =
            if bob_seen["SrcUser"] == "bob" { bob_seen } else { alice.recv_type("PublicKey") };
        assert_eq!(bob_seen["key"], bob_pub.as_str());
        assert_eq!(e2e::fingerprint(&bob_pub).len(), 39);

        let alice_session = alice_keys.agree(&bob_pub);
        let secret = "meet at the usual place";
        let sealed = alice_session.seal("alice", "bob", secret);
        alice.send_json(json!({"msgType": "PrivateMessage", "TgtUser": "bob", "text": sealed}));
        let got = bob.recv_type("PrivateMessage");
        assert_eq!(got["SrcUser"], "alice");
        let relayed = got["text"].as_str().unwrap();
        assert!(!relayed.contains(secret) && relayed.starts_with("e2e1:"));
        let bob_session = bob_keys.agree(&alice_pub);
        assert_eq!(bob_session.open("alice", "bob", relayed).as_deref(), Some(secret));
        // Bound to sender and recipient: a reflected message does not open.
        assert_eq!(bob_session.open("bob", "alice", relayed), None);
    }
}
