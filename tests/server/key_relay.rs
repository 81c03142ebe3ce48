//! Public key relay: publish, relay to the room, hand joiners the keys of
//! everyone online, refuse keys not in the e2e2 format, forget keys of users
//! who left. And clients of the documented scheme exchanging private
//! messages the server (and a raw client beside them) only sees as ciphertext.

use ragnarok_testkit::e2e;
use ragnarok_testkit::*;
use serde_json::{Value, json};

/// Feeds key messages to `keys` until it has `user`'s key (or, for its own
/// name, has seen its own relayed); other messages are skipped.
fn learn_key(raw: &mut Client, keys: &mut e2e::Client, user: &str) {
    while !keys.has_key(user) && keys.name() != Some(user) {
        let m = raw.recv_json();
        match m["msgType"].as_str() {
            Some("PublicKey") => {
                let from = m["SrcUser"].as_str().unwrap();
                keys.on_key(from, m["key"].as_str().unwrap());
            }
            Some("PublicKeys") => {
                keys.on_keys(m["Keys"].as_object().unwrap());
            }
            _ => {}
        }
    }
}

fn publish(raw: &mut Client, keys: &e2e::Client) {
    raw.send_json(json!({"msgType": "PublicKey", "key": keys.published()}));
}

fn private(to: &str, text: &str) -> Value {
    json!({"msgType": "PrivateMessage", "TgtUser": to, "text": text})
}

