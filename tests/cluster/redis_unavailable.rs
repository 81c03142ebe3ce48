//! Cluster without Redis: a node that cannot reach Redis at start exits 69
//! with one line naming the URL; a login while Redis is gone gets
//! `cluster_unavailable`.

use ragnarok_testkit::cluster::*;
use ragnarok_testkit::{PASSWORD, TIMEOUT};
use serde_json::json;
use std::time::Duration;

#[test]
fn redis_unreachable_at_start_exits_69() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let config = json!({"redis_url": url, "cluster_name": unique_cluster_name("down")});
    let (status, stderr) = run_to_exit(config, Duration::from_secs(15));
    assert_eq!(status.code(), Some(69), "exit status {status}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // One line names the URL, and it is the last word.
    let naming: Vec<&str> = stderr.lines().filter(|l| l.contains(&url)).collect();
    assert_eq!(naming.len(), 1, "one line names {url}: {stderr}");
    assert_eq!(stderr.trim().lines().last(), Some(naming[0]), "the last line: {stderr}");
}

#[test]
fn a_login_while_redis_is_gone_gets_cluster_unavailable() {
    let mut cluster = Cluster::start(1, json!({}));
    let mut alice = cluster.login(0, "alice");
    cluster.redis.kill();
    // Give the node a moment to see the connection close.
    std::thread::sleep(Duration::from_millis(500));
    let mut client = cluster.nodes[0].connect();
    client.send_text(PASSWORD);
    client.send_text("bob");
    let mut bob = User::new("bob", client);
    let first = bob.try_next(after(TIMEOUT));
    match first {
        Ok(Some(m)) => {
            assert_eq!(m["msgType"], "Error", "bob logged in without Redis: {m}");
            assert_eq!(m["code"], "cluster_unavailable", "{m}");
        }
        Ok(None) => panic!("no answer to a login within {TIMEOUT:?} while Redis is gone"),
        Err(how) => panic!("login while Redis is gone: connection ended ({how}) without an Error"),
    }
    // The user already online is still connected (the node does not exit).
    alice.send(json!({"msgType": "OnlineUsers"}));
    let deadline = after(Duration::from_secs(1));
    while alice.next(deadline).is_some() {}
    assert!(cluster.nodes[0].is_running(), "the node exited: {:?}", cluster.nodes[0].log());
}
