//! The link's state machine driven by hand, with no Redis: replies and
//! messages are made here, time is moved by hand, and what the link asks
//! for (`Out`) and tells the server (`Note`) is checked.

use serde_json::json;

use super::super::event::Kept;
use super::*;

const MS: Duration = Duration::from_millis(1);

fn b(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn user(key: &str, name: &str) -> LocalUser {
    LocalUser { name_key: key.into(), name: name.into(), key: None, token: None }
}

fn origin(id: usize) -> Origin {
    Origin { id, serial: 1 }
}

/// A link, the time, and what it asked for.
struct Bench {
    link: Link,
    now: Instant,
}

impl Bench {
    fn new() -> Bench {
        let url = RedisUrl::parse("redis://127.0.0.1:6379").unwrap();
        let now = Instant::now();
        let mut link = Link::new(&url, "room", (50, 1 << 20), now);
        link.clock = || 1_000_000;
        Bench { link, now }
    }

    /// A link that has connected, subscribed, synced (with `others` on
    /// other nodes) and seen its own sync event come back: up at `seq`.
    fn up(seq: u64) -> Bench {
        let mut bench = Bench::new();
        bench.join(&[]);
        bench.synced(seq, vec![]);
        assert!(matches!(&bench.notes()[..], [Note::Synced { .. }]));
        bench.message(seq, &format!(r#"{{"e":"node","node":"{}","users":{{}}}}"#, bench.node()));
        assert!(bench.notes().is_empty() && bench.outs().is_empty());
        bench
    }

    fn node(&self) -> String {
        self.link.node().to_string()
    }

    fn later(&mut self, by: Duration) {
        self.now += by;
    }

    fn tick(&mut self) {
        self.link.tick(self.now);
    }

    /// Everything the link asked for since the last call.
    fn outs(&mut self) -> Vec<Out> {
        self.link.output().drain(..).collect()
    }

    /// The commands asked for since the last call, as text ("EVALSHA"
    /// becomes the script's name).
    fn commands(&mut self) -> Vec<String> {
        self.outs()
            .iter()
            .map(|out| match out {
                Out::Connect => "connect".to_owned(),
                Out::Disconnect => "disconnect".to_owned(),
                Out::Command(c) => format!("cmd {}", describe(c)),
                Out::Subscription(c) => format!("sub {}", describe(c)),
            })
            .collect()
    }

    fn notes(&mut self) -> Vec<Note> {
        self.link.take_notes().into()
    }

    fn reply(&mut self, reply: Value) {
        self.link.on_reply(reply, self.now);
    }

    fn message(&mut self, seq: u64, json: &str) {
        let message = Value::Array(vec![
            b("message"),
            b("ragnarok:room:events"),
            b(&format!("{seq} {json}")),
        ]);
        self.link.on_message(message, self.now);
    }

    fn say(&mut self, seq: u64, text: &str) {
        self.message(seq, &format!(r#"{{"e":"say","name":"A","text":"{text}"}}"#));
    }

    /// From down: connects, loads, subscribes; then syncs `users` (the
    /// sync command, as text).
    fn join(&mut self, users: &[LocalUser]) -> String {
        self.tick();
        assert_eq!(self.commands(), ["connect"]);
        self.link.connected(self.now);
        let sent = self.commands();
        let scripts = Script::ALL.len();
        assert_eq!(sent.len(), scripts + 1, "{sent:?}");
        assert!(sent[..scripts].iter().all(|c| c.starts_with("cmd SCRIPT LOAD")), "{sent:?}");
        assert_eq!(sent[scripts], "sub SUBSCRIBE ragnarok:room:events");
        for _ in 0..scripts {
            self.reply(b("sha"));
        }
        assert!(!self.link.wants_sync(), "not before the subscription is confirmed");
        let confirmation =
            Value::Array(vec![b("subscribe"), b("ragnarok:room:events"), Value::Int(1)]);
        self.link.on_message(confirmation, self.now);
        assert!(self.link.wants_sync());
        self.link.sync(users, self.now);
        assert!(!self.link.wants_sync());
        let sent = self.commands();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].starts_with("cmd sync ragnarok:room: "), "{sent:?}");
        sent[0].clone()
    }

    /// The sync's reply: `seq`, `users` as (key, node, name), no history,
    /// no rules.
    fn synced(&mut self, seq: u64, users: Vec<(&str, &str, &str)>) {
        let mut hash = Vec::new();
        for (key, node, name) in users {
            hash.push(b(key));
            hash.push(b(&format!("{node}\n{name}")));
        }
        self.reply(sync_reply(seq, hash, 1_000_000, no_rules()));
    }

    /// The link broke (asked to disconnect, told the server when it was up).
    fn assert_broke(&mut self) -> Vec<Note> {
        assert!(!self.link.is_up());
        assert!(self.commands().contains(&"disconnect".to_owned()));
        self.notes()
    }
}

/// "SCRIPT LOAD", "SUBSCRIBE ch" or the script's name and its arguments.
fn describe(command: &Command) -> String {
    let args: Vec<String> =
        command.args().iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if args[0] == "SCRIPT" {
        return "SCRIPT LOAD".into();
    }
    if args[0] == "EVALSHA" {
        let script = Script::ALL.into_iter().find(|s| s.sha().as_bytes() == command.args()[1]);
        let name = script.map_or("?".to_owned(), |s| format!("{s:?}").to_lowercase());
        return format!("{name} {}", args[3..].join(" "));
    }
    args.join(" ")
}

fn refused(notes: &[Note]) -> Vec<(usize, ErrorCode)> {
    notes
        .iter()
        .filter_map(|n| match n {
            Note::Refused { origin, why } => Some((origin.id, why.code)),
            _ => None,
        })
        .collect()
}

fn downs(notes: &[Note]) -> Vec<String> {
    notes
        .iter()
        .filter_map(|n| match n {
            Note::Down { why } => Some(why.to_string()),
            _ => None,
        })
        .collect()
}

/// A sync's reply: `seq`, the users' hash, Redis's clock, and the rules'
/// bans, mutes and lock; no conflicts, keys or history.
fn sync_reply(
    seq: u64,
    users: Vec<Value>,
    redis_ms: i64,
    [bans, mutes, locked]: [Value; 3],
) -> Value {
    Value::Array(vec![
        Value::Int(seq as i64),
        Value::Array(vec![]),
        Value::Array(users),
        Value::Array(vec![]),
        Value::Array(vec![]),
        Value::Int(redis_ms),
        bans,
        mutes,
        locked,
        Value::Bytes(b"EPOCH".to_vec()),
    ])
}

/// A sync's rules when Redis keeps none: no bans, no mutes, not locked.
fn no_rules() -> [Value; 3] {
    [Value::Array(vec![]), Value::Array(vec![]), Value::Int(0)]
}

fn say_to(name: &str, text: &str) -> Proposed {
    Proposed::Say { name: name.into(), text: text.into() }
}

#[test]
fn connects_loads_subscribes_and_syncs() {
    let mut bench = Bench::new();
    assert!(bench.commands().is_empty(), "nothing before the first tick");
    bench.join(&[user("al", "Al"), LocalUser { key: Some("PK".into()), ..user("bo", "Bo") }]);
    // Alone with Bo's key: the sync names both users, in order.
    assert!(bench.link.stats().connect_attempts == 1 && !bench.link.is_up());
    let me = bench.node();
    let reply = Value::Array(vec![
        Value::Int(41),
        Value::Array(vec![b("bo")]),
        Value::Array(vec![
            b("al"),
            b(&format!("{me}\nAl")),
            b("cy"),
            b("other\nCy"),
            b("bad"),
            b("no newline"),
        ]),
        Value::Array(vec![b("cy"), b("CYKEY")]),
        Value::Array(vec![b(r#"{"e":"say","name":"Cy","text":"old"}"#), b("not json")]),
        Value::Int(1_000_500),
        Value::Array(vec![]),
        Value::Array(vec![]),
        Value::Int(0),
        b("E1"),
    ]);
    bench.reply(reply);
    assert!(bench.link.is_up());
    let notes = bench.notes();
    let [Note::Synced { users, history, conflicts, rules, epoch, .. }] = &notes[..] else {
        panic!("{notes:?}")
    };
    assert_eq!(epoch, "E1");
    assert_eq!(rules, &KeptRules::default());
    assert_eq!(
        users,
        &[RemoteUser { node: "other".into(), name: "Cy".into(), key: Some("CYKEY".into()) }]
    );
    assert_eq!(history, &[("Cy".to_owned(), "old".to_owned())]);
    assert_eq!(conflicts, &["bo".to_owned()]);
    assert_eq!(bench.link.clock_offset, 500);
    assert_eq!(bench.link.stats().syncs, 1);
}

#[test]
fn the_sync_command_carries_the_users() {
    let mut bench = Bench::new();
    bench.tick();
    bench.link.connected(bench.now);
    for _ in Script::ALL {
        bench.reply(b("sha"));
    }
    bench.link.on_message(Value::Array(vec![b("subscribe"), b("c"), Value::Int(1)]), bench.now);
    bench.outs();
    let pk = LocalUser { key: Some("PK".into()), ..user("bo", "Bo") };
    bench.link.sync(&[user("al", "Al"), pk], bench.now);
    let me = bench.node();
    let sent = bench.commands();
    let (head, users) =
        sent[0].split_at(format!("cmd sync ragnarok:room: {me} 10000 50 1048576 ").len());
    assert_eq!(head, format!("cmd sync ragnarok:room: {me} 10000 50 1048576 "));
    let (epoch, users) = users.split_at(16);
    assert!(epoch.bytes().all(|c| c.is_ascii_hexdigit()), "{epoch}");
    assert_eq!(users, " 0 al Al   bo Bo PK ");
}

#[test]
fn events_before_the_marker_are_in_the_snapshot() {
    let mut bench = Bench::new();
    bench.join(&[]);
    // An event published before the sync reaches the subscription while
    // joining: it waits, and is dropped as part of the snapshot.
    bench.say(9, "early");
    bench.synced(10, vec![]);
    assert!(matches!(&bench.notes()[..], [Note::Synced { .. }]));
    bench.say(8, "late but in the snapshot");
    assert!(bench.notes().is_empty());
    let me = bench.node();
    bench.message(10, &format!(r#"{{"e":"node","node":"{me}","users":[]}}"#));
    assert!(bench.notes().is_empty(), "our own sync is not an event for the server");
    bench.say(11, "live");
    let notes = bench.notes();
    assert!(matches!(&notes[..], [Note::Event(_, Event::Say { text, .. })] if text == "live"));
    assert_eq!(bench.link.stats().events, 1);
    assert!(bench.link.is_up());
}

#[test]
fn an_event_after_the_marker_before_it_breaks_the_link() {
    let mut bench = Bench::new();
    bench.join(&[]);
    bench.synced(10, vec![]);
    bench.notes();
    bench.say(11, "before our own");
    assert_eq!(downs(&bench.assert_broke()), ["events after 10 came before it"]);
}

#[test]
fn the_marker_must_come_back_in_time() {
    let mut bench = Bench::new();
    bench.join(&[]);
    bench.synced(10, vec![]);
    bench.notes();
    bench.outs();
    bench.later(LINK_TIMEOUT - MS);
    bench.tick();
    assert!(bench.link.is_up());
    bench.later(MS);
    bench.tick();
    let why = downs(&bench.assert_broke());
    assert_eq!(why, ["this node's registration did not come back on the subscription"]);
}

#[test]
fn a_gap_breaks_the_link_and_it_resyncs() {
    let mut bench = Bench::up(10);
    bench.say(11, "a");
    bench.say(13, "c");
    let notes = bench.assert_broke();
    assert!(matches!(&notes[0], Note::Event(_, Event::Say { text, .. }) if text == "a"));
    assert_eq!(downs(&notes), ["missed events 12 to 12"]);
    assert!(matches!(
        notes.last(),
        Some(Note::Down { why: LinkError::Missed { first: 12, last: 12 } })
    ));
    assert_eq!(bench.link.stats().link_downs, 1);
    // Backoff, then the whole join again; events continue from the new sync.
    bench.tick();
    assert!(bench.commands().is_empty(), "not before the backoff");
    bench.later(BACKOFF_MIN);
    bench.join(&[]);
    bench.synced(20, vec![]);
    let me = bench.node();
    bench.message(20, &format!(r#"{{"e":"node","node":"{me}","users":[]}}"#));
    bench.say(21, "d");
    let notes = bench.notes();
    assert!(matches!(&notes[..], [Note::Synced { .. }, Note::Event(_, Event::Say { .. })]));
}

#[test]
fn redis_emptied_sends_the_count_back() {
    let mut bench = Bench::up(10);
    bench.say(1, "after FLUSHALL");
    let why = downs(&bench.assert_broke());
    assert_eq!(why, ["the room's event count went back from 10 to 1 (Redis was emptied?)"]);
}

/// The epoch a sync offers (taken only by a Redis that has none: a new
/// one, or one emptied) is new at every sync: a process that fills an
/// emptied Redis again must not name its memory as before, or a resume
/// would take the new numbers for the old ones.
#[test]
fn each_sync_offers_a_new_epoch() {
    let epoch = |command: &str| command.split(' ').nth(7).unwrap().to_owned();
    let mut bench = Bench::new();
    let first = epoch(&bench.join(&[]));
    bench.synced(10, vec![]);
    let me = bench.node();
    bench.message(10, &format!(r#"{{"e":"node","node":"{me}","users":[]}}"#));
    bench.say(1, "after FLUSHALL");
    bench.assert_broke();
    bench.later(BACKOFF_MIN);
    let again = bench.join(&[]);
    let second = epoch(&again);
    // The count it had seen goes with it: Redis's starts again above it.
    assert_eq!(again.split(' ').nth(8), Some("10"));
    assert_ne!(first, second);
    assert_ne!(first, me, "an epoch is not the node's name");
    assert_eq!(second.len(), 16);
}

#[test]
fn reconnects_with_a_growing_backoff() {
    let mut bench = Bench::new();
    let mut waits = Vec::new();
    for _ in 0..7 {
        bench.tick();
        assert_eq!(bench.commands(), ["connect"]);
        bench.link.broken(LinkError::NoSocket, bench.now);
        assert_eq!(bench.commands(), ["disconnect"]);
        assert!(bench.notes().is_empty(), "never up: nobody to tell");
        let State::Down { retry_at } = bench.link.state else { panic!() };
        waits.push((retry_at - bench.now).as_millis());
        bench.later(retry_at - bench.now - MS);
        bench.tick();
        assert!(bench.commands().is_empty());
        bench.later(MS);
    }
    assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
    assert_eq!(bench.link.stats().connect_attempts, 7);
    // A join that takes too long fails too.
    bench.tick();
    bench.link.connected(bench.now);
    bench.later(LINK_TIMEOUT);
    bench.tick();
    assert!(bench.commands().ends_with(&["disconnect".to_owned()]));
    // Once synced, the backoff starts over.
    bench.later(BACKOFF_MAX);
    bench.join(&[]);
    bench.synced(3, vec![]);
    assert_eq!(bench.link.backoff, BACKOFF_MIN);
    assert_eq!(bench.link.stats().link_downs, 0);
}

#[test]
fn the_lease_is_renewed_and_being_declared_dead_breaks_the_link() {
    let mut bench = Bench::up(10);
    bench.later(LEASE_EVERY - MS);
    bench.tick();
    assert!(bench.commands().is_empty());
    bench.later(MS);
    bench.tick();
    let me = bench.node();
    assert_eq!(bench.commands(), [format!("cmd lease ragnarok:room: {me} 10000")]);
    bench.reply(Value::Int(0));
    assert!(bench.link.is_up());
    bench.later(LEASE_EVERY);
    bench.tick();
    bench.outs();
    bench.reply(Value::Int(1));
    assert_eq!(downs(&bench.assert_broke()), ["the other nodes declared this one dead"]);
    // So does a Dead event naming this node.
    let mut bench = Bench::up(10);
    let me = bench.node();
    bench.message(11, &format!(r#"{{"e":"dead","node":"{me}"}}"#));
    assert_eq!(downs(&bench.assert_broke()), ["the other nodes declared this one dead"]);
    // Another node's death is an event.
    let mut bench = Bench::up(10);
    bench.message(11, r#"{"e":"dead","node":"x"}"#);
    assert!(matches!(&bench.notes()[..], [Note::Event(_, Event::Dead { .. })]));
    assert_eq!(bench.link.stats().dead_nodes, 1);
}

#[test]
fn a_claim_granted_then_the_link_breaking_is_refused() {
    let mut bench = Bench::up(10);
    let me = bench.node();
    bench.link.claim(origin(4), "al", "Al", None, bench.now);
    let join = format!(r#"{{"e":"join","node":"{me}","conn":"4.1","key":"al","name":"Al"}}"#);
    assert_eq!(bench.commands(), [format!("cmd claim ragnarok:room: {me} al Al {join} ")]);
    bench.reply(Value::Int(1));
    assert!(bench.notes().is_empty(), "granted: the Join event will say so");
    bench.link.broken(LinkError::NoSocket, bench.now);
    let notes = bench.assert_broke();
    assert_eq!(refused(&notes), [(4, ErrorCode::ClusterUnavailable)]);
    // Once its Join came back, a break refuses nothing.
    let mut bench = Bench::up(10);
    let me = bench.node();
    let join = format!(r#"{{"e":"join","node":"{me}","conn":"4.1","key":"al","name":"Al"}}"#);
    bench.link.claim(origin(4), "al", "Al", None, bench.now);
    bench.reply(Value::Int(1));
    bench.message(11, &join);
    assert!(matches!(&bench.notes()[..], [Note::Event(_, Event::Join { .. })]));
    bench.link.broken(LinkError::NoSocket, bench.now);
    assert!(refused(&bench.assert_broke()).is_empty());
}

#[test]
fn claims_refused_taken_or_retried_when_held_here() {
    let mut bench = Bench::up(10);
    bench.link.claim(origin(1), "al", "Al", None, bench.now);
    bench.reply(Value::Array(vec![b("AL"), Value::Int(0)]));
    let notes = bench.notes();
    assert_eq!(refused(&notes), [(1, ErrorCode::NameTaken)]);
    let Note::Refused { why, .. } = &notes[0] else { panic!() };
    assert_eq!(why.text, r#"the name "Al" is taken: "AL" is online in this room"#);
    // Held by this node (for a connection gone): asked again at each tick,
    // CLAIM_RETRIES times, then refused.
    bench.outs();
    bench.link.claim(origin(2), "bo", "Bo", None, bench.now);
    for _ in 0..CLAIM_RETRIES {
        assert_eq!(bench.commands().len(), 1);
        bench.reply(Value::Array(vec![b("Bo"), Value::Int(1)]));
        assert!(bench.notes().is_empty());
        bench.tick();
    }
    bench.reply(Value::Array(vec![b("Bo"), Value::Int(1)]));
    assert_eq!(refused(&bench.notes()), [(2, ErrorCode::NameTaken)]);
    // Not up: refused at once.
    let mut bench = Bench::new();
    bench.link.claim(origin(3), "cy", "Cy", None, bench.now);
    assert_eq!(refused(&bench.notes()), [(3, ErrorCode::ClusterUnavailable)]);
    assert!(bench.commands().is_empty());
}

#[test]
fn refusals_only_for_the_origin_when_out_of_memory() {
    let mut bench = Bench::up(10);
    bench.link.propose(origin(1), say_to("Al", "hi"), bench.now);
    bench.link.propose(origin(2), say_to("Bo", "hey"), bench.now);
    assert_eq!(bench.commands().len(), 2);
    bench.reply(Value::Error("OOM command not allowed when used memory > 'maxmemory'.".into()));
    bench.reply(Value::Int(1));
    assert_eq!(refused(&bench.notes()), [(1, ErrorCode::ClusterUnavailable)]);
    assert!(bench.link.is_up());
    // Anything else is mended by reconnecting (which loads the scripts).
    bench.link.propose(origin(3), say_to("Cy", "yo"), bench.now);
    bench.link.propose(origin(4), say_to("Di", "yo"), bench.now);
    bench.reply(Value::Error("NOSCRIPT No matching script.".into()));
    let notes = bench.assert_broke();
    assert_eq!(
        refused(&notes),
        [(3, ErrorCode::ClusterUnavailable), (4, ErrorCode::ClusterUnavailable)]
    );
    assert_eq!(downs(&notes), ["Redis refused: NOSCRIPT No matching script."]);
    // The lease refused, even for memory, breaks the link too.
    let mut bench = Bench::up(10);
    bench.later(LEASE_EVERY);
    bench.tick();
    bench.reply(Value::Error("OOM no".into()));
    assert_eq!(downs(&bench.assert_broke()), ["Redis refused: OOM no"]);
}

#[test]
fn proposals_carry_a_deadline_and_late_ones_are_refused() {
    let mut bench = Bench::new();
    bench.join(&[]);
    // Redis's clock 700 ms ahead of ours.
    bench.reply(sync_reply(5, vec![], 1_000_700, no_rules()));
    bench.notes();
    bench.link.propose(origin(1), say_to("Al", "hi"), bench.now);
    let deadline = 1_000_000 + 700 + 2500;
    let say = r#"{"e":"say","name":"Al","text":"hi"}"#;
    assert_eq!(bench.commands(), [format!("cmd say ragnarok:room: {deadline} 50 {say}")]);
    assert_eq!(bench.link.stats().published, 1);
    bench.reply(Value::Int(-1));
    assert_eq!(refused(&bench.notes()), [(1, ErrorCode::ClusterUnavailable)]);
    assert!(bench.link.is_up());
    // The other two proposals.
    let me = bench.node();
    let key = Proposed::PublicKey { name_key: "al".into(), key: "K".into() };
    bench.link.propose(origin(1), key, bench.now);
    let private = Proposed::Private {
        to_key: "bo".into(),
        to_name: "Bo".into(),
        from: "Al".into(),
        text: "x".into(),
    };
    bench.link.propose(origin(1), private, bench.now);
    let sent = bench.commands();
    let pk = format!(r#"{{"e":"pubkey","node":"{me}","key":"al","pk":"K"}}"#);
    let pm = r#"{"e":"pm","to":"bo","from":"Al","text":"x"}"#;
    assert_eq!(
        sent,
        [
            format!("cmd publickey ragnarok:room: {deadline} {me} al K {pk}"),
            format!("cmd private ragnarok:room: {deadline} bo {pm}"),
        ]
    );
    bench.reply(Value::Int(1));
    bench.reply(Value::Int(0));
    let notes = bench.notes();
    assert_eq!(refused(&notes), [(1, ErrorCode::UserOffline)]);
    let target = notes.iter().find_map(|note| match note {
        Note::Refused { why, .. } => why.target.as_deref(),
        _ => None,
    });
    assert_eq!(target, Some("Bo"), "user_offline names its TgtUser, as on the room path");
}

#[test]
fn what_cannot_be_sent_is_refused_at_once() {
    let mut bench = Bench::up(10);
    let big = "x".repeat(MAX_EVENT_BYTES);
    bench.link.propose(origin(1), say_to("Al", &big), bench.now);
    assert_eq!(refused(&bench.notes()), [(1, ErrorCode::MessageTooBig)]);
    assert!(bench.commands().is_empty());
    bench.link.set_backlog(MAX_QUEUED);
    bench.link.propose(origin(2), say_to("Al", "hi"), bench.now);
    assert_eq!(refused(&bench.notes()), [(2, ErrorCode::ClusterUnavailable)]);
    // What the link queues counts until the caller counts again.
    bench.link.set_backlog(MAX_QUEUED - 100);
    bench.link.propose(origin(3), say_to("Al", "hi"), bench.now);
    bench.link.propose(origin(4), say_to("Al", "hi"), bench.now);
    assert_eq!(refused(&bench.notes()), [(4, ErrorCode::ClusterUnavailable)]);
    assert_eq!(bench.link.stats().unavailable, 2);
    // While down: refused, and nothing queued.
    let mut bench = Bench::new();
    bench.link.propose(origin(5), say_to("Al", "hi"), bench.now);
    assert_eq!(refused(&bench.notes()), [(5, ErrorCode::ClusterUnavailable)]);
    assert!(bench.commands().is_empty());
}

#[test]
fn leaves_while_joining_are_sent_once_synced() {
    let mut bench = Bench::up(10);
    let me = bench.node();
    bench.link.leave("al", bench.now);
    let leave = format!(r#"{{"e":"leave","node":"{me}","key":"al"}}"#);
    assert_eq!(bench.commands(), [format!("cmd leave ragnarok:room: {me} al {leave}")]);
    bench.link.broken(LinkError::NoSocket, bench.now);
    bench.assert_broke();
    // Down: nothing to do (the next sync leaves the user out).
    bench.link.leave("bo", bench.now);
    assert!(bench.commands().is_empty());
    // Joining: remembered, sent once the sync is back.
    bench.later(BACKOFF_MIN);
    bench.join(&[user("cy", "Cy")]);
    bench.link.leave("cy", bench.now);
    assert!(bench.commands().is_empty());
    bench.synced(20, vec![("cy", &me, "Cy")]);
    let leave = format!(r#"{{"e":"leave","node":"{me}","key":"cy"}}"#);
    assert_eq!(bench.commands(), [format!("cmd leave ragnarok:room: {me} cy {leave}")]);
}

#[test]
fn a_reply_not_coming_breaks_the_link() {
    let mut bench = Bench::up(10);
    bench.link.propose(origin(1), say_to("Al", "hi"), bench.now);
    bench.later(REPLY_TIMEOUT - MS);
    bench.tick();
    assert!(bench.link.is_up());
    bench.later(MS);
    bench.tick();
    let notes = bench.assert_broke();
    assert_eq!(refused(&notes), [(1, ErrorCode::ClusterUnavailable)]);
    assert_eq!(downs(&notes), ["Redis did not answer for 3 s"]);
    // A reply to nothing, or garbage from the subscription, breaks it too.
    let mut bench = Bench::up(10);
    bench.reply(Value::Int(1));
    assert_eq!(downs(&bench.assert_broke()), ["Redis sent a reply to nothing"]);
    let mut bench = Bench::up(10);
    bench.link.on_message(Value::Int(3), bench.now);
    assert_eq!(
        downs(&bench.assert_broke()),
        ["the subscription sent something else than a message"]
    );
    // An event this version does not understand is skipped, and not
    // counted: the next one is a gap, and the room is read again.
    let mut bench = Bench::up(10);
    bench.message(11, r#"{"e":"from the future"}"#);
    assert!(bench.link.is_up() && bench.notes().is_empty());
    bench.say(12, "next");
    assert_eq!(downs(&bench.assert_broke()), ["missed events 11 to 11"]);
}

#[test]
fn a_bad_sync_reply_breaks_the_join() {
    let mut bench = Bench::new();
    bench.join(&[]);
    bench.reply(Value::Array(vec![Value::Int(1)]));
    assert!(!bench.link.is_up());
    assert!(bench.commands().contains(&"disconnect".to_owned()));
    assert!(bench.notes().is_empty(), "never up");
}

fn lock() -> Proposed {
    Proposed::Moderate {
        by: "ctl".into(),
        at: 1000,
        action: json!({"cmd": "lock"}),
        kept: Kept::Lock,
    }
}

#[test]
fn a_moderation_from_ctl_is_kept_then_published_and_comes_back() {
    let mut bench = Bench::up(10);
    let me = bench.node();
    let ban = r#"{"name":"bob","until":1600,"reason":"","by":"ctl","since":1000}"#;
    let what = Proposed::Moderate {
        by: "ctl".into(),
        at: 1000,
        action: json!({"cmd": "kick", "target": "bob", "for_secs": 600, "reason": ""}),
        kept: Kept::Ban { target: "bob".into(), ban: ban.into() },
    };
    bench.link.propose(Origin::control(7), what, bench.now);
    let event = format!(
        r#"{{"e":"mod","node":"{me}","conn":"ctl.7","by":"ctl","at":1000,"action":{{"cmd":"kick","for_secs":600,"reason":"","target":"bob"}}}}"#
    );
    let deadline = 1_000_000 + 2500;
    assert_eq!(
        bench.commands(),
        [format!("cmd moderate ragnarok:room: {deadline} ban bob {ban} {event}")]
    );
    assert_eq!(bench.link.stats().published, 1);
    bench.reply(Value::Int(1));
    assert!(bench.notes().is_empty(), "done: the event will say so");
    // It comes back in the room's order, like any event: every node (this
    // one too) applies it; the proposer knows its request by `conn`.
    bench.message(11, &event);
    let notes = bench.notes();
    let [Note::Event(_, Event::Moderate { node, conn, at, .. })] = &notes[..] else {
        panic!("{notes:?}")
    };
    assert_eq!((node, Origin::parse(conn), *at), (&me, Some(Origin::control(7)), 1000));
}

#[test]
fn a_moderation_not_done_is_refused_to_its_ctl_request() {
    // Past its deadline: Redis dropped it.
    let mut bench = Bench::up(10);
    bench.link.propose(Origin::control(1), lock(), bench.now);
    assert_eq!(bench.commands().len(), 1);
    bench.reply(Value::Int(-1));
    let notes = bench.notes();
    let [Note::Refused { origin, why }] = &notes[..] else { panic!("{notes:?}") };
    assert_eq!((origin.ticket(), why.code), (Some(1), ErrorCode::ClusterUnavailable));
    // Unanswered when the link breaks.
    bench.link.propose(Origin::control(2), lock(), bench.now);
    bench.link.broken(LinkError::NoSocket, bench.now);
    let notes = bench.assert_broke();
    assert_eq!(refused(&notes), [(Origin::control(2).id, ErrorCode::ClusterUnavailable)]);
    // The link down: refused at once, nothing sent.
    bench.link.propose(Origin::control(3), lock(), bench.now);
    let notes = bench.notes();
    assert!(matches!(&notes[..], [Note::Refused { origin, .. }] if origin.ticket() == Some(3)));
    assert!(bench.commands().is_empty());
    // Refused by Redis (out of memory): that request only.
    let mut bench = Bench::up(10);
    bench.link.propose(Origin::control(4), lock(), bench.now);
    bench.reply(Value::Error("OOM command not allowed".into()));
    let notes = bench.notes();
    assert!(matches!(&notes[..], [Note::Refused { origin, .. }] if origin.ticket() == Some(4)));
    assert!(bench.link.is_up());
}

#[test]
fn the_sync_reads_the_rules_back() {
    let mut bench = Bench::new();
    bench.join(&[]);
    let ban = r#"{"name":"bob","until":null,"reason":"","by":"ctl","since":1}"#;
    let mute = r#"{"name":"Cy","until":5000}"#;
    let rules = [
        Value::Array(vec![b("bob"), b(ban), b("10.0.0.0/8"), b("{}"), b("odd field")]),
        Value::Array(vec![b("cy"), b(mute), Value::Int(3), Value::Array(vec![])]),
        Value::Int(1),
    ];
    bench.reply(sync_reply(12, vec![], 1_000_000, rules));
    assert!(bench.link.is_up());
    let notes = bench.notes();
    let [Note::Synced { rules, .. }] = &notes[..] else { panic!("{notes:?}") };
    // What is not text comes as "", for the server to refuse; a field
    // without a value is left out.
    assert_eq!(
        rules,
        &KeptRules {
            bans: vec![ban.into(), "{}".into()],
            mutes: vec![("cy".into(), mute.into()), (String::new(), String::new())],
            locked: true,
        }
    );
    // An older sync's answer (no rules) is not a sync.
    let mut bench = Bench::new();
    bench.join(&[]);
    let Value::Array(mut short) = sync_reply(12, vec![], 1_000_000, no_rules()) else {
        unreachable!()
    };
    short.truncate(6);
    bench.reply(Value::Array(short));
    assert!(!bench.link.is_up());
    assert!(bench.commands().contains(&"disconnect".to_owned()));
    // Nor is a lock that is not a number.
    let mut bench = Bench::new();
    bench.join(&[]);
    let rules = [Value::Array(vec![]), Value::Array(vec![]), b("1")];
    bench.reply(sync_reply(12, vec![], 1_000_000, rules));
    assert!(!bench.link.is_up());
}
