//! Resuming after a dropped connection (docs/PROTOCOL.md, "Resuming after a
//! dropped connection"; issue 19), against the real binary over real
//! sockets. A drop is real: the client goes through a [`Relay`] that shuts
//! both sockets down (no WebSocket Close), or drops its socket. An observer
//! of the seed's protocol (bare password and name frames, read as raw
//! frames) checks byte for byte that nothing changed for old clients: no
//! `seq`, no new fields, no leave and no join while a user is away.

use std::time::{Duration, Instant};

use ragnarok_testkit::resume::forged_token;
use ragnarok_testkit::*;
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// The next frame of a seed client, as text, within [`TIMEOUT`].
fn text_frame(raw: &mut RawClient) -> String {
    awaited(raw, "a text frame")
}

/// The next frame of a seed client, as text, within [`TIMEOUT`]; `what`
/// says what was awaited if none comes.
fn awaited(raw: &mut RawClient, what: &str) -> String {
    match raw.next(TIMEOUT) {
        Got::Frame { opcode: 1, payload } => String::from_utf8(payload).expect("UTF-8"),
        other => panic!("expected {what}, got {other:?}"),
    }
}

/// A JSON string.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The bytes the seed's server sent for a broadcast (its fields in its
/// order).
fn seed_broadcast(from: &str, text: &str) -> String {
    format!(r#"{{"msgType":"Broadcast","SrcUser":{},"text":{}}}"#, quoted(from), quoted(text))
}

/// The bytes the seed's server sent for the list of who is online.
fn seed_users(names: &[&str]) -> String {
    format!(r#"{{"msgType":"OnlineUsers","Users":{}}}"#, serde_json::to_string(names).unwrap())
}

/// The names of an `OnlineUsers` message.
fn names(m: &Value) -> Vec<&str> {
    m["Users"]
        .as_array()
        .unwrap_or_else(|| panic!("no Users in {m}"))
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect()
}

/// Cuts the relay (a real drop of `who`'s connection); `who` sees its
/// stream end without a Close. Returns what `who` needs to come back.
fn cut_off(relay: &Relay, who: Resumable) -> Ticket {
    assert_eq!(relay.cut(), 1, "one connection through the relay");
    let Resumable { mut client, ticket, .. } = who;
    let (seen, ending) = client.recv_until_end();
    assert!(seen.is_empty(), "{}: read after the cut: {seen:?}", ticket.name);
    assert!(matches!(ending, Ending::Eof), "a cut is no Close: {ending:?}");
    ticket
}

/// `who`'s `Resume` is refused with `code` and Close 1008.
fn refused(server: &TestServer, ticket: &Ticket, code: &str) {
    let (mut client, answer) = server.send_resume(server.connect(), ticket);
    assert_eq!(answer["msgType"], "Error", "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    let (seen, ending) = client.recv_until_end();
    assert!(seen.is_empty(), "after {answer}: {seen:?}");
    assert_eq!(ending.code(), Some(1008), "after {answer}");
}

/// `who` broadcasts `text`; the seed observer's next frame is exactly that
/// broadcast (nothing came before it: no leave, no join), and so is `who`'s
/// next message (its own, with a `seq` above `after`). Returns its `seq`.
fn heard_next(who: &mut Resumable, observer: &mut RawClient, text: &str, after: u64) -> u64 {
    heard_after_history(who, observer, text, after, 0)
}

/// [`heard_next`] for `who` just after a reset: `history` replayed
/// broadcasts (`"history": true`) come first.
fn heard_after_history(
    who: &mut Resumable,
    observer: &mut RawClient,
    text: &str,
    after: u64,
    history: usize,
) -> u64 {
    who.send(broadcast(text));
    assert_eq!(text_frame(observer), seed_broadcast(&who.ticket.name, text));
    for _ in 0..history {
        let replayed = who.recv();
        assert_eq!(replayed["history"], true, "{replayed}");
        assert!(seq_of(&replayed).is_none(), "the history has no seq: {replayed}");
    }
    let own = who.recv();
    assert_eq!(
        without_seq(&own),
        json!({"msgType": "Broadcast", "SrcUser": who.ticket.name, "text": text})
    );
    let seq = seq_of(&own).unwrap_or_else(|| panic!("no seq on {own}"));
    assert!(seq > after, "{own}: seq not above {after}");
    seq
}

/// The token appears nowhere in the server's log.
fn never_logged(server: &TestServer, token: &str) {
    let log = server.log().join("\n");
    assert!(!log.contains(token), "the token is in the log:\n{log}");
}

/// The harness itself: a cut through the relay is a real drop (a seed
/// client's drop is a leave at once, as before the feature); while held,
/// new connections end at once; after a restart the relay leads to the
/// server's new port. Over ws and wss.
#[test]
fn the_relay_drops_connections_for_real() {
    for mut server in TestServer::both(json!({})) {
        let mut observer = server.raw_login("obs");
        let relay = Relay::start(server.addr);
        let mut seed = server.log_in(server.connect_via(relay.addr()), "seed");
        assert_eq!(text_frame(&mut observer), seed_users(&["obs", "seed"]));
        assert_eq!((relay.carried(), relay.open()), (1, 1));
        assert_eq!(relay.cut(), 1);
        let (seen, ending) = seed.recv_until_end();
        assert!(seen.is_empty() && matches!(ending, Ending::Eof), "{seen:?} {ending:?}");
        assert_eq!(text_frame(&mut observer), seed_users(&["obs"]));
        assert_eq!(relay.open(), 0);

        relay.hold(true);
        let stream = server.stream_over(std::net::TcpStream::connect(relay.addr()).unwrap());
        assert!(tungstenite::client::client(server.url(), stream).is_err());
        assert_eq!((relay.carried(), relay.refused()), (1, 1));
        relay.hold(false);
        let mut seed = server.log_in(server.connect_via(relay.addr()), "seed");
        assert_eq!(text_frame(&mut observer), seed_users(&["obs", "seed"]));
        assert_eq!(relay.carried(), 2);

        server.restart();
        relay.retarget(server.addr);
        assert!(matches!(seed.recv_until_end().1, Ending::Eof));
        server.log_in(server.connect_via(relay.addr()), "seed");
        assert_eq!(relay.carried(), 3);
    }
}

#[test]
fn missed_messages_come_back_exactly_once_in_order() {
    let server = TestServer::start(json!({}));
    let mut observer = server.raw_login("obs");
    let mut bob = server.login_resumable("bob");
    assert_eq!(text_frame(&mut observer), seed_users(&["bob", "obs"]));
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "bob", "obs"]));
    let joined = bob.recv();
    assert_eq!(names(&joined), ["alice", "bob", "obs"], "{joined}");
    assert!(seq_of(&joined).is_some(), "presence for a resumable client carries seq: {joined}");

    let ticket = cut_off(&relay, alice);
    bob.send(broadcast("one"));
    bob.send(broadcast("two"));
    bob.send(json!({"msgType": "PrivateMessage", "TgtUser": "alice", "text": "psst"}));
    bob.send(broadcast("three"));
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        let own = bob.recv();
        assert_eq!(
            without_seq(&own),
            json!({"msgType": "Broadcast", "SrcUser": "bob", "text": text})
        );
        sent.push(seq_of(&own).unwrap_or_else(|| panic!("no seq on {own}")));
        // The seed's client: byte for byte what the seed's server sent.
        assert_eq!(text_frame(&mut observer), seed_broadcast("bob", text));
    }
    assert!(ticket.seq < sent[0] && sent[0] < sent[1] && sent[1] < sent[2], "{ticket:?} {sent:?}");

    let (answer, mut alice) = server.resume(server.connect_via(relay.addr()), &ticket);
    assert_eq!(answer["missed"], 4, "{answer}");
    assert_exact(&answer, &ticket);
    let missed: Vec<Value> = (0..4).map(|_| alice.recv()).collect();
    let bare: Vec<Value> = missed.iter().map(without_seq).collect();
    assert_eq!(
        bare,
        [
            json!({"msgType": "Broadcast", "SrcUser": "bob", "text": "one"}),
            json!({"msgType": "Broadcast", "SrcUser": "bob", "text": "two"}),
            json!({"msgType": "PrivateMessage", "SrcUser": "bob", "text": "psst"}),
            json!({"msgType": "Broadcast", "SrcUser": "bob", "text": "three"}),
        ],
        "the replay: {missed:?}"
    );
    let seqs: Vec<u64> =
        missed.iter().map(|m| seq_of(m).unwrap_or_else(|| panic!("no seq on {m}"))).collect();
    assert_eq!(
        [seqs[0], seqs[1], seqs[3]],
        [sent[0], sent[1], sent[2]],
        "the same seq as bob's: {missed:?}"
    );
    assert!(
        sent[1] < seqs[2] && seqs[2] < sent[2],
        "the private message's seq in its place: {missed:?}"
    );
    let now = alice.recv();
    assert_eq!(now["msgType"], "OnlineUsers", "after the replay: {now}");
    assert_eq!(names(&now), ["alice", "bob", "obs"], "{now}");
    let position = seq_of(&now).unwrap_or_else(|| panic!("no seq on {now}"));
    assert!(position >= sent[2], "OnlineUsers after the replay has the current seq: {now}");

    // Nobody saw alice leave or come back: the next thing the seed's client
    // and bob get is her broadcast; nothing is repeated to her.
    let back = heard_next(&mut alice, &mut observer, "back", position);
    let at_bob = bob.recv();
    assert_eq!(
        at_bob,
        json!({"seq": back, "msgType": "Broadcast", "SrcUser": "alice", "text": "back"})
    );
    assert_eq!(relay.carried(), 2);
    never_logged(&server, &ticket.token);
}

