//! e2e2 private messages across two nodes, with Redis read directly: a raw
//! subscriber to the room's channel and the `pubkeys` hash see the keys and
//! the ciphertext, never the texts.

use ragnarok_testkit::cluster::*;
use ragnarok_testkit::e2e;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A raw Redis connection that sent `command` and collects every byte
/// Redis sends it until `stop`.
fn raw_redis(port: u16, command: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    tcp.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    tcp
}

/// Everything readable on `tcp` until it has been quiet for 300 ms.
fn drain(tcp: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                bytes.extend(&buf[..n]);
                quiet_since = Instant::now();
            }
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Feeds `user`'s key messages to `keys` until it has `name`'s key (or has
/// seen its own, for its own name).
fn learn_key(user: &mut User, keys: &mut e2e::Client, name: &str) {
    let deadline = after(CONVERGE);
    while !keys.has_key(name) && keys.name() != Some(name) {
        let m = user.wait_for(deadline, &format!("{name}'s key"), |m| {
            m["msgType"] == "PublicKey" || m["msgType"] == "PublicKeys"
        });
        match &m["Keys"] {
            serde_json::Value::Object(map) => {
                keys.on_keys(map);
            }
            _ => {
                keys.on_key(m["SrcUser"].as_str().unwrap(), m["key"].as_str().unwrap());
            }
        }
    }
}

#[test]
fn redis_carries_only_keys_and_ciphertext() {
    let cluster = Cluster::start(2, json!({}));
    let prefix = format!("ragnarok:{}:", cluster.name);
    let mut channel = raw_redis(cluster.redis.port, &format!("SUBSCRIBE {prefix}events"));
    let mut alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    let deadline = after(CONVERGE);
    for user in [&mut alice, &mut bob] {
        user.wait_users(deadline, &set(["alice", "bob"]));
    }
    let (mut alice_e2e, mut bob_e2e) =
        (e2e::Client::new(e2e::Keys::generate()), e2e::Client::new(e2e::Keys::generate()));
    alice.send(json!({"msgType": "PublicKey", "key": alice_e2e.published()}));
    bob.send(json!({"msgType": "PublicKey", "key": bob_e2e.published()}));
    learn_key(&mut alice, &mut alice_e2e, "alice");
    learn_key(&mut alice, &mut alice_e2e, "bob");
    learn_key(&mut bob, &mut bob_e2e, "bob");
    learn_key(&mut bob, &mut bob_e2e, "alice");

    let (secret, answer) = ("the vault code is 0451", "noted, burn this");
    let sealed = alice_e2e.seal("bob", secret).unwrap();
    alice.send(json!({"msgType": "PrivateMessage", "TgtUser": "bob", "text": sealed}));
    let got =
        bob.wait_for(after(CONVERGE), "alice's message", |m| m["msgType"] == "PrivateMessage");
    assert_eq!(got["SrcUser"], "alice");
    assert_eq!(bob_e2e.open("alice", got["text"].as_str().unwrap()).unwrap().text, secret);
    let reply = bob_e2e.seal("alice", answer).unwrap();
    bob.send(json!({"msgType": "PrivateMessage", "TgtUser": "alice", "text": reply}));
    let got = alice.wait_for(after(CONVERGE), "bob's answer", |m| m["msgType"] == "PrivateMessage");
    assert_eq!(alice_e2e.open("bob", got["text"].as_str().unwrap()).unwrap().text, answer);

    // A broadcast, which is not encrypted: it shows the reads below see
    // what is there.
    alice.send(json!({"msgType": "Broadcast", "text": "said to the whole room"}));
    bob.wait_for(after(CONVERGE), "the broadcast", |m| m["msgType"] == "Broadcast");

    // What Redis carried: both keys and both ciphertexts, neither text.
    let events = drain(&mut channel);
    for seen in [alice_e2e.published(), bob_e2e.published(), &sealed, &reply] {
        assert!(events.contains(seen), "{seen} not on the channel: {events}");
    }
    // And what it keeps: the keys; the texts nowhere.
    let mut dump = raw_redis(cluster.redis.port, &format!("HGETALL {prefix}pubkeys"));
    let pubkeys = drain(&mut dump);
    assert!(pubkeys.contains(alice_e2e.published()) && pubkeys.contains(bob_e2e.published()));
    let mut dump = raw_redis(cluster.redis.port, &format!("LRANGE {prefix}history 0 -1"));
    let history = drain(&mut dump);
    assert!(
        events.contains("said to the whole room") && history.contains("said to the whole room")
    );
    for everything in [&events, &pubkeys, &history, &cluster.logs()] {
        assert!(!everything.contains(secret) && !everything.contains(answer), "{everything}");
    }
}
