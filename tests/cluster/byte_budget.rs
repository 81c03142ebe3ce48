//! Cluster: many users' legal bursts into one node at the same moment come
//! back from Redis together, on every node; readers who keep up, on both
//! nodes, get all of it and are not cut off (issue 17, item 3: before,
//! such bursts cut honest users off on both nodes within a second).

use std::sync::Barrier;

use ragnarok_testkit::cluster::*;
use ragnarok_testkit::{Got, RawClient, TIMEOUT, masked_frame};
use serde_json::json;

const SENDERS: usize = 10;
/// The default byte burst in the largest messages: 8 of 16 KiB.
const PER_SENDER: usize = 131072 / 16384;

/// A broadcast request of exactly 16,384 bytes whose text starts with `tag`.
fn largest(tag: &str) -> Vec<u8> {
    let shell = json!({"msgType": "Broadcast", "text": ""}).to_string();
    let text = format!("{tag}{}", "x".repeat(16384 - shell.len() - tag.len()));
    let message = json!({"msgType": "Broadcast", "text": text}).to_string();
    assert_eq!(message.len(), 16384);
    masked_frame(0x1, message.as_bytes())
}

/// Reads until `count` broadcasts of 16 KiB have come; anything else but
/// presence is trouble. Returns how many came and the trouble, if any.
fn read_bursts(client: &mut RawClient, count: usize) -> (usize, Option<String>) {
    let mut seen = 0;
    while seen < count {
        match client.next(TIMEOUT) {
            Got::Frame { opcode: 1, payload } if payload.len() > 16000 => seen += 1,
            Got::Frame { opcode: 1, payload } if !payload.starts_with(br#"{"msgType":"Error""#) => {
            }
            Got::Frame { payload, .. } => {
                return (seen, Some(String::from_utf8_lossy(&payload).into_owned()));
            }
            other => return (seen, Some(format!("{other:?}"))),
        }
    }
    (seen, None)
}

#[test]
fn everyones_legal_burst_into_one_node_cuts_off_no_reader_that_keeps_up() {
    let _busy = ragnarok_testkit::busy(); // 1.3 MB for each of 12 users
    let cluster = Cluster::start(2, json!({}));
    // Both nodes have joined the cluster once these logins are in.
    drop(cluster.login(0, "first0"));
    drop(cluster.login(1, "first1"));
    let [node0, node1] = &cluster.nodes[..] else { unreachable!() };
    let mut senders: Vec<RawClient> =
        (0..SENDERS).map(|i| node0.raw_login(&format!("s{i}"))).collect();
    let mut readers = [node0.raw_login("r0"), node1.raw_login("r1")];
    let bursts: Vec<Vec<u8>> = (0..SENDERS)
        .map(|i| (0..PER_SENDER).flat_map(|k| largest(&format!("s{i}#{k}:"))).collect())
        .collect();
    let expected = SENDERS * PER_SENDER;
    let barrier = Barrier::new(SENDERS);
    let results: Vec<(String, usize, Option<String>)> = std::thread::scope(|s| {
        let mut running = Vec::new();
        for (i, reader) in readers.iter_mut().enumerate() {
            running.push(s.spawn(move || {
                let (seen, trouble) = read_bursts(reader, expected);
                (format!("r{i}"), seen, trouble)
            }));
        }
        for (i, (sender, burst)) in senders.iter_mut().zip(&bursts).enumerate() {
            let barrier = &barrier;
            running.push(s.spawn(move || {
                // The whole burst in one write, all senders at once; then
                // everyone's broadcasts come back, its own included.
                barrier.wait();
                std::io::Write::write_all(&mut sender.stream, burst).unwrap();
                let (seen, trouble) = read_bursts(sender, expected);
                (format!("s{i}"), seen, trouble)
            }));
        }
        running.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (who, seen, trouble) in results {
        assert_eq!(trouble, None, "{who} after {seen} of {expected} broadcasts");
    }
}