/// Keys and the owner's announcements are room events too: replayed with
/// their `seq`, and the keys of who is online follow the list.
#[test]
fn keys_and_announcements_are_replayed() {
    let server = TestServer::start(json!({}));
    let mut observer = server.raw_login("obs");
    let mut bob = server.login_resumable("bob");
    assert_eq!(text_frame(&mut observer), seed_users(&["bob", "obs"]));
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "bob", "obs"]));
    bob.recv_type("OnlineUsers");
    let ticket = cut_off(&relay, alice);

    let key = e2e::Keys::generate().published();
    bob.send(json!({"msgType": "PublicKey", "key": key}));
    let own = bob.recv();
    assert_eq!(without_seq(&own), json!({"msgType": "PublicKey", "SrcUser": "bob", "key": key}));
    let key_seq = seq_of(&own).unwrap_or_else(|| panic!("no seq on {own}"));
    assert_eq!(
        text_frame(&mut observer),
        format!(r#"{{"msgType":"PublicKey","SrcUser":"bob","key":{}}}"#, quoted(&key))
    );
    server.ctl_ok(&["say", "maintenance", "at", "noon"]);
    let said = bob.recv();
    assert_eq!(said["msgType"], "Announcement", "{said}");
    let said_seq = seq_of(&said).unwrap_or_else(|| panic!("no seq on {said}"));
    let seen: Value = serde_json::from_str(&text_frame(&mut observer)).unwrap();
    assert_eq!(seen, without_seq(&said), "the seed's client gets it without seq");

    let (answer, mut alice) = server.resume(server.connect_via(relay.addr()), &ticket);
    assert_eq!(answer["missed"], 2, "{answer}");
    assert_eq!(alice.recv(), own);
    assert_eq!(alice.recv(), said);
    assert!(key_seq < said_seq);
    assert_eq!(names(&alice.recv()), ["alice", "bob", "obs"]);
    let keys = alice.recv();
    assert_eq!(keys["msgType"], "PublicKeys", "{keys}");
    assert_eq!(keys["Keys"], json!({"bob": key}), "{keys}");
    heard_next(&mut alice, &mut observer, "back", said_seq);
}

