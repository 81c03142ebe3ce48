//! Moderators in the room (`admins`), over a real server: `ragnarok
//! hash-password` (the real binary) makes the hash; an admin logs in with
//! their own password (not the room's; a look-alike of the name needs it
//! too) and is welcomed as a moderator; a member's `Moderate` is refused; an
//! admin kicks for a while, mutes, bans and locks, everyone sees the
//! announcement naming them, the log's WARN line names them; and without
//! `admins` the login frames are answered as before.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use ragnarok_testkit::*;
use serde_json::{Value, json};

/// `ragnarok hash-password` with `input` on stdin: (exit code, stdout, stderr).
fn hash_password_run(input: &str) -> (i32, String, String) {
    let mut child = Command::new(binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ragnarok hash-password");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// The hash of `password`, as the operator makes it.
fn hash_password(password: &str) -> String {
    let (code, out, err) = hash_password_run(&format!("{password}\n"));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(password) && !err.contains(password), "the password is never shown");
    out.trim_end().to_owned()
}

const ALICE: &str = "alice's own long password";
const ERIN: &str = "erin's own long password";

/// A server whose admins are alice and erin.
fn room_with_admins() -> TestServer {
    let admins = json!({ "alice": hash_password(ALICE), "erin": hash_password(ERIN) });
    TestServer::start(json!({ "admins": admins }))
}

/// Sends `password` and `name`: the welcome (`ServerName`...) and the client
/// with the rest of the welcome read.
fn log_in(server: &TestServer, password: &str, name: &str) -> (Client, Value) {
    let mut client = server.connect();
    client.send_text(password);
    client.send_text(name);
    let welcome = client.recv_json();
    assert_eq!(welcome["ServerName"], "Test Room", "{name}: {welcome}");
    assert_eq!(client.recv_json()["msgType"], "OnlineUsers");
    (client, welcome)
}

/// A login that must be refused: the `Error`'s code and the close code.
fn refused(server: &TestServer, password: &str, name: &str) -> (String, Option<u16>) {
    let mut client = server.connect();
    client.send_text(password);
    client.send_text(name);
    let (seen, ending) = client.recv_until_end();
    assert_eq!(seen.len(), 1, "one Error before the close: {seen:?}");
    (seen[0]["code"].as_str().unwrap_or_default().to_owned(), ending.code())
}

fn moderate(cmd: &str, target: &str) -> Value {
    json!({ "msgType": "Moderate", "cmd": cmd, "target": target })
}

/// The next `Error`, which must be of `code`: its text.
fn error(client: &mut Client, code: &str) -> String {
    let error = client.recv_type("Error");
    assert_eq!(error["code"], code, "{error}");
    error["text"].as_str().unwrap().to_owned()
}

#[test]
fn hash_password_makes_an_argon2id_hash_of_one_line() {
    let hash = hash_password(ALICE);
    assert!(hash.starts_with("$argon2id$v=19$m=8192,t=2,p=1$"), "{hash}");
    assert_eq!(hash.lines().count(), 1);
    // The line end is not part of the password (\r\n either), as at login.
    let (code, crlf, _) = hash_password_run("pw with crlf\r\nsecond line ignored\n");
    assert_eq!(code, 0);
    let (empty, _, err) = hash_password_run("\n");
    assert_eq!(empty, 64, "{err}");
    assert_eq!(hash_password_run("").0, 64, "nothing on stdin");
    let server = TestServer::start(json!({ "admins": { "frank": crlf.trim_end() } }));
    let (_, welcome) = log_in(&server, "pw with crlf", "frank");
    assert_eq!(welcome["role"], "moderator");

    // A hash that is not one, or a name that is not one: the config says
    // which key, and the server does not start.
    let dir = temp_dir("admins");
    for (admins, says) in [
        (json!({ "alice": "hunter2" }), "\"alice\": is not a PHC password hash"),
        (json!({ "bell\u{7}": hash }), "not a username"),
        (json!({ "bob": hash, "B0B": hash }), "look alike"),
        (json!(["alice"]), "must be an object"),
    ] {
        let config = dir.join("config.json");
        std::fs::write(&config, json!({ "admins": admins }).to_string()).unwrap();
        let out = Command::new(binary())
            .arg("--check-config")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains("\"admins\"") && err.contains(says), "{says}: {err}");
        assert!(!err.contains("hunter2"), "a hash is never echoed: {err}");
    }
}

