//! Cluster and a Redis that is emptied or cuts a node off while it runs
//! (FLUSHALL, SCRIPT FLUSH, CLIENT KILL TYPE pubsub: what an operator, a
//! memory policy or Redis's own pub/sub output limit can do): users are told
//! (`messages_lost`, or `cluster_unavailable` for what they sent), nothing
//! goes silent, and the room recovers: both nodes list both users again and
//! broadcasts cross.

use ragnarok_testkit::broadcast;
use ragnarok_testkit::cluster::*;
use serde_json::{Value, json};
use std::time::Duration;

const TOLD_WITHIN: Duration = Duration::from_secs(7);
const RECOVERY: Duration = Duration::from_secs(15);

fn two_users() -> (Cluster, User, User) {
    let cluster = Cluster::start(2, json!({"rate_limit_per_sec": 0}));
    let mut alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    let both = set(["alice", "bob"]);
    alice.wait_users(after(CONVERGE), &both);
    bob.wait_users(after(CONVERGE), &both);
    (cluster, alice, bob)
}

fn recovers(cluster: &Cluster, alice: &mut User, bob: &mut User) {
    let took = until_broadcasts_cross(alice, bob, RECOVERY, only_trouble_errors);
    eprintln!("broadcasts cross again after {took:?}");
    let both = set(["alice", "bob"]);
    for user in [alice, bob] {
        assert_eq!(user.ask_users(after(CONVERGE)), both, "{}: {}", user.name, cluster.logs());
    }
}

fn is_error(m: &Value, code: &str) -> bool {
    m["msgType"] == "Error" && m["code"] == code
}

#[test]
fn redis_emptied_under_the_room() {
    let (cluster, mut alice, mut bob) = two_users();
    assert_eq!(cluster.redis.command("FLUSHALL"), "+OK");
    // The next message: delivered to both, refused, or (it restarted the
    // room's count, so every node reads the room again) everyone is told
    // that messages may be missing; never silence.
    alice.send(broadcast("after the flush"));
    let m = alice.wait_for(after(TOLD_WITHIN), "her broadcast or an Error", |m| {
        m["text"] == "after the flush"
            || is_error(m, "cluster_unavailable")
            || is_error(m, "messages_lost")
    });
    if m["msgType"] == "Broadcast" {
        bob.wait_for(after(TOLD_WITHIN), "alice's broadcast", |m| m["text"] == "after the flush");
    }
    recovers(&cluster, &mut alice, &mut bob);
}

#[test]
fn scripts_flushed_refuse_the_message_not_lose_it() {
    let (cluster, mut alice, mut bob) = two_users();
    assert_eq!(cluster.redis.command("SCRIPT FLUSH"), "+OK");
    alice.send(broadcast("after the script flush"));
    let m = alice.wait_for(after(TOLD_WITHIN), "cluster_unavailable", |m| {
        assert_ne!(m["text"], "after the script flush", "a refused message was delivered");
        is_error(m, "cluster_unavailable")
    });
    eprintln!("alice got {m}");
    recovers(&cluster, &mut alice, &mut bob);
}

#[test]
fn a_subscriber_cut_off_tells_its_users_and_resyncs() {
    let (cluster, mut alice, mut bob) = two_users();
    // What Redis does to a subscriber past its pub/sub output limit.
    let killed = cluster.redis.command("CLIENT KILL TYPE pubsub");
    assert!(killed.starts_with(':'), "{killed}");
    for user in [&mut alice, &mut bob] {
        user.wait_for(after(TOLD_WITHIN), "messages_lost", |m| is_error(m, "messages_lost"));
    }
    recovers(&cluster, &mut alice, &mut bob);
}