#[test]
fn resuming_while_the_old_connection_is_open_closes_it() {
    let server = TestServer::start(json!({}));
    let mut observer = server.raw_login("obs");
    let mut old = server.login_resumable("alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    let ticket = old.ticket.clone();

    // The server has not noticed any drop: the old connection is open.
    let (answer, mut alice) = server.resume(server.connect(), &ticket);
    assert_eq!(answer["missed"], 0, "{answer}");
    assert!(answer.get("reset").is_none_or(|r| r == false), "{answer}");
    let (seen, ending) = old.client.recv_until_end();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["msgType"], "Error", "{seen:?}");
    assert_eq!(seen[0]["code"], "resumed_elsewhere", "{seen:?}");
    assert_eq!(ending.code(), Some(1008), "{ending:?}");
    let now = alice.recv();
    assert_eq!(names(&now), ["alice", "obs"], "{now}");
    heard_next(&mut alice, &mut observer, "still here", ticket.seq);
}

#[test]
fn the_leave_comes_when_the_grace_ends_and_a_late_resume_logs_in_again() {
    let server = TestServer::start(json!({"resume_grace_secs": 2}));
    let mut observer = server.raw_login("obs");
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    let cut_at = Instant::now();
    let ticket = cut_off(&relay, alice);

    // Within the grace the name is kept for the token's holder.
    let mut taker = server.connect();
    taker.send_text(PASSWORD);
    taker.send_text("alice");
    let (seen, ending) = taker.recv_until_end();
    assert_eq!(seen[0]["code"], "name_taken", "{seen:?}");
    assert_eq!(ending.code(), Some(1008));

    assert_eq!(text_frame(&mut observer), seed_users(&["obs"]), "the leave, once the grace ends");
    let after = cut_at.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "the leave came {after:?} after the cut, grace 2 s"
    );
    // Gone: a private message to her is refused again.
    observer.send_text(
        &json!({"msgType": "PrivateMessage", "TgtUser": "alice", "text": "hi"}).to_string(),
    );
    let refusal: Value = serde_json::from_str(&text_frame(&mut observer)).unwrap();
    assert_eq!(refusal["code"], "user_offline", "{refusal}");

    let (answer, mut alice) = server.resume(server.connect_via(relay.addr()), &ticket);
    assert_reset(&answer);
    assert_ne!(
        answer["resume"]["token"],
        ticket.token.as_str(),
        "a new session, a new token: {answer}"
    );
    assert_eq!(answer["resume"]["epoch"], ticket.epoch.as_str(), "{answer}");
    let now = alice.recv();
    assert_eq!(names(&now), ["alice", "obs"], "{now}");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]), "the others see her join");
}

