//! Resuming on another node (docs/PROTOCOL.md, "Resuming after a dropped
//! connection"; issue 19): two nodes on a real `redis-server`. A user cut
//! off on one node (a real drop, through a [`Relay`]) resumes on the other
//! and gets exactly what it missed, with the `seq` numbers the first node
//! gave; nobody sees it leave; after Redis is emptied the epoch changes and
//! a resume is a reset; tokens are refused on every node alike.

use std::time::{Duration, Instant};

use ragnarok_testkit::cluster::*;
use ragnarok_testkit::resume::forged_token;
use ragnarok_testkit::*;
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// The grace in these tests: short, so that a node's grace running out
/// for a session resumed elsewhere is seen within the test.
const GRACE: u64 = 4;

fn is_presence(m: &Value) -> bool {
    matches!(m["msgType"].as_str(), Some("OnlineUsers" | "UsersJoined" | "UsersLeft"))
}

/// A seed client's message: no `seq`, no field the seed did not send.
fn seed_shaped(who: &str, m: &Value) {
    let keys: Vec<&str> = m.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let allowed: &[&str] = match m["msgType"].as_str() {
        Some("Broadcast") => &["SrcUser", "msgType", "text"],
        Some("OnlineUsers" | "UsersJoined" | "UsersLeft") => &["Users", "msgType"],
        _ => panic!("{who}: unexpected {m}"),
    };
    assert!(keys.iter().all(|k| allowed.contains(k)), "{who}: a field the seed never sent in {m}");
}

/// Reads `user`'s messages for `wait`: none may be about presence.
fn no_presence_for(user: &mut User, wait: Duration) {
    let deadline = after(wait);
    while let Some(m) = user.next(deadline) {
        assert!(!is_presence(&m), "{}: {m}; last messages: {}", user.name, user.recent());
    }
}

/// Reads until `from`'s broadcast `text`, which must come before any
/// presence news; returns it.
fn next_broadcast(user: &mut User, from: &str, text: &str) -> Value {
    let deadline = after(CONVERGE);
    let what = format!("{from}'s {text:?}");
    let m = user.wait_for(deadline, &what, |m| {
        assert!(!is_presence(m), "presence news before {what}: {m}");
        m["msgType"] == "Broadcast"
    });
    assert_eq!(m["SrcUser"], from, "{m}");
    assert_eq!(m["text"], text, "{m}");
    m
}

/// Cuts the relay; returns what the user needs to come back.
fn cut_off(relay: &Relay, who: Resumable) -> Ticket {
    assert_eq!(relay.cut(), 1);
    let Resumable { mut client, ticket, .. } = who;
    let (_, ending) = client.recv_until_end();
    assert!(matches!(ending, Ending::Eof), "a cut is no Close: {ending:?}");
    ticket
}

/// A `Resume` on `node` refused with `code` and 1008.
fn refused(node: &TestServer, ticket: &Ticket, code: &str) {
    let (mut client, answer) = node.send_resume(node.connect(), ticket);
    assert_eq!(answer["code"], code, "{answer}");
    assert_eq!(client.recv_until_end().1.code(), Some(1008), "after {answer}");
}

/// Reads `who`'s messages until one listing `name` among those online
/// (unless the last list read already does).
fn until_listed(who: &mut Resumable, name: &str) {
    let last = who.seen.iter().rev().find(|m| m["msgType"] == "OnlineUsers");
    if last.is_some_and(|m| m["Users"].as_array().unwrap().iter().any(|u| u == name)) {
        return;
    }
    who.recv_until(&format!("a list with {name}"), |m| {
        m["msgType"] == "OnlineUsers" && m["Users"].as_array().unwrap().iter().any(|u| u == name)
    });
}

