//! Cluster names: a name online on one node is taken on every node, and of
//! two simultaneous logins of one name on two nodes exactly one wins.

use ragnarok_testkit::cluster::*;
use ragnarok_testkit::{PASSWORD, TIMEOUT, TestServer};
use serde_json::{Value, json};
use std::sync::Barrier;

/// Sends `name` on a connection that has sent the password; returns the
/// first answer (`ServerName` or an `Error`) and the connection.
fn answer(mut user: User, name: &str) -> (Value, User) {
    user.client.send_text(name);
    let first = user
        .next(after(TIMEOUT))
        .unwrap_or_else(|| panic!("no answer to the login of {name:?} within {TIMEOUT:?}"));
    (first, user)
}

/// A connection that has sent the password.
fn half_logged_in(server: &TestServer, name: &str) -> User {
    let mut client = server.connect();
    client.send_text(PASSWORD);
    User::new(name, client)
}

/// The loser's side of a refused login: the `Error` `name_taken`, then
/// Close 1008.
fn assert_name_taken(first: &Value, user: &mut User, what: &str) {
    assert_eq!(first["msgType"], "Error", "{what}: {first}");
    assert_eq!(first["code"], "name_taken", "{what}: {first}");
    let (rest, ending) = user.client.recv_until_end();
    assert_eq!(ending.code(), Some(1008), "{what}: ended with {ending:?} after {rest:?}");
}

#[test]
fn a_name_online_on_another_node_is_taken() {
    let cluster = Cluster::start(2, json!({}));
    let alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    bob.wait_users(after(CONVERGE), &set(["alice", "bob"]));
    for name in ["alice", "Alice", "ALICE"] {
        let (first, mut user) = answer(half_logged_in(&cluster.nodes[1], name), name);
        let what = format!("{name:?} on node 1 while \"alice\" is online on node 0");
        assert_name_taken(&first, &mut user, &what);
    }
    // Once alice has gone, her name is free on the other node.
    drop(alice);
    bob.wait_users(after(CONVERGE), &set(["bob"]));
    let _alice = cluster.login(1, "alice");
}

#[test]
fn of_two_simultaneous_logins_of_one_name_exactly_one_wins() {
    const ROUNDS: usize = 25;
    let cluster = Cluster::start(2, json!({}));
    // Both nodes have joined the cluster once these are in.
    let mut watchers = [cluster.login(0, "watch0"), cluster.login(1, "watch1")];
    let mut winners = Vec::new();
    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let name = format!("racer{round:02}");
        // Both connections are open and have sent the password; the names
        // go out at the same moment.
        let barrier = Barrier::new(2);
        let outcomes: Vec<(Value, User)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|node| {
                    let (server, barrier, name) = (&cluster.nodes[node], &barrier, &name);
                    s.spawn(move || {
                        let user = half_logged_in(server, name);
                        barrier.wait();
                        answer(user, name)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut won = Vec::new();
        for (node, (first, mut user)) in outcomes.into_iter().enumerate() {
            if first.get("ServerName").is_some() {
                let list = user.next(after(TIMEOUT)).expect("OnlineUsers after ServerName");
                assert_eq!(list["msgType"], "OnlineUsers", "{list}");
                won.push((node, user));
            } else {
                let what = format!("round {round}: {name:?} on node {node}");
                assert_name_taken(&first, &mut user, &what);
            }
        }
        let nodes: Vec<usize> = won.iter().map(|(node, _)| *node).collect();
        assert_eq!(nodes.len(), 1, "round {round}: {name:?} logged in on nodes {nodes:?}");
        let (node, winner) = won.pop().unwrap();
        wins[node] += 1;
        winners.push(winner);
    }
    eprintln!("wins per node: {wins:?}");

    // The winners stay online (none is cut off later), and every user on
    // either node ends up seeing each winner once.
    let mut expected: Vec<String> = winners.iter().map(|w| w.name.clone()).collect();
    expected.extend(["watch0".into(), "watch1".into()]);
    let expected = set(&expected);
    let deadline = after(CONVERGE);
    for user in watchers.iter_mut().chain(winners.iter_mut()) {
        user.wait_users(deadline, &expected);
    }
    for watcher in &mut watchers {
        assert_eq!(watcher.ask_users(after(TIMEOUT)), expected, "{} asked", watcher.name);
    }
}