#[test]
fn an_admin_logs_in_with_their_own_password_and_nobody_else_does() {
    let server = room_with_admins();
    let (_alice, welcome) = log_in(&server, ALICE, "alice");
    assert_eq!(welcome, json!({ "ServerName": "Test Room", "role": "moderator" }));
    server.wait_log("\"alice\" logged in as a moderator");
    let (_bob, welcome) = log_in(&server, PASSWORD, "bob");
    assert_eq!(welcome, json!({ "ServerName": "Test Room" }), "a member: no role");

    // The room's password does not open an admin's name, nor a look-alike
    // of it; an admin's password opens no other name.
    for (password, name) in [
        (PASSWORD, "erin"),
        (PASSWORD, "Erin"),
        (PASSWORD, "\u{435}rin"),
        (PASSWORD, "alice"),
        (ALICE, "erin"),
        (ALICE, "carol"),
        ("guess", "erin"),
    ] {
        // Within the server's few admin checks a second.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            refused(&server, password, name),
            ("wrong_password".into(), Some(1008)),
            "{password} {name}"
        );
    }
    // A look-alike of an admin's name with the admin's password is the admin.
    std::thread::sleep(Duration::from_millis(300));
    let (_erin, welcome) = log_in(&server, ERIN, "ERIN");
    assert_eq!(welcome["role"], "moderator");
    let log = server.log().join("\n");
    assert!(!log.contains(ALICE) && !log.contains(ERIN), "a password is never logged");
}

#[test]
fn wrong_admin_passwords_are_throttled_per_address() {
    let admins = json!({ "alice": hash_password(ALICE) });
    let server = TestServer::start(json!({ "admins": admins, "login_attempts_per_minute": 3 }));
    for _ in 0..3 {
        assert_eq!(refused(&server, "guess", "alice").0, "wrong_password");
    }
    assert_eq!(refused(&server, ALICE, "alice").0, "too_many_attempts", "not even checked");
    assert_eq!(refused(&server, PASSWORD, "bob").0, "too_many_attempts", "any name");
}

#[test]
fn a_members_moderate_is_refused_and_the_connection_stays() {
    let server = room_with_admins();
    let (mut bob, _) = log_in(&server, PASSWORD, "bob");
    let (mut carol, _) = log_in(&server, PASSWORD, "carol");
    bob.recv_type("OnlineUsers");
    bob.send_json(moderate("kick", "carol"));
    let text = error(&mut bob, "not_a_moderator");
    assert!(text.contains("only moderators"), "{text}");
    bob.send_json(broadcast("still here"));
    assert_eq!(carol.recv_type("Broadcast")["text"], "still here", "carol was not kicked");
    assert_eq!(bob.recv_json()["text"], "still here");
}