#[test]
fn resume_on_the_other_node_gets_exactly_what_was_missed() {
    let cluster = Cluster::start(2, json!({"resume_grace_secs": GRACE}));
    let (one, two) = (&cluster.nodes[0], &cluster.nodes[1]);
    // Seed clients on both nodes (their logins also wait for the nodes to
    // join the cluster).
    let mut watcher = cluster.login(0, "watcher");
    let mut observer = cluster.login(1, "obs");
    watcher.wait_users(after(CONVERGE), &set(["obs", "watcher"]));
    let mut bob = one.login_resumable("bob");
    let relay = Relay::start(one.addr);
    let mut alice = one.login_resumable_via(relay.addr(), "alice");
    let all = set(["alice", "bob", "obs", "watcher"]);
    for seed in [&mut watcher, &mut observer] {
        seed.wait_users(after(CONVERGE), &all);
    }
    until_listed(&mut bob, "alice");
    until_listed(&mut alice, "obs");
    let ticket = cut_off(&relay, alice);
    let bob_from = bob.seen.len();

    bob.send(broadcast("one"));
    bob.send(broadcast("two"));
    bob.send(json!({"msgType": "PrivateMessage", "TgtUser": "alice", "text": "psst"}));
    bob.send(broadcast("three"));
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        let own = bob.recv();
        assert_eq!(
            without_seq(&own),
            json!({"msgType": "Broadcast", "SrcUser": "bob", "text": text})
        );
        sent.push(seq_of(&own).unwrap_or_else(|| panic!("no seq on {own}")));
        for seed in [&mut watcher, &mut observer] {
            seed_shaped(&seed.name.clone(), &next_broadcast(seed, "bob", text));
        }
    }

    let (answer, mut alice) = two.resume(two.connect(), &ticket);
    assert_eq!(answer["missed"], 4, "{answer}");
    assert_exact(&answer, &ticket);
    let missed: Vec<Value> = (0..4).map(|_| alice.recv()).collect();
    assert_eq!(
        missed.iter().map(without_seq).collect::<Vec<_>>(),
        [
            json!({"msgType": "Broadcast", "SrcUser": "bob", "text": "one"}),
            json!({"msgType": "Broadcast", "SrcUser": "bob", "text": "two"}),
            json!({"msgType": "PrivateMessage", "SrcUser": "bob", "text": "psst"}),
            json!({"msgType": "Broadcast", "SrcUser": "bob", "text": "three"}),
        ],
        "the replay on the other node: {missed:?}"
    );
    let seqs: Vec<u64> =
        missed.iter().map(|m| seq_of(m).unwrap_or_else(|| panic!("no seq: {m}"))).collect();
    assert_eq!(
        [seqs[0], seqs[1], seqs[3]],
        [sent[0], sent[1], sent[2]],
        "node 1's numbers: {missed:?}"
    );
    assert!(sent[1] < seqs[2] && seqs[2] < sent[2], "{missed:?}");
    let now = alice.recv();
    assert_eq!(now["msgType"], "OnlineUsers", "{now}");
    assert_eq!(names(&now), all, "{now}");
    let position = seq_of(&now).unwrap_or_else(|| panic!("no seq on {now}"));
    assert!(position >= sent[2], "{now}");

    // Past the grace node 1 gave the cut connection: still no leave.
    let resumed = Instant::now();
    for seed in [&mut watcher, &mut observer] {
        let left = (Duration::from_secs(GRACE + 1)).saturating_sub(resumed.elapsed());
        no_presence_for(seed, left);
    }
    alice.send(broadcast("back"));
    let own = alice.recv_until("her own broadcast", |m| m["msgType"] == "Broadcast").pop().unwrap();
    assert_eq!(
        without_seq(&own),
        json!({"msgType": "Broadcast", "SrcUser": "alice", "text": "back"})
    );
    let back = seq_of(&own).unwrap();
    assert!(back > position, "{own}");
    let at_bob =
        bob.recv_until("alice's broadcast", |m| m["msgType"] == "Broadcast").pop().unwrap();
    assert_eq!(at_bob, own, "the same seq on both nodes");
    assert!(
        !bob.seen[bob_from..].iter().any(is_presence),
        "bob saw presence news: {}",
        bob.recent()
    );
    for seed in [&mut watcher, &mut observer] {
        seed_shaped(&seed.name.clone(), &next_broadcast(seed, "alice", "back"));
        assert_eq!(seed.users, all);
    }
}

#[test]
fn after_redis_is_emptied_a_resume_is_a_reset() {
    let cluster = Cluster::start(2, json!({}));
    let (one, two) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut watcher = cluster.login(0, "watcher");
    let mut observer = cluster.login(1, "obs");
    let relay = Relay::start(one.addr);
    let alice = one.login_resumable_via(relay.addr(), "alice");
    let ticket = cut_off(&relay, alice);

    assert_eq!(cluster.redis.command("FLUSHALL"), "+OK");
    // The room works again across the nodes.
    until_broadcasts_cross(
        &mut watcher,
        &mut observer,
        Duration::from_secs(15),
        only_trouble_errors,
    );

    let deadline = after(READY);
    let (answer, mut alice) = loop {
        let (client, answer) = two.send_resume(two.connect(), &ticket);
        if answer["code"] == "cluster_unavailable" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(answer["msgType"], "Resumed", "{answer}");
        break (answer.clone(), Resumable::new("alice", client, &answer));
    };
    assert_eq!(answer["reset"], true, "after FLUSHALL: {answer}, resuming {ticket:?}");
    assert!(answer["why"].is_string(), "{answer}");
    assert_ne!(
        answer["resume"]["epoch"],
        ticket.epoch.as_str(),
        "Redis emptied, a new epoch: {answer}"
    );
    until_listed(&mut alice, "alice");
    observer.wait_users(after(CONVERGE), &set(["alice", "obs", "watcher"]));
}

