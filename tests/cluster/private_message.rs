//! Cluster private messages: one reaches its target on another node (and
//! nobody else); a name online nowhere is `user_offline`.

use ragnarok_testkit::cluster::*;
use serde_json::{Value, json};
use std::time::Duration;

fn private(to: &str, text: &str) -> Value {
    json!({"msgType": "PrivateMessage", "TgtUser": to, "text": text})
}

/// Nothing but presence news for `user` during `wait`.
fn no_private_message(user: &mut User, wait: Duration) {
    let deadline = after(wait);
    while let Some(m) = user.next(deadline) {
        assert!(
            ["OnlineUsers", "UsersJoined", "UsersLeft"]
                .contains(&m["msgType"].as_str().unwrap_or("")),
            "{} should have got nothing, got {m}",
            user.name
        );
    }
}

#[test]
fn a_private_message_crosses_nodes_and_offline_is_an_error() {
    let cluster = Cluster::start(2, json!({}));
    let mut alice = cluster.login(0, "alice");
    let mut dave = cluster.login(0, "dave");
    let mut bob = cluster.login(1, "bob");
    let mut carol = cluster.login(1, "carol");
    let all = set(["alice", "bob", "carol", "dave"]);
    let deadline = after(CONVERGE);
    for user in [&mut alice, &mut bob, &mut carol, &mut dave] {
        user.wait_users(deadline, &all);
    }

    // node 0 → node 1, the server sets SrcUser.
    // (The server does not look at the text: any string is relayed as is.)
    let opaque = "e2e2:1:Y2lwaGVydGV4dCB0aGUgc2VydmVyIGNhbm5vdCByZWFk";
    let mut forged = private("bob", opaque);
    forged["SrcUser"] = json!("carol");
    alice.send(forged);
    let m = bob
        .wait_for(after(CONVERGE), "alice's private message", |m| m["msgType"] == "PrivateMessage");
    assert_eq!(m, json!({"msgType": "PrivateMessage", "SrcUser": "alice", "text": opaque}));
    // node 1 → node 0, and the name compared as at login.
    bob.send(private("Alice", "reply"));
    let m = alice.wait_for(after(CONVERGE), "bob's reply", |m| m["msgType"] == "PrivateMessage");
    assert_eq!(m, json!({"msgType": "PrivateMessage", "SrcUser": "bob", "text": "reply"}));
    for user in [&mut carol, &mut dave, &mut alice, &mut bob] {
        no_private_message(user, Duration::from_millis(300));
    }

    // A name online nowhere.
    alice.send(private("nobody", "x"));
    let error = alice.wait_for(after(CONVERGE), "an Error", |m| m["msgType"] == "Error");
    assert_eq!(error["code"], "user_offline", "{error}");
    assert_eq!(error["TgtUser"], "nobody", "{error}");

    // Someone who was on the other node and has gone.
    drop(carol);
    alice.wait_users(after(CONVERGE), &set(["alice", "bob", "dave"]));
    alice.send(private("carol", "too late"));
    let error = alice.wait_for(after(CONVERGE), "an Error", |m| m["msgType"] == "Error");
    assert_eq!(error["code"], "user_offline", "{error}");
    assert_eq!(error["TgtUser"], "carol", "{error}");
    no_private_message(&mut bob, Duration::from_millis(300));
}