#[test]
fn an_admin_kicks_for_a_while_mutes_bans_and_locks_and_everyone_sees_it() {
    let server = room_with_admins();
    let (mut alice, _) = log_in(&server, ALICE, "alice");
    let (mut bob, _) = log_in(&server, PASSWORD, "bob");
    let (mut carol, _) = log_in(&server, PASSWORD, "carol");
    // (alice hears of bob, then of carol; bob of carol.)
    alice.recv_type("OnlineUsers");
    alice.recv_type("OnlineUsers");
    bob.recv_type("OnlineUsers");

    // A kick with a duration and a reason.
    alice.send_json(json!({
        "msgType": "Moderate", "cmd": "kick", "target": "Bob", "for_secs": 600, "reason": "spam"
    }));
    let (seen, ending) = bob.recv_until_end();
    let kicked = seen.iter().find(|m| m["msgType"] == "Error").expect("an Error before the close");
    assert_eq!(kicked["code"], "kicked");
    let text = kicked["text"].as_str().unwrap();
    assert!(text.contains("by alice") && text.contains("spam"), "{text}");
    assert!(text.contains("you may come back in 10 min"), "{text}");
    assert_eq!(ending.code(), Some(1008));
    let said = "bob was kicked by alice for 10 min: spam";
    for client in [&mut alice, &mut carol] {
        assert_eq!(
            client.recv_type("Announcement"),
            json!({"msgType": "Announcement", "text": said})
        );
    }
    let line = server.wait_log("moderator alice (127.0.0.1:");
    assert!(line.contains("WARN") && line.ends_with(said), "{line}");
    // Not back before the ten minutes are over, under a look-alike neither.
    assert_eq!(refused(&server, PASSWORD, "bob"), ("banned".into(), Some(1008)));
    assert_eq!(refused(&server, PASSWORD, "b0b").0, "banned");

    // A mute: announced, and what carol says reaches no one.
    alice.send_json(
        json!({"msgType": "Moderate", "cmd": "mute", "target": "carol", "for_secs": 600}),
    );
    let said = "carol was muted by alice for 10 min";
    assert_eq!(carol.recv_type("Announcement")["text"], said);
    assert_eq!(alice.recv_type("Announcement")["text"], said);
    carol.send_json(broadcast("can you hear me"));
    assert!(error(&mut carol, "muted").contains("muted for"));
    alice.send_json(moderate("unmute", "carol"));
    assert_eq!(carol.recv_type("Announcement")["text"], "carol was unmuted by alice");
    alice.recv_type("Announcement");

    // A ban by name, for good: dave leaves at once and stays out.
    let (mut dave, _) = log_in(&server, PASSWORD, "dave");
    alice.recv_type("OnlineUsers");
    carol.recv_type("OnlineUsers");
    alice.send_json(
        json!({"msgType": "Moderate", "cmd": "ban", "target": "dave", "reason": "raid"}),
    );
    let (seen, ending) = dave.recv_until_end();
    let banned = seen.iter().find(|m| m["msgType"] == "Error").unwrap();
    assert_eq!(banned["code"], "banned");
    assert!(banned["text"].as_str().unwrap().contains("banned by alice"), "{banned}");
    assert_eq!(ending.code(), Some(1008));
    assert_eq!(carol.recv_type("Announcement")["text"], "dave was banned by alice: raid");
    assert_eq!(alice.recv_type("Announcement")["text"], "dave was banned by alice: raid");
    assert_eq!(refused(&server, PASSWORD, "Dave").0, "banned");
    server.wait_log("moderator alice (127.0.0.1:");

    // What a moderator may not do: told why, nothing done, still a moderator.
    let (mut erin, _) = log_in(&server, ERIN, "erin");
    for client in [&mut alice, &mut carol] {
        client.recv_type("OnlineUsers");
    }
    for (request, why) in [
        (moderate("kick", "nobody"), "nobody is not online"),
        (
            moderate("kick", "erin"),
            "erin is a moderator: only the room's owner can kick a moderator",
        ),
        (moderate("mute", "ERIN"), "ERIN is a moderator"),
        (moderate("ban", "127.0.0.1"), "only the room's owner bans addresses"),
        (moderate("unmute", "carol"), "carol is not muted"),
    ] {
        alice.send_json(request);
        let text = error(&mut alice, "moderation_refused");
        assert!(text.contains(why), "{why}: {text}");
    }
    alice.send_json(json!({"msgType": "Moderate", "cmd": "fly"}));
    assert!(error(&mut alice, "invalid_field").contains("\"cmd\" must be one of"));

    // The lock: members wait outside, moderators come in.
    erin.send_json(json!({"msgType": "Moderate", "cmd": "lock"}));
    let said = "The room is locked by erin: no new logins for now.";
    for client in [&mut alice, &mut carol, &mut erin] {
        assert_eq!(client.recv_type("Announcement")["text"], said);
    }
    assert_eq!(refused(&server, PASSWORD, "gina"), ("room_locked".into(), Some(1008)));
    drop(erin);
    alice.recv_type("OnlineUsers");
    let (mut erin, welcome) = log_in(&server, ERIN, "erin");
    assert_eq!(welcome["role"], "moderator", "through the lock");
    erin.send_json(json!({"msgType": "Moderate", "cmd": "unlock"}));
    let said = "The room is open again by erin.";
    assert_eq!(erin.recv_type("Announcement")["text"], said);
    assert_eq!(carol.recv_type("Announcement")["text"], said);
    log_in(&server, PASSWORD, "gina");

    // A moderator's announcement says whose it is.
    alice.send_json(json!({"msgType": "Moderate", "cmd": "say", "text": "be nice"}));
    assert_eq!(carol.recv_type("Announcement")["text"], "alice (moderator): be nice");
}

