//! Cluster and a Redis that stops answering (SIGSTOP): a broadcast sent
//! meanwhile gets an `Error` `cluster_unavailable` within ~5 s (not
//! silence, and never a delivery after SIGCONT); after SIGCONT broadcasts
//! cross nodes again within ~10 s.

use ragnarok_testkit::broadcast;
use ragnarok_testkit::cluster::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ERROR_WITHIN: Duration = Duration::from_secs(7);
const RECOVERY: Duration = Duration::from_secs(15);
const LOST: &str = "sent while redis is stopped";

fn never_the_lost_one(name: &str, m: &Value) {
    assert!(
        !(m["msgType"] == "Broadcast" && m["text"] == LOST),
        "{name} got the broadcast refused while Redis was stopped: {m}"
    );
}

#[test]
fn a_stopped_redis_gives_cluster_unavailable_then_recovers() {
    let cluster = Cluster::start(2, json!({"rate_limit_per_sec": 0}));
    let mut alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    let both = set(["alice", "bob"]);
    let deadline = after(CONVERGE);
    alice.wait_users(deadline, &both);
    bob.wait_users(deadline, &both);
    // Broadcasts cross before the stop.
    alice.send(broadcast("before"));
    bob.wait_for(after(CONVERGE), "alice's broadcast before the stop", |m| m["text"] == "before");

    cluster.redis.stop();
    let stopped = Instant::now();
    alice.send(broadcast(LOST));
    let error = alice.wait_for(stopped + ERROR_WITHIN, "Error cluster_unavailable", |m| {
        assert!(
            !(m["msgType"] == "Broadcast" && m["text"] == LOST),
            "delivered while Redis was stopped: {m}"
        );
        only_trouble_errors("alice", m);
        m["msgType"] == "Error" && m["code"] == "cluster_unavailable"
    });
    eprintln!("{error} came {:?} after SIGSTOP", stopped.elapsed());

    cluster.redis.cont();
    let continued = Instant::now();
    let deadline = continued + RECOVERY;
    // alice and bob each send a numbered broadcast every round until each
    // has heard the other.
    let (mut alice_heard, mut bob_heard) = (false, false);
    let mut round = 0;
    while !(alice_heard && bob_heard) {
        assert!(
            Instant::now() < deadline,
            "broadcasts do not cross nodes {RECOVERY:?} after SIGCONT \
             (alice heard bob: {alice_heard}, bob heard alice: {bob_heard})"
        );
        alice.send(broadcast(&format!("after {round}")));
        bob.send(broadcast(&format!("after {round}")));
        round += 1;
        for (user, heard, other) in
            [(&mut alice, &mut alice_heard, "bob"), (&mut bob, &mut bob_heard, "alice")]
        {
            let window = after(Duration::from_millis(150)).min(deadline);
            while let Some(m) = user.next(window) {
                never_the_lost_one(&user.name, &m);
                only_trouble_errors(&user.name, &m);
                *heard |= m["msgType"] == "Broadcast" && m["SrcUser"] == other;
            }
        }
    }
    eprintln!("broadcasts cross again {:?} after SIGCONT", continued.elapsed());

    // A last one from each side: what arrives before them never holds the
    // refused broadcast.
    alice.send(broadcast("last"));
    bob.send(broadcast("last"));
    for user in [&mut alice, &mut bob] {
        let name = user.name.clone();
        let mut lasts = 0;
        while lasts < 2 {
            user.wait_for(after(CONVERGE), "both last broadcasts", |m| {
                never_the_lost_one(&name, m);
                m["text"] == "last"
            });
            lasts += 1;
        }
    }
}