#[test]
fn after_a_restart_resume_is_a_reset() {
    let mut server = TestServer::start(json!({}));
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    let ticket = alice.ticket.clone();
    server.restart();
    relay.retarget(server.addr);
    let mut gone = alice.client;
    let (_, ending) = gone.recv_until_end();
    assert!(matches!(ending, Ending::Eof), "kill -9 sends no Close: {ending:?}");
    let mut bob = server.login("bob");

    let (answer, mut alice) = server.resume(server.connect_via(relay.addr()), &ticket);
    assert_reset(&answer);
    assert_ne!(
        answer["resume"]["epoch"],
        ticket.epoch.as_str(),
        "a new epoch after a restart: {answer}"
    );
    assert_ne!(answer["resume"]["token"], ticket.token.as_str(), "{answer}");
    let now = alice.recv();
    assert_eq!(names(&now), ["alice", "bob"], "{now}");
    let joined = bob.recv_json();
    assert_eq!(joined, json!({"msgType": "OnlineUsers", "Users": ["alice", "bob"]}));

    // The new epoch's token resumes.
    let ticket = alice.ticket.clone();
    let (answer, _alice) = server.resume(server.connect(), &ticket);
    assert_eq!(answer["missed"], 0, "{answer}");
}

#[test]
fn a_wrong_token_is_refused_and_the_holder_keeps_the_name() {
    let server = TestServer::start(json!({}));
    let mut observer = server.raw_login("obs");
    let mut alice = server.login_resumable("alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    // Against a live session.
    refused(&server, &alice.ticket.with_token(&forged_token(1)), "resume_refused");
    let before = alice.ticket.seq;
    let seq = heard_next(&mut alice, &mut observer, "undisturbed", before);
    // A name held by a client of the seed's protocol (no token at all).
    let _dave = server.login("dave");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "dave", "obs"]));
    assert!(seq_of(&alice.recv()).is_some());
    let dave = Ticket { name: "dave".into(), ..alice.ticket.clone() };
    refused(&server, &dave, "resume_refused");
    refused(&server, &dave.with_token(&forged_token(3)), "resume_refused");

    // Against an away one: refused too, and the holder still comes back.
    let relay = Relay::start(server.addr);
    let mut carol = server.login_resumable_via(relay.addr(), "carol");
    let replayed = carol.recv();
    assert_eq!(replayed["history"], true, "alice's broadcast, from the history: {replayed}");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "carol", "dave", "obs"]));
    assert!(seq_of(&alice.recv()).is_some());
    let ticket = cut_off(&relay, carol);
    refused(&server, &ticket.with_token(&forged_token(2)), "resume_refused");
    refused(&server, &ticket.with_token(&alice.ticket.token), "resume_refused");
    let (answer, mut carol) = server.resume(server.connect(), &ticket);
    assert_eq!(answer["missed"], 0, "{answer}");
    assert_eq!(names(&carol.recv()), ["alice", "carol", "dave", "obs"]);
    heard_next(&mut carol, &mut observer, "still mine", seq);
    never_logged(&server, &alice.ticket.token);
    never_logged(&server, &ticket.token);
}

