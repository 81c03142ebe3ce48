//! Cluster presence: the users of every node see the users of all nodes,
//! as full `OnlineUsers` lists in a room of up to 32 users and as
//! `UsersJoined` / `UsersLeft` deltas in a bigger one.

use ragnarok_testkit::cluster::*;
use serde_json::json;

#[test]
fn small_room_lists_converge_across_three_nodes() {
    let cluster = Cluster::start(3, json!({}));
    let mut users = vec![
        cluster.login(0, "alice"),
        cluster.login(1, "bob"),
        cluster.login(2, "carol"),
        cluster.login(0, "dave"),
    ];
    let all = set(["alice", "bob", "carol", "dave"]);
    let deadline = after(CONVERGE);
    for user in &mut users {
        // Pushed as a full list: the room is small.
        user.wait_full_list(deadline, &all);
    }
    // Asked for, on every node: the same full list.
    for user in &mut users {
        assert_eq!(user.ask_users(after(CONVERGE)), all, "{} asked for OnlineUsers", user.name);
    }

    // A leave on node 0 reaches nodes 1 and 2 (and node 0's other user).
    drop(users.pop());
    let rest = set(["alice", "bob", "carol"]);
    let deadline = after(CONVERGE);
    for user in &mut users {
        user.wait_full_list(deadline, &rest);
    }
}

#[test]
fn big_room_gets_deltas_across_three_nodes() {
    let cluster = Cluster::start(3, json!({}));
    // 36 users, 12 on each node; user i is on node i % 3.
    let mut users: Vec<User> =
        (0..36).map(|i| cluster.login(i % 3, &format!("user{i:02}"))).collect();
    let all = set((0..36).map(|i| format!("user{i:02}")));
    let deadline = after(CONVERGE);
    for watcher in &mut users[..3] {
        watcher.wait_users(deadline, &all);
    }

    // The 37th user, on node 1: the others get a delta, not a full list.
    let late = cluster.login(1, "late");
    let deadline = after(CONVERGE);
    for watcher in &mut users[..3] {
        let m = watcher.wait_for(deadline, "UsersJoined naming \"late\"", |m| {
            assert_ne!(m["msgType"], "OnlineUsers", "a full list pushed in a room of 37: {m}");
            m["msgType"] == "UsersJoined" && names(m).contains("late")
        });
        assert!(m["Users"].as_array().unwrap().len() < 36, "{m}");
    }
    drop(late);
    let deadline = after(CONVERGE);
    for watcher in &mut users[..3] {
        watcher.wait_for(deadline, "UsersLeft naming \"late\"", |m| {
            assert_ne!(m["msgType"], "OnlineUsers", "a full list pushed in a room of 37: {m}");
            m["msgType"] == "UsersLeft" && names(m).contains("late")
        });
        assert_eq!(watcher.users, all, "{}", watcher.name);
    }
}