#[test]
fn a_stale_or_wrong_token_is_refused_on_the_other_node_too() {
    let cluster = Cluster::start(2, json!({}));
    let (one, two) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut observer = cluster.login(1, "obs");
    let _warm = cluster.login(0, "watcher");
    let mut alice = one.login_resumable("alice");
    observer.wait_users(after(CONVERGE), &set(["alice", "obs", "watcher"]));

    refused(two, &alice.ticket.with_token(&forged_token(7)), "resume_refused");

    // A goodbye, a new login on node 1: the first token is stale.
    let stale = alice.ticket.clone();
    alice.client.ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })).unwrap();
    let _ = alice.client.recv_until_end();
    observer.wait_users(after(CONVERGE), &set(["obs", "watcher"]));
    let mut alice = one.login_resumable("alice");
    assert_ne!(alice.ticket.token, stale.token);
    observer.wait_users(after(CONVERGE), &set(["alice", "obs", "watcher"]));
    refused(two, &stale, "resume_refused");

    // The live token moves the session to node 2; node 1 closes the old
    // connection, and nobody sees a leave.
    let (answer, mut moved) = two.resume(two.connect(), &alice.ticket);
    assert!(answer.get("reset").is_none_or(|r| r == false), "{answer}");
    let (seen, ending) = alice.client.recv_until_end();
    assert_eq!(
        seen.last().map(|m| m["code"].clone()),
        Some(json!("resumed_elsewhere")),
        "{seen:?}"
    );
    assert_eq!(ending.code(), Some(1008));
    moved.send(broadcast("moved"));
    next_broadcast(&mut observer, "alice", "moved");
}

/// Cut off on node 1 and not back within the grace: every node announces
/// the leave then (not before); a resume on node 2 afterwards is a new
/// login that everyone sees.
#[test]
fn the_grace_ends_for_the_whole_cluster() {
    let cluster = Cluster::start(2, json!({"resume_grace_secs": 2}));
    let (one, two) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut watcher = cluster.login(0, "watcher");
    let mut observer = cluster.login(1, "obs");
    watcher.wait_users(after(CONVERGE), &set(["obs", "watcher"]));
    let relay = Relay::start(one.addr);
    let alice = one.login_resumable_via(relay.addr(), "alice");
    let all = set(["alice", "obs", "watcher"]);
    for seed in [&mut watcher, &mut observer] {
        seed.wait_users(after(CONVERGE), &all);
    }
    let cut_at = Instant::now();
    let ticket = cut_off(&relay, alice);
    for seed in [&mut watcher, &mut observer] {
        let m = seed.wait_for(after(CONVERGE), "the leave", is_presence);
        assert_eq!(names(&m), set(["obs", "watcher"]), "{m}");
        let at = cut_at.elapsed();
        assert!(at >= Duration::from_millis(1500), "{}: the leave {at:?} after the cut", seed.name);
    }
    let (answer, mut alice) = two.resume(two.connect(), &ticket);
    assert_eq!(answer["reset"], true, "{answer}");
    assert_ne!(answer["resume"]["token"], ticket.token.as_str(), "{answer}");
    until_listed(&mut alice, "alice");
    for seed in [&mut watcher, &mut observer] {
        seed.wait_users(after(CONVERGE), &all);
    }
}

/// A kick by the owner on node 2 ends a session away on node 1: the leave
/// at once on every node, and its token resumes nothing (a new login).
#[test]
fn a_kick_on_the_other_node_ends_an_away_session() {
    let cluster = Cluster::start(2, json!({}));
    let (one, two) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut watcher = cluster.login(0, "watcher");
    let mut observer = cluster.login(1, "obs");
    watcher.wait_users(after(CONVERGE), &set(["obs", "watcher"]));
    let relay = Relay::start(one.addr);
    let alice = one.login_resumable_via(relay.addr(), "alice");
    for seed in [&mut watcher, &mut observer] {
        seed.wait_users(after(CONVERGE), &set(["alice", "obs", "watcher"]));
    }
    let ticket = cut_off(&relay, alice);
    two.ctl_ok(&["kick", "alice"]);
    for seed in [&mut watcher, &mut observer] {
        seed.wait_users(after(CONVERGE), &set(["obs", "watcher"]));
    }
    let (answer, _alice) = two.resume(two.connect(), &ticket);
    assert_eq!(answer["reset"], true, "a kicked session is over: {answer}");
    assert_ne!(answer["resume"]["token"], ticket.token.as_str(), "{answer}");
}
