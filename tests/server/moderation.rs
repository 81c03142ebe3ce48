//! The owner's hands: `ragnarok ctl` (the real binary) over the control
//! socket of a real server: who, kick (with a duration), ban by name and by
//! address (kept across a restart in the state file), mute, lock, say,
//! stats, and its exit codes; and a control socket fed garbage.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use ragnarok_testkit::*;
use serde_json::{Value, json};

/// The login's end: the `Error` it got and the close code.
fn refused(server: &TestServer, name: &str) -> (String, String, Option<u16>) {
    let mut client = server.connect();
    client.send_text(&server.password.clone());
    client.send_text(name);
    let (seen, ending) = client.recv_until_end();
    let error = seen.iter().find(|m| m["msgType"] == "Error").cloned().unwrap_or(json!({}));
    let field = |f: &str| error[f].as_str().unwrap_or_default().to_owned();
    (field("code"), field("text"), ending.code())
}

#[test]
fn who_kick_with_a_duration_say_and_stats() {
    let server = TestServer::start(json!({}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");
    let who = server.ctl_json(&["who"]);
    assert_eq!(who["online"], 2);
    let users = who["users"].as_array().unwrap();
    assert_eq!(
        users.iter().map(|u| u["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert!(users.iter().all(|u| u["address"] == "127.0.0.1" && u["joined"].as_u64().is_some()));
    let human = server.ctl_ok(&["who"]);
    assert!(human.starts_with("2 online\n") && human.contains("bob\t127.0.0.1\t"), "{human}");

    let out = server.ctl_ok(&["kick", "Bob", "--for", "1m", "--reason", "spamming links"]);
    assert_eq!(out.trim(), "bob was kicked for 1 min: spamming links");
    let (seen, ending) = bob.recv_until_end();
    let error = seen.iter().find(|m| m["msgType"] == "Error").expect("an Error before the close");
    assert_eq!(error["code"], "kicked");
    assert!(error["text"].as_str().unwrap().contains("spamming links"), "{error}");
    assert_eq!(ending.code(), Some(1008));
    let said = alice.recv_type("Announcement");
    assert_eq!(said["text"], "bob was kicked for 1 min: spamming links");
    // Not before the minute is over, under a look-alike name neither.
    let (code, text, close) = refused(&server, "b0b");
    assert_eq!((code.as_str(), close), ("banned", Some(1008)), "{text}");
    assert!(text.contains("this name is banned for"), "{text}");
    assert!(server.wait_log("ctl: bob was kicked").contains("WARN"));

    // An announcement reaches everyone; the server's own, from no user.
    server.ctl_ok(&["say", "maintenance", "at", "noon"]);
    let said = alice.recv_type("Announcement");
    assert_eq!(said, json!({"msgType": "Announcement", "text": "maintenance at noon"}));

    let stats = server.ctl_json(&["stats"]);
    assert_eq!(
        (stats["online"].clone(), stats["locked"].clone(), stats["bans"].clone()),
        (json!(1), json!(false), json!(1))
    );

    // Refused: exit 1 and why; a bad command line: 64.
    let config = server.dir.join("config.json");
    let (code, _, err) = ctl(&config, &["kick", "nobody"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nobody is not online"), "{err}");
    for bad in [&["kick"][..], &["fly"], &["kick", "a", "--for", "soon"], &[]] {
        assert_eq!(ctl(&config, bad).0, 64, "{bad:?}");
    }
    let (code, _, err) = ctl(&server.dir.join("missing.json"), &["who"]);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn bans_by_name_and_address_hold_across_a_restart() {
    let state = temp_dir("state").join("state.json");
    let state_file = state.to_str().unwrap().to_owned();
    let server = TestServer::start(json!({ "state_file": state_file }));
    let (mut alice, mut carol) = server.login_two("alice", "carol");
    let out = server.ctl_ok(&["ban", "carol", "--reason", "raid"]);
    assert_eq!(out.trim(), "banned carol; removed 1 (carol)");
    let (seen, ending) = carol.recv_until_end();
    assert_eq!(seen.iter().find(|m| m["msgType"] == "Error").unwrap()["code"], "banned");
    assert_eq!(ending.code(), Some(1008));
    assert_eq!(alice.recv_type("Announcement")["text"], "carol was banned: raid");
    assert_eq!(refused(&server, "Carol").0, "banned");
    let bans = server.ctl_json(&["bans"]);
    assert_eq!(bans["bans"][0]["name"], "carol");
    assert_eq!(bans["bans"][0]["until"], Value::Null);
    // Written within a second (at most once a second, however fast bans come).
    let kept = wait_for_file(&state, "\"carol\"");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(kept.contains("raid"));
    drop(alice);
    drop(server);

    // A new server with the same state file: the ban holds.
    let server = TestServer::start(json!({ "state_file": state_file }));
    assert_eq!(refused(&server, "carol").0, "banned");
    server.wait_log("1 bans from");
    server.ctl_ok(&["unban", "carol"]);
    let mut carol = server.login("carol");
    assert_eq!(
        ctl(&server.dir.join("config.json"), &["unban", "carol"]).0,
        1,
        "not banned any more"
    );

    // By address: everyone from it leaves, nobody from it comes in.
    let mut dave = server.login("dave");
    let out = server.ctl_ok(&["ban", "127.0.0.0/8", "--for", "10m"]);
    assert!(out.starts_with("banned 127.0.0.0/8 for 10 min; removed 2"), "{out}");
    for client in [&mut carol, &mut dave] {
        let (seen, _) = client.recv_until_end();
        assert_eq!(seen.iter().find(|m| m["msgType"] == "Error").unwrap()["code"], "banned");
    }
    let (code, text, _) = refused(&server, "erin");
    assert_eq!(code, "banned");
    assert!(text.starts_with("your address is banned for"), "{text}");
    let kept: Value = serde_json::from_str(&wait_for_file(&state, "127.0.0.0/8")).unwrap();
    assert_eq!(kept["bans"][0]["net"], "127.0.0.0/8");
    server.ctl_ok(&["unban", "127.0.0.0/8"]);
    server.login("erin");
}

#[test]
fn mute_and_lock() {
    let server = TestServer::start(json!({}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");
    server.ctl_ok(&["mute", "bob", "--for", "10m"]);
    assert_eq!(alice.recv_type("Announcement")["text"], "bob was muted for 10 min");
    assert_eq!(bob.recv_type("Announcement")["text"], "bob was muted for 10 min");
    bob.send_json(json!({"msgType": "Broadcast", "text": "you cannot hear me"}));
    let error = bob.recv_type("Error");
    assert_eq!(error["code"], "muted");
    bob.send_json(json!({"msgType": "PrivateMessage", "TgtUser": "alice", "text": "psst"}));
    assert_eq!(bob.recv_type("Error")["code"], "muted");
    server.ctl_ok(&["unmute", "bob"]);
    alice.recv_type("Announcement");
    bob.send_json(json!({"msgType": "Broadcast", "text": "back"}));
    let heard = alice.recv_type("Broadcast");
    assert_eq!(heard["text"], "back", "nothing of the muted messages reached alice first");

    server.ctl_ok(&["lock"]);
    assert_eq!(
        alice.recv_type("Announcement")["text"],
        "The room is locked: no new logins for now."
    );
    let (code, _, close) = refused(&server, "carol");
    assert_eq!((code.as_str(), close), ("room_locked", Some(1008)));
    assert_eq!(ctl(&server.dir.join("config.json"), &["lock"]).0, 1, "locked already");
    // Those online stay and chat.
    bob.send_json(json!({"msgType": "Broadcast", "text": "still here"}));
    assert_eq!(alice.recv_type("Broadcast")["text"], "still here");
    server.ctl_ok(&["unlock"]);
    server.login("carol");
}

#[test]
fn the_control_socket_answers_garbage_with_an_error_and_stays_up() {
    let server = TestServer::start(json!({}));
    let socket = server.dir.join("ragnarok.sock");
    let mode = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o660, "the server's user and group only");
    let ask = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = s.write_all(bytes);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    for bad in
        [&b"who\n"[..], b"{\"cmd\": \"fly\"}\n", b"{\"cmd\": \"ban\", \"target\": \"\\u202e\"}\n"]
    {
        let answer: Value = serde_json::from_str(&ask(bad)).unwrap();
        assert_eq!(answer["ok"], false, "{answer}");
    }
    let huge = vec![b'x'; 70 * 1024];
    let answer: Value = serde_json::from_str(&ask(&huge)).unwrap();
    assert!(answer["error"].as_str().unwrap().contains("at most"), "{answer}");
    // Idle connections past the endpoint's 16 do not keep ctl out.
    let idle: Vec<UnixStream> = (0..20).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    assert!(server.ctl_ok(&["who"]).starts_with("0 online"));
    drop(idle);
    // No server on the socket: 69.
    drop(server);
    let config = temp_dir("ctl").join("config.json");
    std::fs::write(&config, r#"{"control_socket": "ragnarok.sock"}"#).unwrap();
    let (code, _, err) = ctl(&config, &["who"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("no server answers on the control socket"), "{err}");
}

#[test]
fn ctl_reload_changes_the_password_while_everyone_stays() {
    let server = TestServer::start(json!({}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");
    let path = server.dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["server_password"] = json!("new secret");
    config["server_port"] = json!(1);
    std::fs::write(&path, config.to_string()).unwrap();
    let reloaded = server.ctl_json(&["reload"]);
    assert_eq!(reloaded["applied"], json!(["server_password"]));
    assert_eq!(reloaded["needs_restart"], json!(["server_port"]));
    // Nobody was dropped; the old password is refused, the new one taken.
    bob.send_json(json!({"msgType": "Broadcast", "text": "still here"}));
    assert_eq!(alice.recv_type("Broadcast")["text"], "still here");
    assert_eq!(refused(&server, "carol").0, "wrong_password");
    let mut carol = server.connect();
    carol.send_text("new secret");
    carol.send_text("carol");
    assert!(carol.recv_json()["ServerName"].is_string());
    // A config that does not load: refused whole, exit 1, the old one kept.
    std::fs::write(&path, r#"{"server_pasword": "x"}"#).unwrap();
    let (code, _, err) = ctl(&path, &["reload"]);
    assert_eq!(code, 64, "ctl cannot read its own config either: {err}");
    let mut broken = config.clone();
    broken["max_message_bytes"] = json!(1);
    let ctl_config = temp_dir("ctl-reload").join("config.json");
    std::fs::write(
        &ctl_config,
        json!({"control_socket": server.dir.join("ragnarok.sock")}).to_string(),
    )
    .unwrap();
    std::fs::write(&path, broken.to_string()).unwrap();
    let (code, _, err) = ctl(&ctl_config, &["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("kept the old config") && err.contains("max_message_bytes"), "{err}");
    let mut dave = server.connect();
    dave.send_text("new secret");
    dave.send_text("dave");
    assert!(dave.recv_json()["ServerName"].is_string(), "the config in force still holds");
}

/// The text of `path` once it holds `needle` (5 s at most).
fn wait_for_file(path: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never held {needle}: {text}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