/// A kick ends a session, away or not: its token is worth nothing after it
/// (a new login); kicked for a while, the name is banned for a resume too.
#[test]
fn a_kick_ends_the_session_even_while_away() {
    let server = TestServer::start(json!({}));
    let mut observer = server.raw_login("obs");
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    let ticket = cut_off(&relay, alice);
    server.ctl_ok(&["kick", "alice"]);
    let first = awaited(&mut observer, "the kick's announcement or alice's leave");
    let second = awaited(&mut observer, &format!("alice's leave after kicking her (got {first})"));
    let got = [first, second];
    assert!(got.contains(&seed_users(&["obs"])), "the leave at once: {got:?}");
    assert!(got.iter().any(|m| m.contains(r#""msgType":"Announcement""#)), "{got:?}");

    let (answer, mut alice) = server.resume(server.connect_via(relay.addr()), &ticket);
    assert_eq!(answer["reset"], true, "{answer}");
    assert_ne!(answer["resume"]["token"], ticket.token.as_str(), "{answer}");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));

    let ticket = alice.ticket.clone();
    server.ctl_ok(&["kick", "alice", "--for", "1m"]);
    let (seen, ending) = alice.client.recv_until_end();
    assert_eq!(seen.last().map(|m| m["code"].clone()), Some(json!("kicked")), "{seen:?}");
    assert_eq!(ending.code(), Some(1008));
    refused(&server, &ticket, "banned");
}

/// A link gone silent (no FIN, no RST: a train in a tunnel) is a drop once
/// the keep-alive ping goes unanswered: the session is away, not gone.
#[test]
fn a_link_gone_silent_is_a_drop_not_a_leave() {
    let server = TestServer::start(json!({"idle_timeout_secs": 1}));
    let mut observer = server.login("obs");
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    assert_eq!(observer.recv_json(), json!({"msgType": "OnlineUsers", "Users": ["alice", "obs"]}));
    relay.freeze(true);
    let ticket = alice.ticket.clone();
    // Until the server gives up on her (about 2 s), the observer reads
    // (answering its own pings) and gets nothing.
    let deadline = Instant::now() + TIMEOUT;
    while !server.log().iter().any(|l| l.contains(r#""alice" dropped"#)) {
        assert!(Instant::now() < deadline, "alice never dropped: {:#?}", server.log());
        observer.ws.get_mut().tcp().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match observer.ws.read() {
            Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => {}
            Ok(other) => panic!("the observer got {other:?} while alice's link was silent"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("observer: {e}"),
        }
    }
    observer.ws.get_mut().tcp().set_read_timeout(Some(TIMEOUT)).unwrap();
    observer.send_json(broadcast("anyone?"));
    assert_eq!(
        observer.recv_json(),
        json!({"msgType": "Broadcast", "SrcUser": "obs", "text": "anyone?"})
    );
    let (answer, mut alice) = server.resume(server.connect(), &ticket);
    assert_eq!(answer["missed"], 1, "{answer}");
    assert_eq!(without_seq(&alice.recv())["text"], "anyone?");
    assert_eq!(names(&alice.recv()), ["alice", "obs"]);
}

/// A message stalled half-sent (`message_timeout`) ends the connection,
/// not the session.
#[test]
fn a_message_stalled_half_sent_is_a_drop_not_a_leave() {
    let server = TestServer::start(json!({"message_timeout_secs": 1}));
    let mut observer = server.raw_login("obs");
    let mut alice = server.login_resumable("alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    let frame = client_frame(true, 1, broadcast("half").to_string().as_bytes());
    let stream = alice.client.ws.get_mut();
    std::io::Write::write_all(stream, &frame[..frame.len() / 2]).unwrap();
    let (seen, ending) = alice.client.recv_until_end();
    assert_eq!(seen.last().map(|m| m["code"].clone()), Some(json!("message_timeout")), "{seen:?}");
    assert_eq!(ending.code(), Some(1008));
    observer.send_text(&broadcast("anyone?").to_string());
    assert_eq!(text_frame(&mut observer), seed_broadcast("obs", "anyone?"));
    let (answer, mut alice) = server.resume(server.connect(), &alice.ticket);
    assert_eq!(answer["missed"], 1, "{answer}");
    assert_eq!(without_seq(&alice.recv())["text"], "anyone?");
}

/// A ban of the name ends an away session: the leave at once, and the
/// token resumes nothing (`banned`).
#[test]
fn a_ban_ends_an_away_session() {
    let server = TestServer::start(json!({}));
    let mut observer = server.raw_login("obs");
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    let ticket = cut_off(&relay, alice);
    server.ctl_ok(&["ban", "alice", "--for", "1m"]);
    let first = awaited(&mut observer, "the ban's announcement or alice's leave");
    let second = awaited(&mut observer, &format!("alice's leave after banning her (got {first})"));
    let got = [first, second];
    assert!(got.contains(&seed_users(&["obs"])), "the leave at once: {got:?}");
    refused(&server, &ticket, "banned");
}

/// A resume is not a new login into the room: the room-wide login rate
/// (`room_logins_per_sec`) does not stop it.
#[test]
fn the_room_wide_login_rate_lets_a_resume_in() {
    let _quiet = quiet();
    let server = TestServer::start(json!({"room_logins_per_sec": 1}));
    let alice = server.login_resumable("alice");
    let ticket = alice.ticket.clone();
    drop(alice);
    // Spend the room's logins (a burst of 1, then 1 a second).
    let refused_one = (0..3).any(|i| {
        let mut client = server.connect();
        client.send_text(PASSWORD);
        client.send_text(&format!("x{i}"));
        client.recv_json()["code"] == "too_many_logins"
    });
    assert!(refused_one, "the room's login rate never refused a login");
    let (answer, _alice) = server.resume(server.connect(), &ticket);
    assert!(answer.get("reset").is_none_or(|r| r == false), "{answer}");
}

/// At most `max_connections` sessions are away at once: past that the
/// longest-away one leaves early.
#[test]
fn at_most_max_connections_sessions_are_away() {
    let server = TestServer::start(json!({"max_connections": 4}));
    let mut observer = server.raw_login("obs");
    let mut tickets = Vec::new();
    let mut online = vec!["obs"];
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        let away = server.login_resumable(name);
        online.insert(online.len() - 1, name);
        assert_eq!(text_frame(&mut observer), seed_users(&online));
        tickets.push(away.ticket.clone());
        drop(away); // the socket closes without a Close: away
    }
    online.remove(0);
    assert_eq!(text_frame(&mut observer), seed_users(&online), "a1, the longest away, leaves");
    let (answer, _a1) = server.resume(server.connect(), &tickets[0]);
    assert_eq!(answer["reset"], true, "{answer}");
    let (answer, mut a2) = server.resume(server.connect(), &tickets[1]);
    // Presence is no missed message: the list after the answer says it.
    assert_eq!(answer["missed"], 0, "{answer}");
    let now = a2.recv();
    assert_eq!(names(&now), ["a1", "a2", "a3", "a4", "a5", "obs"], "{now}");
}

#[test]
fn a_token_is_worth_nothing_once_its_session_ended() {
    let server = TestServer::start(json!({}));
    let mut observer = server.raw_login("obs");
    let mut alice = server.login_resumable("alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    let stale = alice.ticket.clone();
    alice
        .client
        .ws
        .close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() }))
        .unwrap();
    let (_, ending) = alice.client.recv_until_end();
    assert_eq!(ending.code(), Some(1000));
    assert_eq!(text_frame(&mut observer), seed_users(&["obs"]));

    // The name is free: a new login, with a new token.
    let (answer, _alice) = server.resume(server.connect(), &stale);
    assert_eq!(answer["reset"], true, "{answer}");
    assert_ne!(answer["resume"]["token"], stale.token.as_str(), "{answer}");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    // The old token is not the new session's.
    refused(&server, &stale, "resume_refused");
}

#[test]
fn guessing_tokens_is_throttled_like_passwords() {
    let server = TestServer::start(json!({"login_attempts_per_minute": 3}));
    let mut alice = server.login_resumable("alice");
    for n in 0..3 {
        refused(&server, &alice.ticket.with_token(&forged_token(n)), "resume_refused");
    }
    refused(&server, &alice.ticket.with_token(&forged_token(3)), "too_many_attempts");
    // Unchecked from then on, the right token too.
    refused(&server, &alice.ticket, "too_many_attempts");
    alice.send(broadcast("still here"));
    assert_eq!(
        without_seq(&alice.recv()),
        json!({"msgType": "Broadcast", "SrcUser": "alice", "text": "still here"})
    );
}

/// More than the server keeps (1 MiB) said while alice was away: a reset,
/// the session going on (same token), with the joiner's snapshot.
#[test]
fn a_seq_older_than_what_the_server_keeps_is_a_reset() {
    let server = TestServer::start(json!({
        "max_message_bytes": 65536,
        "max_outbound_bytes": 16 << 20,
        "rate_limit_per_sec": 0,
        "rate_limit_bytes_per_sec": 0,
    }));
    let mut observer = server.raw_login("obs");
    let mut bob = server.login_resumable("bob");
    assert_eq!(text_frame(&mut observer), seed_users(&["bob", "obs"]));
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "bob", "obs"]));
    bob.recv_type("OnlineUsers");
    let ticket = cut_off(&relay, alice);

    let big = "x".repeat(60_000);
    for i in 0..20 {
        let text = format!("{i:02}{big}");
        bob.send(broadcast(&text));
        assert_eq!(without_seq(&bob.recv())["text"], text.as_str());
        assert_eq!(text_frame(&mut observer), seed_broadcast("bob", &text));
    }
    let last = bob.ticket.seq;

    let (answer, mut alice) = server.resume(server.connect_via(relay.addr()), &ticket);
    assert_eq!(answer["reset"], true, "1.2 MB missed: {answer}");
    assert!(answer["why"].is_string(), "{answer}");
    assert_eq!(answer["resume"]["token"], ticket.token.as_str(), "the session goes on: {answer}");
    assert_eq!(answer["resume"]["epoch"], ticket.epoch.as_str(), "{answer}");
    assert!(
        answer["resume"]["seq"].as_u64().is_some_and(|s| s >= last),
        "the current position: {answer}"
    );
    let now = alice.recv();
    assert_eq!(names(&now), ["alice", "bob", "obs"], "{now}");
    // The joiner's history follows: the newest broadcasts that fit 64 KiB,
    // one of these. Nobody saw her leave or come back.
    heard_after_history(&mut alice, &mut observer, "back", last, 1);
}