#[test]
fn keys_are_relayed_and_handed_to_joiners() {
    for server in TestServer::both(json!({})) {
        let (mut alice, mut bob) = server.login_two("alice", "bob");
        let alice_key = e2e::Keys::generate().published();
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
/// joiner's `PublicKeys`, and the page's import stopped at it. Issue 20: the
/// format is e2e2's. A key is that format or it is refused, relayed to no
/// one, handed to no joiner; a key published before stays.
#[test]
fn a_key_not_in_the_documented_format_is_refused() {
    for server in TestServer::both(json!({})) {
        let (mut bang, mut bob) = server.login_two("!", "bob");
        let good = e2e::Keys::generate().published();
        assert_eq!(good.len(), 182);
        let bang_key = e2e::Keys::generate().published();
        bang.send_json(json!({"msgType": "PublicKey", "key": bang_key}));
        assert_eq!(bang.recv_type("PublicKey")["key"], bang_key.as_str());
        assert_eq!(bob.recv_type("PublicKey")["key"], bang_key.as_str());
        let (ik, ek) = (&good[5..93], &good[94..]);
        for bad in [
            "not*base64".to_owned(),
            ik.to_owned(), // an e2e1 key: one point
            good[..181].to_owned(),
            format!("{good}="),
            format!("e2e1:{ik}:{ek}"),
            format!("e2e2:{ik};{ek}"),
            format!("e2e2:C{}:{ek}", &ik[1..]), // first byte 0x08: not uncompressed SEC1
            format!("e2e2:{ik}:{}", ek.replace('=', "A")),
        ] {
            bang.send_json(json!({"msgType": "PublicKey", "key": bad}));
            let refused = bang.recv_json();
            assert_eq!(refused["code"], "invalid_field", "{bad:?}: {refused}");
            let text = refused["text"].as_str().unwrap();
            assert!(text.contains("e2e2") && text.contains("base64"), "{refused}");
        }
        // Still the limit it always was, checked before anything else.
        bang.send_json(json!({"msgType": "PublicKey", "key": "k".repeat(15_000)}));
        assert_eq!(bang.recv_json()["code"], "key_too_large");
        bob.send_json(json!({"msgType": "PublicKey", "key": good}));
        assert_eq!(bang.recv_type("PublicKey")["SrcUser"], "bob");
        // Nothing of `!`'s refused keys reached bob: the next thing is bob's own key.
        assert_eq!(bob.recv_json(), json!({"msgType": "PublicKey", "SrcUser": "bob", "key": good}));
        let mut carol = server.login("carol");
        assert_eq!(
            carol.recv_type("PublicKeys"),
            json!({"msgType": "PublicKeys", "Keys": {"!": bang_key, "bob": good}})
        );
    }
}

/// Two clients of the scheme through the real server, both directions; a
/// raw client of the seed's protocol beside them; a replay by the server.
#[test]
fn documented_scheme_round_trip_through_the_server() {
    for server in TestServer::both(json!({})) {
        let (mut alice, mut bob) = server.login_two("alice", "bob");
        let mut eve = server.login("eve"); // publishes nothing, reads everything it gets
        let (mut alice_e2e, mut bob_e2e) =
            (e2e::Client::new(e2e::Keys::generate()), e2e::Client::new(e2e::Keys::generate()));
        publish(&mut alice, &alice_e2e);
        publish(&mut bob, &bob_e2e);
        // Each learns its own name from the relay of its own key, and the other's key.
        learn_key(&mut alice, &mut alice_e2e, "alice");
        learn_key(&mut alice, &mut alice_e2e, "bob");
        learn_key(&mut bob, &mut bob_e2e, "bob");
        learn_key(&mut bob, &mut bob_e2e, "alice");
        assert_eq!((alice_e2e.name(), bob_e2e.name()), (Some("alice"), Some("bob")));
        assert_eq!(alice_e2e.safety_number("bob"), bob_e2e.safety_number("alice"));

        let secret = "meet at the usual place";
        let sealed = alice_e2e.seal("bob", secret).unwrap();
        alice.send_json(private("bob", &sealed));
        let got = bob.recv_type("PrivateMessage");
        assert_eq!(got["SrcUser"], "alice");
        let relayed = got["text"].as_str().unwrap();
        assert_eq!(relayed, sealed);
        assert!(!relayed.contains(secret) && relayed.starts_with("e2e2:1:"));
        assert_eq!(bob_e2e.open("alice", relayed).unwrap().text, secret);
        let reply = bob_e2e.seal("alice", "see you there").unwrap();
        bob.send_json(private("alice", &reply));
        let got = alice.recv_type("PrivateMessage");
        assert_eq!(
            alice_e2e.open("bob", got["text"].as_str().unwrap()).unwrap().text,
            "see you there"
        );

        // The same ciphertext delivered again (a server replaying it): refused.
        alice.send_json(private("bob", &sealed));
        let again = bob.recv_type("PrivateMessage");
        assert_eq!(
            bob_e2e.open("alice", again["text"].as_str().unwrap()),
            Err(e2e::Refused::Replayed)
        );

        // Eve, who published no key, cannot be written to: nothing is sent.
        assert_eq!(alice_e2e.seal("eve", "hello eve"), Err(e2e::NotSent::NoKey));
        // What eve received in all this: the two keys, and nothing private.
        bob.send_json(broadcast("end"));
        let mut seen = Vec::new();
        loop {
            let m = eve.recv_json();
            if m["msgType"] == "Broadcast" && m["text"] == "end" {
                break;
            }
            seen.push(m);
        }
        assert!(seen.iter().all(|m| m["msgType"] != "PrivateMessage"), "{seen:?}");
        let log = server.log().join("\n");
        assert!(!log.contains(secret) && !log.contains("see you there"), "{log}");
    }
}

/// The name bound is the server's, learned from the relay of one's own key:
/// "Åsa" typed decomposed is "Åsa" composed, and reads what is sent to her.
#[test]
fn a_client_binds_its_name_as_the_server_has_it() {
    for server in TestServer::both(json!({})) {
        let typed = "A\u{30a}sa";
        let composed = "\u{c5}sa";
        let (mut asa, mut bob) = server.login_two(typed, "bob");
        let (mut asa_e2e, mut bob_e2e) =
            (e2e::Client::new(e2e::Keys::generate()), e2e::Client::new(e2e::Keys::generate()));
        publish(&mut asa, &asa_e2e);
        publish(&mut bob, &bob_e2e);
        learn_key(&mut asa, &mut asa_e2e, composed);
        assert_eq!(asa_e2e.name(), Some(composed));
        learn_key(&mut asa, &mut asa_e2e, "bob");
        learn_key(&mut bob, &mut bob_e2e, composed);
        learn_key(&mut bob, &mut bob_e2e, "bob");
        let sealed = bob_e2e.seal(composed, "hej Åsa").unwrap();
        bob.send_json(private(composed, &sealed));
        let got = asa.recv_type("PrivateMessage");
        assert_eq!(asa_e2e.open("bob", got["text"].as_str().unwrap()).unwrap().text, "hej Åsa");
        let reply = asa_e2e.seal("bob", "hej bob").unwrap();
        asa.send_json(private("bob", &reply));
        let got = bob.recv_type("PrivateMessage");
        assert_eq!(got["SrcUser"], composed);
        assert_eq!(bob_e2e.open(composed, got["text"].as_str().unwrap()).unwrap().text, "hej bob");
    }
}