#[test]
fn without_admins_the_password_is_answered_at_once_and_with_them_at_the_name() {
    // No admins: a wrong password is refused as it comes, as always.
    let server = TestServer::start(json!({}));
    let mut client = server.connect();
    client.send_text("wrong");
    let (seen, ending) = client.recv_until_end();
    assert_eq!(seen[0]["code"], "wrong_password");
    assert_eq!(ending.code(), Some(1008));

    // With admins: whose password it must be depends on the name.
    let server = TestServer::start(json!({ "admins": { "alice": hash_password(ALICE) } }));
    let mut client = server.connect();
    client.send_text("wrong");
    client.expect_silence(Duration::from_millis(300));
    client.send_text("bob");
    let (seen, ending) = client.recv_until_end();
    assert_eq!((seen[0]["code"].as_str(), ending.code()), (Some("wrong_password"), Some(1008)));
    server.login("bob");
}

#[test]
fn a_reload_takes_a_new_list_of_admins_without_dropping_anyone() {
    let (alice_hash, erin_hash) = (hash_password(ALICE), hash_password(ERIN));
    let server = TestServer::start(json!({ "admins": { "alice": alice_hash } }));
    let (mut alice, welcome) = log_in(&server, ALICE, "alice");
    assert_eq!(welcome["role"], "moderator");
    let (mut bob, _) = log_in(&server, PASSWORD, "bob");
    alice.recv_type("OnlineUsers");

    // alice out, erin in: `ragnarok ctl reload` (as SIGHUP).
    let mut config = base_config();
    config["admins"] = json!({ "erin": erin_hash });
    std::fs::write(server.dir.join("config.json"), config.to_string()).unwrap();
    let out = server.ctl_ok(&["reload"]);
    assert!(out.contains(r#"applied ["admins"]"#), "{out}");

    // alice stays, a member now; erin's name takes erin's password.
    alice.send_json(moderate("kick", "bob"));
    error(&mut alice, "not_a_moderator");
    bob.send_json(broadcast("still here"));
    assert_eq!(alice.recv_type("Broadcast")["text"], "still here");
    assert_eq!(refused(&server, PASSWORD, "erin").0, "wrong_password");
    std::thread::sleep(Duration::from_millis(300));
    let (_erin, welcome) = log_in(&server, ERIN, "erin");
    assert_eq!(welcome["role"], "moderator");
    drop(alice);
    // (bob's lists until the one without alice.)
    while bob.recv_type("OnlineUsers")["Users"].as_array().unwrap().contains(&json!("alice")) {}
    let (_alice, welcome) = log_in(&server, PASSWORD, "alice");
    assert_eq!(welcome, json!({ "ServerName": "Test Room" }), "the room's password, a member");
}
