//! One room, one set of rules: `ragnarok ctl` (the real binary) against
//! one node of a two-node cluster moderates the users of both. `who` lists
//! everyone with their node; a kick, a ban (by name, by address), a mute
//! and the lock hold on every node; everyone hears each announcement once;
//! a node restarted reads the bans back from Redis.

use std::time::Instant;

use ragnarok_testkit::cluster::*;
use ragnarok_testkit::{TestServer, ctl};
use serde_json::{Value, json};

/// A login on `node` that is refused: (code, text, close code) of its end.
/// While the node is still joining the cluster, it is tried again.
fn refused(node: &TestServer, name: &str) -> (String, String, Option<u16>) {
    let deadline = after(READY);
    loop {
        let mut client = node.connect();
        client.send_text(&node.password.clone());
        client.send_text(name);
        let (seen, ending) = client.recv_until_end();
        let error = seen.iter().find(|m| m["msgType"] == "Error").cloned().unwrap_or(json!({}));
        let field = |f: &str| error[f].as_str().unwrap_or_default().to_owned();
        if field("code") != "cluster_unavailable" || Instant::now() > deadline {
            assert!(
                !seen.iter().any(|m| m["msgType"] == "OnlineUsers"),
                "{name} logged in on {}: {seen:?}",
                node.addr
            );
            return (field("code"), field("text"), ending.code());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Logs `name` in on node `node` once no ban (or lock) refuses it any more
/// there: the node applies the action when it comes back from Redis.
fn login_once_let_in(cluster: &Cluster, node: usize, name: &str) -> User {
    let deadline = after(CONVERGE);
    loop {
        match try_login(&cluster.nodes[node], name, deadline) {
            Ok(user) => return user,
            Err(e) if Instant::now() < deadline => {
                let code = e["code"].as_str().unwrap_or_default();
                assert!(["banned", "room_locked", "cluster_unavailable"].contains(&code), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{name} still refused on node {node}: {e}"),
        }
    }
}

/// The user's next `Announcement`, which must say `text`.
fn announced(user: &mut User, text: &str) {
    let m = user.wait_for(after(CONVERGE), "an Announcement", |m| m["msgType"] == "Announcement");
    assert_eq!(m["text"], text, "{}", user.name);
}

/// The user's session ends with an Error of `code` (its text returned)
/// and Close 1008.
fn removed(user: &mut User, code: &str) -> String {
    let (seen, ending) = user.client.recv_until_end();
    let error = seen.iter().find(|m| m["msgType"] == "Error");
    let error = error.unwrap_or_else(|| panic!("{}: no Error before the end: {seen:?}", user.name));
    assert_eq!(error["code"], code, "{}: {error}", user.name);
    assert_eq!(ending.code(), Some(1008), "{}", user.name);
    error["text"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn ctl_on_one_node_kicks_mutes_locks_and_speaks_on_both() {
    let mut cluster = Cluster::start(2, json!({}));
    let (one, two) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut alice = cluster.login(0, "alice");
    let mut bob = cluster.login(1, "bob");
    let mut carol = cluster.login(1, "carol");
    let all = set(["alice", "bob", "carol"]);
    let deadline = after(CONVERGE);
    for user in [&mut alice, &mut bob, &mut carol] {
        user.wait_users(deadline, &all);
    }

    // Everyone, with their node: none for this node's own users.
    let who = one.ctl_json(&["who"]);
    assert_eq!(who["online"], 3, "{who}");
    let node_of = |who: &Value, name: &str| {
        let users = who["users"].as_array().unwrap();
        users.iter().find(|u| u["name"] == name).unwrap_or_else(|| panic!("{who}"))["node"].clone()
    };
    assert_eq!(node_of(&who, "alice"), Value::Null);
    let second = node_of(&who, "bob");
    assert!(second.as_str().is_some_and(|n| !n.is_empty()), "{who}");
    assert_eq!(node_of(&who, "carol"), second);
    let from_two = two.ctl_json(&["who"]);
    assert_eq!(node_of(&from_two, "bob"), Value::Null);
    assert!(node_of(&from_two, "alice").is_string() && node_of(&from_two, "alice") != second);
    let human = one.ctl_ok(&["who"]);
    let line = format!("bob\t-\t-\t{}", second.as_str().unwrap());
    assert!(human.starts_with("3 online\n") && human.contains(&line), "{human}");
    assert!(human.contains("alice\t127.0.0.1\t") && human.contains("\there"), "{human}");

    // A kick of a user on the other node, with a duration: answered once
    // done, as standalone.
    let out = one.ctl_ok(&["kick", "Bob", "--for", "1m", "--reason", "spamming links"]);
    assert_eq!(out.trim(), "bob was kicked for 1 min: spamming links");
    let told = removed(&mut bob, "kicked");
    assert!(told.contains("spamming links"), "{told}");
    announced(&mut alice, "bob was kicked for 1 min: spamming links");
    announced(&mut carol, "bob was kicked for 1 min: spamming links");
    // Not before the minute is over, on either node, under a look-alike neither.
    for node in [one, two] {
        let (code, text, close) = refused(node, "b0b");
        assert_eq!((code.as_str(), close), ("banned", Some(1008)), "{text}");
        assert!(text.contains("this name is banned for"), "{text}");
    }
    assert!(one.wait_log("ctl: bob was kicked").contains("WARN"));
    assert!(two.wait_log("ctl: bob was kicked").contains("WARN"), "every node acts, and says so");
    // Someone not online anywhere: refused, as standalone.
    let (code, _, err) = ctl(&one.dir.join("config.json"), &["kick", "nobody"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nobody is not online"), "{err}");

    // An announcement: once for everyone, whichever node they are on (the
    // next one each hears is this one: the kick's was not heard twice).
    let out = one.ctl_ok(&["say", "maintenance", "at", "noon"]);
    assert_eq!(out.trim(), "announced to 2 users");
    for user in [&mut alice, &mut carol] {
        let said = user.wait_for(after(CONVERGE), "the say", |m| m["msgType"] == "Announcement");
        assert_eq!(said, json!({"msgType": "Announcement", "text": "maintenance at noon"}));
    }

    // A mute of a user on the other node.
    one.ctl_ok(&["mute", "carol", "--for", "10m"]);
    announced(&mut alice, "carol was muted for 10 min");
    announced(&mut carol, "carol was muted for 10 min");
    carol.send(json!({"msgType": "Broadcast", "text": "you cannot hear me"}));
    let error = carol.wait_for(after(CONVERGE), "an Error", |m| m["msgType"] == "Error");
    assert_eq!(error["code"], "muted", "{error}");
    assert_eq!(two.ctl_ok(&["unmute", "carol"]).trim(), "carol is no longer muted", "from node 2");
    announced(&mut alice, "carol is no longer muted");
    announced(&mut carol, "carol is no longer muted");
    carol.send(json!({"msgType": "Broadcast", "text": "back"}));
    let heard = alice.wait_for(after(CONVERGE), "a Broadcast", |m| m["msgType"] == "Broadcast");
    assert_eq!(heard["text"], "back", "nothing of the muted message reached alice first");
    let (code, _, err) = ctl(&one.dir.join("config.json"), &["unmute", "carol"]);
    assert_eq!(code, 1, "not muted any more: {err}");

    // The lock: logins refused on both nodes; those online stay.
    one.ctl_ok(&["lock"]);
    announced(&mut alice, "The room is locked: no new logins for now.");
    announced(&mut carol, "The room is locked: no new logins for now.");
    for node in [one, two] {
        let (code, _, close) = refused(node, "dave");
        assert_eq!((code.as_str(), close), ("room_locked", Some(1008)));
    }
    let (code, _, err) = ctl(&two.dir.join("config.json"), &["lock"]);
    assert_eq!(code, 1, "locked already, as node 2 knows too: {err}");
    assert_eq!(two.ctl_json(&["stats"])["locked"], true);
    carol.send(json!({"msgType": "Broadcast", "text": "still here"}));
    let heard = alice.wait_for(after(CONVERGE), "a Broadcast", |m| m["msgType"] == "Broadcast");
    assert_eq!(heard["text"], "still here");
    one.ctl_ok(&["unlock"]);
    announced(&mut alice, "The room is open again.");
    announced(&mut carol, "The room is open again.");
    login_once_let_in(&cluster, 1, "dave");
    login_once_let_in(&cluster, 0, "erin");

    // Redis gone: nothing can be done in the whole room; ctl says so.
    cluster.redis.kill();
    let (code, _, err) = ctl(&cluster.nodes[0].dir.join("config.json"), &["lock"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("lost its link"), "{err}");
}

#[test]
fn bans_by_name_and_address_hold_on_every_node_and_after_a_restart() {
    let mut cluster = Cluster::start(2, json!({}));
    let mut alice = cluster.login(0, "alice");
    let mut carol = cluster.login(1, "carol");
    let mut dave = cluster.login(1, "dave");
    let all = set(["alice", "carol", "dave"]);
    let deadline = after(CONVERGE);
    for user in [&mut alice, &mut carol, &mut dave] {
        user.wait_users(deadline, &all);
    }

    // By name, from node 1, of a user on node 2.
    let out = cluster.nodes[0].ctl_ok(&["ban", "carol", "--reason", "raid"]);
    assert_eq!(out.trim(), "banned carol; removed 1 (carol)");
    removed(&mut carol, "banned");
    announced(&mut alice, "carol was banned: raid");
    announced(&mut dave, "carol was banned: raid");
    for node in &cluster.nodes {
        let (code, text, close) = refused(node, "Carol");
        assert_eq!((code.as_str(), close), ("banned", Some(1008)), "{text}");
    }
    let bans = cluster.nodes[1].ctl_json(&["bans"]);
    assert_eq!(bans["bans"][0]["name"], "carol", "node 2 holds it too: {bans}");
    let kept = cluster.redis.command(&format!("HEXISTS ragnarok:{}:bans name:carol", cluster.name));
    assert_eq!(kept, ":1", "kept on Redis");

    // A node restarted reads the bans (and mutes) back from Redis (so does
    // a new one); one that has ended is dropped there.
    let short = Instant::now();
    cluster.nodes[0].ctl_ok(&["ban", "zed", "--for", "1s"]);
    cluster.nodes[0].ctl_ok(&["mute", "yan", "--for", "10m"]);
    announced(&mut dave, "zed was banned for 1 s");
    announced(&mut dave, "yan was muted for 10 min");
    drop(dave);
    std::thread::sleep(std::time::Duration::from_millis(1100).saturating_sub(short.elapsed()));
    cluster.nodes[1] = TestServer::start(cluster.node_config());
    for node in &cluster.nodes {
        assert_eq!(refused(node, "carol").0, "banned");
    }
    cluster.nodes[1].wait_log("cluster: 1 bans, 1 mutes, the room unlocked");
    let gone = cluster.redis.command(&format!("HEXISTS ragnarok:{}:bans name:zed", cluster.name));
    assert_eq!(gone, ":0", "the ended ban dropped from Redis");
    cluster.nodes[1].wait_log("is not used in a cluster: bans are kept in Redis");
    assert!(!cluster.nodes[0].dir.join("ragnarok-state.json").exists(), "no state_file written");
    // Lifted from the restarted node: carol comes back, on either node.
    cluster.nodes[1].ctl_ok(&["unban", "carol"]);
    let carol = login_once_let_in(&cluster, 0, "carol");
    drop(carol);
    let (code, _, err) = ctl(&cluster.nodes[0].dir.join("config.json"), &["unban", "carol"]);
    assert_eq!(code, 1, "not banned any more: {err}");

    // By address: everyone from it leaves, on both nodes; nobody from it
    // comes in, on either.
    let mut erin = cluster.login(1, "erin");
    let mut frank = cluster.login(1, "frank");
    let deadline = after(CONVERGE);
    while !(alice.users.contains("erin") && alice.users.contains("frank")) {
        assert!(alice.next(deadline).is_some(), "alice never saw erin and frank");
    }
    let out = cluster.nodes[0].ctl_ok(&["ban", "127.0.0.0/8", "--for", "10m"]);
    assert!(out.starts_with("banned 127.0.0.0/8 for 10 min; removed 1 (alice)"), "{out}");
    for user in [&mut alice, &mut erin, &mut frank] {
        removed(user, "banned");
    }
    for node in &cluster.nodes {
        let (code, text, _) = refused(node, "gina");
        assert_eq!(code, "banned", "{text}");
        assert!(text.starts_with("your address is banned for"), "{text}");
    }
    cluster.nodes[1].ctl_ok(&["unban", "127.0.0.0/8"]);
    login_once_let_in(&cluster, 0, "gina");
    login_once_let_in(&cluster, 1, "hank");
    let left = cluster.redis.command(&format!("HLEN ragnarok:{}:bans", cluster.name));
    assert_eq!(left, ":0", "every ban lifted on Redis too");
}

#[test]
fn a_moderator_on_one_node_kicks_a_user_on_the_other() {
    let hash = {
        use std::io::Write;
        let mut child = std::process::Command::new(ragnarok_testkit::binary())
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"alice's own password\n").unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_owned()
    };
    let cluster = Cluster::start(2, json!({ "admins": { "alice": hash } }));
    let (one, two) = (&cluster.nodes[0], &cluster.nodes[1]);
    // alice logs in on node 1 with her own password, as a moderator.
    let deadline = after(READY);
    let mut alice = loop {
        let mut client = one.connect();
        client.send_text("alice's own password");
        client.send_text("alice");
        let mut user = User::new("alice", client);
        let first = user.next(deadline).expect("an answer");
        if first.get("ServerName").is_some() {
            assert_eq!(first["role"], "moderator", "{first}");
            break user;
        }
        assert_eq!(first["code"], "cluster_unavailable", "{first}");
        assert!(Instant::now() < deadline, "alice never got in");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut bob = cluster.login(1, "bob");
    let mut carol = cluster.login(1, "carol");
    let all = set(["alice", "bob", "carol"]);
    for user in [&mut alice, &mut bob, &mut carol] {
        user.wait_users(after(CONVERGE), &all);
    }
    // Not with the room's password, on either node.
    for node in [one, two] {
        assert_eq!(refused(node, "Alice").0, "wrong_password");
    }

    alice.send(json!({
        "msgType": "Moderate", "cmd": "kick", "target": "bob", "for_secs": 600, "reason": "spam"
    }));
    let told = removed(&mut bob, "kicked");
    assert!(told.contains("by alice") && told.contains("spam"), "{told}");
    let said = "bob was kicked by alice for 10 min: spam";
    announced(&mut alice, said);
    announced(&mut carol, said);
    let line = one.wait_log("moderator alice (127.0.0.1:");
    assert!(line.contains("WARN") && line.ends_with(said), "{line}");
    for node in [one, two] {
        assert_eq!(refused(node, "bob").0, "banned", "on every node");
    }
    // What cannot be done is told to the moderator.
    alice.send(json!({"msgType": "Moderate", "cmd": "unmute", "target": "carol"}));
    let error = alice.wait_for(after(CONVERGE), "an Error", |m| m["msgType"] == "Error");
    assert_eq!(error["code"], "moderation_refused", "{error}");
}
