//! The encrypted room across two nodes, with Redis read directly: every key
//! of every type, and every message on every channel (PSUBSCRIBE * from
//! before the chat) hold room messages and key messages, never the texts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ragnarok_testkit::cluster::*;
use ragnarok_testkit::e2e::{self, Keys};
use ragnarok_testkit::e2e_room::Event;
use serde_json::json;

/// A member of the room on one node: its user and its client of both schemes.
struct Member {
    user: User,
    e2e: e2e::Client,
    events: Vec<Event>,
}

impl Member {
    fn join(cluster: &Cluster, node: usize, name: &str) -> Member {
        let user = cluster.login(node, name);
        let mut e2e = e2e::Client::new(Keys::generate());
        // The welcome (read by the login) was {"ServerName": "Test Room", "e2e_room": true}.
        e2e.set_room("Test Room");
        let mut member = Member { user, e2e, events: Vec::new() };
        member.user.send(json!({"msgType": "PublicKey", "key": member.e2e.published()}));
        member
    }

    /// Reads until `done` holds, within [`CONVERGE`].
    fn until(&mut self, what: &str, mut done: impl FnMut(&e2e::Client, &[Event]) -> bool) {
        let deadline = after(CONVERGE);
        while !done(&self.e2e, &self.events) {
            let m = self.user.wait_for(deadline, what, |_| true);
            assert_ne!(m["msgType"], "Error", "{}: {m}", self.user.name);
            let events = self.e2e.take(&m);
            self.events.extend(events);
        }
    }

    fn knows(&mut self, users: &[&str]) {
        let me = self.user.name.clone();
        self.until("everyone's key", |c, _| {
            users.iter().all(|u| if *u == me { c.name() == Some(u) } else { c.has_key(u) })
        });
    }

    fn say(&mut self, text: &str) {
        for m in self.e2e.seal_room(text).unwrap().messages() {
            self.user.send(m);
        }
    }

    /// Reads `from`'s next room message: it must be `text`.
    fn reads(&mut self, from: &str, text: &str) {
        let is_it = |e: &Event| matches!(e, Event::Room { from: f, .. } if f == from);
        self.until(&format!("{from}'s {text:?}"), |_, events| events.iter().any(is_it));
        let at = self.events.iter().position(is_it).unwrap();
        let Event::Room { read, .. } = self.events.remove(at) else { unreachable!() };
        let name = &self.user.name;
        assert_eq!(read.unwrap_or_else(|why| panic!("{name}: {from}'s: {why:?}")).text, text);
    }
}

/// A RESP connection to Redis: commands as arrays of bulk strings, replies
/// flattened to their strings.
struct Resp {
    reader: BufReader<TcpStream>,
}

impl Resp {
    fn connect(port: u16) -> Resp {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Resp { reader: BufReader::new(tcp) }
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out += &format!("${}\r\n{a}\r\n", a.len());
        }
        self.reader.get_mut().write_all(out.as_bytes()).unwrap();
    }

    /// One reply, every string in it, in order.
    fn reply(&mut self) -> Vec<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let (kind, rest) = line.trim_end().split_at(1);
        match kind {
            "+" | ":" => vec![rest.to_owned()],
            "-" => panic!("Redis: {rest}"),
            "$" if rest == "-1" => Vec::new(),
            "$" => {
                let mut bulk = vec![0u8; rest.parse::<usize>().unwrap() + 2];
                self.reader.read_exact(&mut bulk).unwrap();
                vec![String::from_utf8_lossy(&bulk[..bulk.len() - 2]).into_owned()]
            }
            "*" => (0..rest.parse::<i64>().unwrap().max(0)).flat_map(|_| self.reply()).collect(),
            other => panic!("unexpected RESP {other:?}: {line:?}"),
        }
    }

    fn call(&mut self, args: &[&str]) -> Vec<String> {
        self.send(args);
        self.reply()
    }

    /// Every key with its value, whatever its type, as text.
    fn everything(&mut self) -> String {
        let mut dump = String::new();
        let mut cursor = "0".to_owned();
        loop {
            let mut page = self.call(&["SCAN", &cursor, "COUNT", "1000"]).into_iter();
            cursor = page.next().unwrap();
            for key in page {
                let kind = self.call(&["TYPE", &key]).concat();
                let value = match kind.as_str() {
                    "string" => self.call(&["GET", &key]),
                    "list" => self.call(&["LRANGE", &key, "0", "-1"]),
                    "hash" => self.call(&["HGETALL", &key]),
                    "set" => self.call(&["SMEMBERS", &key]),
                    "zset" => self.call(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]),
                    "stream" => self.call(&["XRANGE", &key, "-", "+"]),
                    "none" => Vec::new(), // gone since the scan
                    other => panic!("a key of type {other}: {key}"),
                };
                dump += &format!("{key} ({kind}): {}\n", value.join(" | "));
            }
            if cursor == "0" {
                return dump;
            }
        }
    }
}

/// Every message on every channel from now on, as text, read by [`drained`].
fn psubscribe_all(port: u16) -> Resp {
    let mut all = Resp::connect(port);
    assert_eq!(all.call(&["PSUBSCRIBE", "*"]), ["psubscribe", "*", "1"]);
    all
}

/// What the subscription got until it was quiet for 500 ms.
fn drained(sub: &mut Resp) -> String {
    let tcp = sub.reader.get_ref().try_clone().unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut out = String::new();
    while sub.reader.fill_buf().is_ok_and(|b| !b.is_empty()) {
        out += &sub.reply().join(" | ");
        out.push('\n');
    }
    out
}

#[test]
fn redis_holds_and_carries_only_ciphertext_of_the_room() {
    let cluster = Cluster::start(2, json!({"e2e_room": true}));
    let mut channels = psubscribe_all(cluster.redis.port);
    let names = ["alice", "bob", "carol"];
    let mut members: Vec<Member> =
        names.iter().zip([0, 1, 1]).map(|(n, node)| Member::join(&cluster, node, n)).collect();
    for m in &mut members {
        m.knows(&names);
    }
    let start = Instant::now();
    let mut said = Vec::new();
    for round in 0..3 {
        for at in 0..members.len() {
            let from = members[at].user.name.clone();
            let text = format!("zebra-{round}-{from} says the quiet part ✓");
            members[at].say(&text);
            for m in &mut members {
                m.reads(&from, &text);
            }
            said.push(text);
        }
    }
    eprintln!("9 room messages across two nodes read by all in {:?}", start.elapsed());

    let carried = drained(&mut channels);
    let kept = Resp::connect(cluster.redis.port).everything();
    // Both hold the sealed forms (so the reads see what there is): the
    // channels the key messages and the broadcasts, the history list the
    // broadcasts; neither any text.
    assert!(carried.contains("e2e2k:") && carried.contains("e2er1:1:3:"), "{carried}");
    assert!(kept.contains("e2er1:1:3:") && kept.contains(members[0].e2e.published()), "{kept}");
    for (what, seen) in [("carried", &carried), ("kept", &kept)] {
        assert!(!seen.contains("zebra") && !seen.contains("quiet part"), "{what}: {seen}");
    }
    let logs = cluster.logs();
    assert!(said.iter().all(|t| !logs.contains(t.as_str())) && !logs.contains("zebra"), "{logs}");
}
