//! Messages sent right after the name, before a cluster node has claimed
//! it (issue 17, item 9): held and handled once the claim succeeds, as a
//! standalone server handles them, never dropped silently.

use ragnarok_testkit::PASSWORD;
use ragnarok_testkit::cluster::*;
use serde_json::{Value, json};
use tungstenite::Message;

#[test]
fn messages_right_after_the_name_are_handled_once_it_is_claimed() {
    let cluster = Cluster::start(1, json!({}));
    // The node has joined the cluster once this login is in.
    let mut watcher = cluster.login(0, "watcher");
    let mut client = cluster.nodes[0].connect();
    // Password, name, a broadcast and a request for the list in one write,
    // as `printf ... | websocat` sends them.
    for text in
        [PASSWORD, "bob", r#"{"msgType":"Broadcast","text":"b1"}"#, r#"{"msgType":"OnlineUsers"}"#]
    {
        client.ws.write(Message::text(text)).expect("queue");
    }
    client.ws.flush().expect("one write");
    let mut bob = User::new("bob", client);
    let mut seen: Vec<Value> = Vec::new();
    let (mut echo, mut lists) = (false, 0);
    let deadline = after(CONVERGE);
    while !(echo && lists == 2) {
        let Some(m) = bob.next(deadline) else {
            panic!("bob: no echo of b1 and two OnlineUsers within {CONVERGE:?}: {seen:?}");
        };
        assert_ne!(m["msgType"], "Error", "{m}");
        echo |= m["msgType"] == "Broadcast" && m["text"] == "b1" && m["SrcUser"] == "bob";
        lists += usize::from(m["msgType"] == "OnlineUsers");
        seen.push(m);
    }
    assert!(seen[0].get("ServerName").is_some(), "the welcome first: {seen:?}");
    watcher.wait_for(after(CONVERGE), "bob's b1", |m| m["text"] == "b1");
}