/// What alice missed fits what the server keeps but not half of
/// `max_outbound_bytes`: a reset.
#[test]
fn more_than_the_replay_budget_is_a_reset() {
    let server = TestServer::start(json!({"max_outbound_bytes": 65536}));
    let mut observer = server.raw_login("obs");
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    let ticket = cut_off(&relay, alice);
    for i in 0..3 {
        let text = format!("{i}{}", "y".repeat(15_000));
        observer.send_text(&broadcast(&text).to_string());
        assert_eq!(text_frame(&mut observer), seed_broadcast("obs", &text));
    }
    let (answer, mut alice) = server.resume(server.connect_via(relay.addr()), &ticket);
    assert_eq!(answer["reset"], true, "45 KB missed, budget 32 KiB: {answer}");
    assert_eq!(answer["resume"]["token"], ticket.token.as_str(), "the session goes on: {answer}");
    assert_eq!(names(&alice.recv()), ["alice", "obs"]);
    // The history (32 KiB here: the last two) after the list.
    heard_after_history(&mut alice, &mut observer, "back", ticket.seq, 2);
}

#[test]
fn a_close_1000_is_a_goodbye_any_other_close_keeps_the_place() {
    let server = TestServer::start(json!({}));
    let mut observer = server.raw_login("obs");
    let mut alice = server.login_resumable("alice");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));

    // 1001 (going away): not a goodbye. Once the close handshake is over
    // the server has handled it; the observer's own broadcast comes next.
    alice.client.ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "".into() })).unwrap();
    let (_, ending) = alice.client.recv_until_end();
    assert!(matches!(ending, Ending::Close(_)), "{ending:?}");
    let ticket = alice.ticket.clone();
    observer.send_text(&broadcast("anyone?").to_string());
    assert_eq!(text_frame(&mut observer), seed_broadcast("obs", "anyone?"));
    let (answer, mut alice) = server.resume(server.connect(), &ticket);
    assert_eq!(answer["missed"], 1, "{answer}");
    let missed = alice.recv();
    assert_eq!(
        without_seq(&missed),
        json!({"msgType": "Broadcast", "SrcUser": "obs", "text": "anyone?"})
    );
    assert_eq!(names(&alice.recv()), ["alice", "obs"]);

    // 1000: a goodbye, the leave at once (the grace is 120 s).
    let ticket = alice.ticket.clone();
    alice.client.ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })).unwrap();
    let said = Instant::now();
    assert_eq!(text_frame(&mut observer), seed_users(&["obs"]));
    assert!(said.elapsed() < Duration::from_secs(5), "{:?}", said.elapsed());
    let (answer, _alice) = server.resume(server.connect(), &ticket);
    assert_eq!(answer["reset"], true, "{answer}");
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
}

