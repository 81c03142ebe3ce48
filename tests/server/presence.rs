//! Presence: full `OnlineUsers` lists in small rooms, `UsersJoined` /
//! `UsersLeft` deltas in rooms above 32 users.

use ragnarok_testkit::*;
use serde_json::{Value, json};

fn names(v: &Value) -> Vec<String> {
    v["Users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect()
}

#[test]
fn small_room_gets_full_lists_on_join_and_leave() {
    for server in TestServer::both(json!({})) {
        let mut alice = server.login("alice");
        let bob = server.login("bob");
        assert_eq!(names(&alice.recv_type("OnlineUsers")), ["alice", "bob"]);
        drop(bob);
        assert_eq!(names(&alice.recv_type("OnlineUsers")), ["alice"]);
    }
}

#[test]
fn large_room_gets_deltas() {
    let server = TestServer::start(json!({}));
    let mut watcher = server.login("watcher");
    let mut others: Vec<Client> = (1..32).map(|i| server.login(&format!("u{i:02}"))).collect();
    // 32 users now: each join so far came as a full list.
    loop {
        let list = watcher.recv_type("OnlineUsers");
        if names(&list).len() == 32 {
            break;
        }
    }
    // The 33rd user: the joiner gets the full list, the others a delta.
    let mut late = server.connect();
    late.send_text(PASSWORD);
    late.send_text("late");
    assert_eq!(late.recv_json(), json!({"ServerName": "Test Room"}));
    let list = late.recv_type("OnlineUsers");
    assert_eq!(names(&list).len(), 33);
    assert!(names(&list).contains(&"late".to_owned()));
    assert_eq!(watcher.recv_json(), json!({"msgType": "UsersJoined", "Users": ["late"]}));

    let _late2 = server.login("late2");
    assert_eq!(watcher.recv_json(), json!({"msgType": "UsersJoined", "Users": ["late2"]}));
    // 34 users; one leaves and 33 remain: still a large room.
    drop(others.pop());
    assert_eq!(watcher.recv_json(), json!({"msgType": "UsersLeft", "Users": ["u31"]}));
    // Down to 32: back to full lists.
    drop(late);
    assert_eq!(names(&watcher.recv_type("OnlineUsers")).len(), 32);
}
