//! Cluster and a Redis restart: kill -9 of redis-server and a new, empty
//! one on the same port. Nobody is disconnected, and within ~10 s
//! broadcasts cross nodes again and every node lists every user again.

use ragnarok_testkit::broadcast;
use ragnarok_testkit::cluster::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const RECOVERY: Duration = Duration::from_secs(15);

#[test]
fn a_redis_restart_is_survived() {
    let mut cluster = Cluster::start(3, json!({"rate_limit_per_sec": 0}));
    let who = ["alice", "bob", "carol"];
    let mut users: Vec<User> = (0..3).map(|n| cluster.login(n, who[n])).collect();
    let all = set(who);
    let deadline = after(CONVERGE);
    for user in &mut users {
        user.wait_users(deadline, &all);
    }

    cluster.redis.restart();
    let restarted = Instant::now();
    let deadline = restarted + RECOVERY;

    // Every user sends a numbered broadcast each round, until each has
    // received one sent after the restart from each of the others.
    // `cluster_unavailable` and `messages_lost` are allowed meanwhile; a disconnect
    // is not (`next` panics on one).
    let mut heard: BTreeSet<(String, String)> = BTreeSet::new();
    let wanted = who.len() * (who.len() - 1);
    let mut round = 0;
    while heard.len() < wanted {
        assert!(
            Instant::now() < deadline,
            "broadcasts still do not cross nodes {RECOVERY:?} after the restart; \
             (receiver, sender) pairs heard: {heard:?}"
        );
        for user in &mut users {
            user.send(broadcast(&format!("after restart {round}")));
        }
        round += 1;
        for user in &mut users {
            let window = after(Duration::from_millis(150)).min(deadline);
            while let Some(m) = user.next(window) {
                match m["msgType"].as_str() {
                    Some("Broadcast") => {
                        let src = m["SrcUser"].as_str().unwrap().to_owned();
                        if src != user.name {
                            heard.insert((user.name.clone(), src));
                        }
                    }
                    Some("Error") => only_trouble_errors(&user.name, &m),
                    _ => {}
                }
            }
        }
    }
    eprintln!("broadcasts crossed every way {:?} after the restart", restarted.elapsed());

    // Asked for, every node lists all three users again.
    for user in &mut users {
        loop {
            user.send(json!({"msgType": "OnlineUsers"}));
            let window = after(Duration::from_secs(1)).min(deadline);
            let mut answer = None;
            while let Some(m) = user.next(window) {
                if m["msgType"] == "OnlineUsers" {
                    answer = Some(names(&m));
                    break;
                }
            }
            if answer.as_ref() == Some(&all) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: OnlineUsers is {answer:?}, not {all:?}, {RECOVERY:?} after the restart",
                user.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!("presence complete again {:?} after the restart", restarted.elapsed());
}