/// A resume is a login of the new address: its bans and its login rate
/// apply (the addresses named by a trusted proxy's `X-Forwarded-For`); a
/// locked room lets a resuming user back in.
#[test]
fn a_resume_is_charged_to_the_new_address() {
    const XFF: &str = "X-Forwarded-For";
    let server =
        TestServer::start(json!({"trusted_proxies": ["127.0.0.1"], "logins_per_minute_per_ip": 2}));
    let alice = server.log_in_resumable(server.connect_with(&[(XFF, "203.0.113.5")]), "alice");
    let ticket = alice.ticket.clone();
    drop(alice); // the socket closes, no Close frame
    server.ctl_ok(&["ban", "198.51.100.7"]);
    let (mut client, answer) =
        server.send_resume(server.connect_with(&[(XFF, "198.51.100.7")]), &ticket);
    assert_eq!(answer["code"], "banned", "{answer}");
    assert_eq!(client.recv_until_end().1.code(), Some(1008));

    for name in ["x1", "x2"] {
        server.log_in(server.connect_with(&[(XFF, "198.51.100.8")]), name);
    }
    let (mut client, answer) =
        server.send_resume(server.connect_with(&[(XFF, "198.51.100.8")]), &ticket);
    assert_eq!(answer["code"], "too_many_logins", "{answer}");
    assert_eq!(client.recv_until_end().1.code(), Some(1008));

    server.ctl_ok(&["lock"]);
    let (answer, _alice) = server.resume(server.connect_with(&[(XFF, "198.51.100.9")]), &ticket);
    // Exactly (what she missed: the announcements of the ban and the lock).
    assert!(answer["missed"].is_u64(), "back in a locked room: {answer}");
    assert!(answer.get("reset").is_none_or(|r| r == false), "{answer}");
}

