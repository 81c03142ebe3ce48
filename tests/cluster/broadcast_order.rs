//! Cluster broadcasts: 600 broadcasts, 200 from a user on each of three
//! nodes sent at the same time, reach every user on every node, none lost,
//! each with the right `SrcUser`, and all users see them in one order.

use ragnarok_testkit::broadcast;
use ragnarok_testkit::cluster::*;
use serde_json::json;
use std::sync::Barrier;
use std::time::Duration;

const PER_SENDER: usize = 200;
const NODES: usize = 3;
const TOTAL: usize = PER_SENDER * NODES;

/// Reads until `TOTAL` broadcasts have arrived; returns them as
/// (SrcUser, text) in the order received.
fn collect(user: &mut User, deadline: std::time::Instant) -> Vec<(String, String)> {
    let mut got = Vec::with_capacity(TOTAL);
    while got.len() < TOTAL {
        let Some(m) = user.next(deadline) else {
            panic!(
                "{}: {} of {TOTAL} broadcasts by the deadline; last messages: {}",
                user.name,
                got.len(),
                user.recent()
            );
        };
        match m["msgType"].as_str() {
            Some("Broadcast") => {
                assert!(m.get("history").is_none(), "{}: a replay in a new room: {m}", user.name);
                let src = m["SrcUser"].as_str().expect("SrcUser").to_owned();
                got.push((src, m["text"].as_str().expect("text").to_owned()));
            }
            Some("Error") => panic!("{}: {m}", user.name),
            _ => {}
        }
    }
    got
}

#[test]
fn broadcasts_from_three_nodes_arrive_everywhere_in_one_order() {
    let _busy = ragnarok_testkit::busy(); // loads the machine
    let cluster = Cluster::start(NODES, json!({"rate_limit_per_sec": 0}));
    let mut senders: Vec<User> = (0..NODES).map(|n| cluster.login(n, &format!("s{n}"))).collect();
    let mut listeners: Vec<User> = (0..NODES).map(|n| cluster.login(n, &format!("l{n}"))).collect();
    let everyone = set(["s0", "s1", "s2", "l0", "l1", "l2"]);
    let deadline = after(CONVERGE);
    for user in senders.iter_mut().chain(listeners.iter_mut()) {
        user.wait_users(deadline, &everyone);
    }

    let sent: Vec<Vec<String>> = (0..NODES)
        .map(|n| (0..PER_SENDER).map(|k| format!("from s{n} #{k:03}")).collect())
        .collect();
    let barrier = Barrier::new(NODES);
    let deadline = after(Duration::from_secs(30));
    let seen: Vec<(String, Vec<(String, String)>)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (sender, texts) in senders.iter_mut().zip(&sent) {
            let barrier = &barrier;
            handles.push(s.spawn(move || {
                barrier.wait();
                for text in texts {
                    sender.send(broadcast(text));
                }
                (sender.name.clone(), collect(sender, deadline))
            }));
        }
        for listener in listeners.iter_mut() {
            handles.push(s.spawn(move || (listener.name.clone(), collect(listener, deadline))));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    for (name, got) in &seen {
        for (n, texts) in sent.iter().enumerate() {
            let src = format!("s{n}");
            let from: Vec<&String> =
                got.iter().filter(|(s, _)| *s == src).map(|(_, t)| t).collect();
            assert_eq!(from.len(), PER_SENDER, "{name} got {} broadcasts from {src}", from.len());
            assert!(
                from.iter().zip(texts).all(|(a, b)| *a == b),
                "{name}: {src}'s broadcasts not in the order sent"
            );
        }
        for (src, text) in got {
            assert!(text.starts_with(&format!("from {src} ")), "{name}: {text:?} from {src}");
        }
    }
    let (first, order) = &seen[0];
    for (name, got) in &seen[1..] {
        if let Some(i) = (0..TOTAL).find(|&i| got[i] != order[i]) {
            panic!(
                "{name} and {first} saw different orders: #{i} is {:?} for {name}, {:?} for {first}",
                got[i], order[i]
            );
        }
    }
    // Interleaved, not one node's 200 after another's: the order is the
    // cluster's, not an accident of timing (reported, not required).
    let switches = order.windows(2).filter(|w| w[0].0 != w[1].0).count();
    eprintln!("sender changes in the common order: {switches}");
}
