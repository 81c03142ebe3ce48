//! Resuming after a dropped connection, from the attacker's side (and a
//! flaky phone's): what a session kept away for its resume must not
//! outlive (a kick, a ban), and what a resume must not get past.

use ragnarok_testkit::*;
use serde_json::{Value, json};

/// A resumable login: the client (welcome and list read) and its `resume`.
fn login_resumable(server: &TestServer, name: &str) -> (Client, Value) {
    let mut client = server.connect();
    client.send_text(&server.password.clone());
    client.send_json(json!({"msgType": "Login", "name": name}));
    let welcome = client.recv_json();
    assert_eq!(welcome["ServerName"], "Test Room", "{welcome}");
    assert!(welcome["resume"]["token"].is_string(), "{welcome}");
    let users = client.recv_json();
    assert_eq!(users["msgType"], "OnlineUsers", "{users}");
    (client, welcome["resume"].clone())
}

/// A `Resume` on a new connection: its first answer.
fn resume(server: &TestServer, name: &str, at: &Value) -> (Client, Value) {
    let mut client = server.connect();
    client.send_text(&server.password.clone());
    client.send_json(json!({
        "msgType": "Resume", "name": name, "token": at["token"], "epoch": at["epoch"], "seq": at["seq"],
    }));
    let answer = client.recv_json();
    (client, answer)
}

fn online(server: &TestServer) -> Vec<String> {
    let who = server.ctl_json(&["who"]);
    let users = who["users"].as_array().unwrap();
    users.iter().map(|u| u["name"].as_str().unwrap().to_owned()).collect()
}

/// A kick ends the session even while it is away: the user leaves at once
/// and the token is void (a resume starts afresh, as a reset).
#[test]
fn a_kick_ends_an_away_session() {
    let server = TestServer::start(json!({}));
    let (mut alice, at) = login_resumable(&server, "alice");
    let mut bob = server.login("bob");
    alice.recv_type("OnlineUsers");
    drop(alice); // no Close: the link broke
    server.wait_log("kept 120 s for a resume");

    let out = server.ctl_ok(&["kick", "alice"]);
    assert_eq!(out.trim(), "alice was kicked");
    let users = bob.recv_type("OnlineUsers");
    assert_eq!(users["Users"], json!(["bob"]), "the kicked user left");
    bob.recv_type("Announcement");
    assert_eq!(online(&server), ["bob"]);

    let (_alice, answer) = resume(&server, "alice", &at);
    assert_eq!(answer["reset"], true, "a kicked session is not resumed: {answer}");
    assert!(answer.get("missed").is_none(), "{answer}");
}

/// A ban by name ends an away session under that name at once.
#[test]
fn a_ban_ends_an_away_session() {
    let server = TestServer::start(json!({}));
    let (mut alice, _) = login_resumable(&server, "alice");
    let mut bob = server.login("bob");
    alice.recv_type("OnlineUsers");
    drop(alice);
    server.wait_log("kept 120 s for a resume");

    let out = server.ctl_json(&["ban", "alice"]);
    assert_eq!(out["removed"], json!(["alice"]), "{out}");
    let users = bob.recv_type("OnlineUsers");
    assert_eq!(users["Users"], json!(["bob"]), "the banned user left");
    assert_eq!(online(&server), ["bob"]);
}

/// A ban by address ends an away session that was last at that address:
/// its user cannot come back from another one with the token.
#[test]
fn a_ban_by_address_ends_an_away_session_from_it() {
    const XFF: &str = "X-Forwarded-For";
    let server = TestServer::start(json!({"trusted_proxies": ["127.0.0.1"]}));
    let mut alice = server.connect_with(&[(XFF, "203.0.113.5")]);
    alice.send_text(&server.password.clone());
    alice.send_json(json!({"msgType": "Login", "name": "alice"}));
    let at = alice.recv_json()["resume"].clone();
    let mut bob = server.login("bob");
    alice.recv_type("OnlineUsers");
    drop(alice);
    server.wait_log("kept 120 s for a resume");

    let out = server.ctl_ok(&["ban", "203.0.113.0/24"]);
    assert!(out.contains("alice"), "the away session is among those removed: {out}");
    let users = bob.recv_type("OnlineUsers");
    assert_eq!(users["Users"], json!(["bob"]), "she left");
    assert_eq!(online(&server), ["bob"]);
    // From another address, the old token starts afresh.
    let mut client = server.connect_with(&[(XFF, "198.51.100.7")]);
    client.send_text(&server.password.clone());
    client.send_json(json!({
        "msgType": "Resume", "name": "alice", "token": at["token"], "epoch": at["epoch"], "seq": at["seq"],
    }));
    let answer = client.recv_json();
    assert_eq!(answer["reset"], true, "the banned session is over: {answer}");
}