#[test]
fn resume_over_wss() {
    let server = TestServer::start_tls(json!({}));
    let mut bob = server.login("bob");
    let relay = Relay::start(server.addr);
    let alice = server.login_resumable_via(relay.addr(), "alice");
    bob.recv_type("OnlineUsers");
    let ticket = cut_off(&relay, alice);
    bob.send_json(broadcast("over tls"));
    assert_eq!(
        bob.recv_json(),
        json!({"msgType": "Broadcast", "SrcUser": "bob", "text": "over tls"})
    );
    let (answer, mut alice) = server.resume(server.connect_via(relay.addr()), &ticket);
    assert_eq!(answer["missed"], 1, "{answer}");
    assert_eq!(
        without_seq(&alice.recv()),
        json!({"msgType": "Broadcast", "SrcUser": "bob", "text": "over tls"})
    );
    assert_eq!(names(&alice.recv()), ["alice", "bob"]);
}

#[test]
fn with_no_grace_there_is_no_resume() {
    let server = TestServer::start(json!({"resume_grace_secs": 0}));
    let mut observer = server.raw_login("obs");
    let mut alice = server.connect();
    alice.send_text(PASSWORD);
    alice.send_json(json!({"msgType": "Login", "name": "alice"}));
    assert_eq!(alice.recv_json(), json!({"ServerName": "Test Room"}));
    assert_eq!(names(&alice.recv_json()), ["alice", "obs"]);
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
    drop(alice);
    assert_eq!(text_frame(&mut observer), seed_users(&["obs"]), "a drop is a leave at once");

    // A Resume is a Login, answered as a reset.
    let ticket = Ticket { name: "alice".into(), token: forged_token(0), epoch: "0".into(), seq: 1 };
    let (mut alice, answer) = server.send_resume(server.connect(), &ticket);
    assert_eq!(answer["msgType"], "Resumed", "{answer}");
    assert_eq!(answer["reset"], true, "{answer}");
    assert_eq!(names(&alice.recv_json()), ["alice", "obs"]);
    assert_eq!(text_frame(&mut observer), seed_users(&["alice", "obs"]));
}

/// By default (no `resume_grace_secs` in the config) resuming is on.
#[test]
fn resuming_is_on_by_default() {
    let server = TestServer::start(json!({}));
    let mut alice = server.connect();
    alice.send_text(PASSWORD);
    alice.send_json(json!({"msgType": "Login", "name": "alice"}));
    let welcome = alice.recv_json();
    let token = welcome["resume"]["token"].as_str().unwrap_or_else(|| panic!("{welcome}"));
    assert_eq!(token.len(), 43, "256 bits in base64url: {welcome}");
    assert!(
        token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{welcome}"
    );
    let users = alice.recv_json();
    assert_eq!(seq_of(&users), welcome["resume"]["seq"].as_u64(), "{users}");
    // A bare name is the seed's login: no resume, no seq.
    let mut bob = server.connect();
    bob.send_text(PASSWORD);
    bob.send_text("bob");
    assert_eq!(bob.recv_json(), json!({"ServerName": "Test Room"}));
    assert_eq!(bob.recv_json(), json!({"msgType": "OnlineUsers", "Users": ["alice", "bob"]}));
}
