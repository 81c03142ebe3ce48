//! Cluster node failure: after `kill -9` of a node, the users of the other
//! nodes see its users leave within 15 s, and their names are free again.

use ragnarok_testkit::cluster::*;
use serde_json::json;
use std::time::{Duration, Instant};

const LEAVE_SEEN: Duration = Duration::from_secs(15);

#[test]
fn users_of_a_killed_node_are_announced_as_left() {
    let cluster = Cluster::start(3, json!({}));
    let mut alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    let _carol = cluster.login(2, "carol");
    let _dave = cluster.login(2, "dave");
    let all = set(["alice", "bob", "carol", "dave"]);
    let deadline = after(CONVERGE);
    alice.wait_users(deadline, &all);
    bob.wait_users(deadline, &all);

    cluster.nodes[2].signal("KILL");
    let killed = Instant::now();
    let survivors = set(["alice", "bob"]);
    let deadline = killed + LEAVE_SEEN;
    alice.wait_users(deadline, &survivors);
    bob.wait_users(deadline, &survivors);
    eprintln!("the leaves were seen {:?} after kill -9", killed.elapsed());

    // Asked for, both surviving nodes agree; the names are free again.
    assert_eq!(alice.ask_users(after(CONVERGE)), survivors);
    assert_eq!(bob.ask_users(after(CONVERGE)), survivors);
    let _carol = cluster.login(0, "carol");
    let _dave = cluster.login(1, "dave");
    let back = set(["alice", "bob", "carol", "dave"]);
    let deadline = after(CONVERGE);
    alice.wait_users(deadline, &back);
    bob.wait_users(deadline, &back);
}
