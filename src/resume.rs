//! Resuming a session after a dropped connection (docs/PROTOCOL.md,
//! "Resuming after a dropped connection"): the name frame as JSON, the
//! resume token and its hash, and the journal of the room's messages kept
//! for sessions that come back.

use std::collections::VecDeque;
use std::rc::Rc;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::protocol::Kind;

/// The journal keeps at most this many bytes of messages…
pub const JOURNAL_BYTES: usize = 1024 * 1024;
/// …and at most this many messages.
pub const JOURNAL_MESSAGES: usize = 16_384;

/// The second login frame: a bare name (the original protocol), or one of
/// the JSON requests of a client that resumes.
#[derive(Debug, PartialEq, Eq)]
pub enum NameFrame<'a> {
    Bare(&'a str),
    Login { name: String },
    Resume(Ask),
}

/// What a `Resume` asks: the session under `name` whose token is `token`,
/// from position `seq` of room memory `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub name: String,
    pub token: String,
    pub epoch: String,
    pub seq: u64,
}

impl NameFrame<'_> {
    /// Reads the name frame. A JSON object whose `msgType` is `Login` or
    /// `Resume` is that request (`Err`: a field missing or of the wrong
    /// type, said in a sentence); anything else is a name, as before.
    pub fn parse(frame: &str) -> Result<NameFrame<'_>, &'static str> {
        if !frame.starts_with('{') {
            return Ok(NameFrame::Bare(frame));
        }
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(frame) else {
            return Ok(NameFrame::Bare(frame));
        };
        let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_owned);
        match fields.get("msgType").and_then(Value::as_str) {
            Some("Login") => {
                let name = text("name").ok_or("a Login needs \"name\", a string")?;
                Ok(NameFrame::Login { name })
            }
            Some("Resume") => Ok(NameFrame::Resume(Ask {
                name: text("name").ok_or("a Resume needs \"name\", a string")?,
                token: text("token").ok_or("a Resume needs \"token\", a string")?,
                epoch: text("epoch").ok_or("a Resume needs \"epoch\", a string")?,
                seq: fields
                    .get("seq")
                    .and_then(Value::as_u64)
                    .ok_or("a Resume needs \"seq\", a whole number")?,
            })),
            _ => Ok(NameFrame::Bare(frame)),
        }
    }
}

/// A new resume token: 256 random bits, base64url without padding (43
/// characters). `None` if the system's randomness failed.
pub fn new_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64url(&bytes))
}

/// A new epoch: 64 random bits in hex (a clock's nanoseconds if the
/// system's randomness failed: an epoch must differ, not be secret).
pub fn new_epoch() -> String {
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the server keeps of a token: its SHA-256, in hex (64 characters).
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two hashes without stopping at the first difference.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Whom a journaled message was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum For {
    Everyone,
    /// A private message, to the user with this comparison key.
    Name(Rc<str>),
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    to: For,
    kind: Kind,
    json: Rc<str>,
}

/// The room's last messages that a returning session may have missed
/// (broadcasts, private messages, keys, announcements), by position, within
/// `JOURNAL_BYTES` and `JOURNAL_MESSAGES`. Everything after `floor` is here.
#[derive(Debug, Default)]
pub struct Journal {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// No message after this position is missing (those at or before it
    /// may be).
    floor: u64,
}

/// Why the journal cannot give a session exactly what it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Older than what is kept.
    TooOld,
    /// More than the budget.
    TooMuch,
    /// A position the room has not reached.
    Ahead,
    /// Another epoch: the room's memory was lost since.
    NewEpoch,
}

impl Gap {
    /// What a reset says of it.
    pub fn why(self) -> &'static str {
        match self {
            Gap::TooOld => "what you missed is older than what the server keeps",
            Gap::TooMuch => "you missed more than a resume may replay",
            Gap::Ahead => "your position is ahead of the room's",
            Gap::NewEpoch => "the room's memory is new (a restart, or the cluster's store emptied)",
        }
    }
}

impl Journal {
    /// Keeps a message at position `seq`.
    pub fn record(&mut self, seq: u64, to: For, kind: Kind, json: &str) {
        self.entries.push_back(Entry { seq, to, kind, json: Rc::from(json) });
        self.bytes += json.len();
        while self.bytes > JOURNAL_BYTES || self.entries.len() > JOURNAL_MESSAGES {
            let Some(old) = self.entries.pop_front() else { break };
            self.bytes -= old.json.len();
            self.floor = self.floor.max(old.seq);
        }
    }

    /// What happened up to `seq` may be missing (nothing is kept, or the
    /// room's order was broken): the journal starts again after it.
    pub fn forget_to(&mut self, seq: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.floor = seq;
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The messages after `from` for the user with comparison key `key`,
    /// in order (seq, JSON), if all are kept and they fit `budget` bytes;
    /// `now` is the room's position.
    pub fn since(
        &self,
        from: u64,
        now: u64,
        key: &str,
        budget: usize,
    ) -> Result<Vec<(u64, Kind, Rc<str>)>, Gap> {
        if from > now {
            return Err(Gap::Ahead);
        }
        if from < self.floor {
            return Err(Gap::TooOld);
        }
        let start = self.entries.partition_point(|e| e.seq <= from);
        let mut used = 0;
        let mut missed = Vec::new();
        for entry in self.entries.range(start..) {
            if let For::Name(to) = &entry.to
                && **to != *key
            {
                continue;
            }
            used += entry.json.len();
            if used > budget {
                return Err(Gap::TooMuch);
            }
            missed.push((entry.seq, entry.kind, entry.json.clone()));
        }
        Ok(missed)
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_frames() {
        assert_eq!(NameFrame::parse("alice"), Ok(NameFrame::Bare("alice")));
        assert_eq!(NameFrame::parse("{weird}"), Ok(NameFrame::Bare("{weird}")));
        assert_eq!(NameFrame::parse(r#"{"a":1}"#), Ok(NameFrame::Bare(r#"{"a":1}"#)));
        assert_eq!(
            NameFrame::parse(r#"{"msgType":"Login","name":"bob"}"#),
            Ok(NameFrame::Login { name: "bob".into() })
        );
        let resume = r#"{"msgType":"Resume","name":"bob","token":"t","epoch":"e","seq":7}"#;
        let ask = Ask { name: "bob".into(), token: "t".into(), epoch: "e".into(), seq: 7 };
        assert_eq!(NameFrame::parse(resume), Ok(NameFrame::Resume(ask)));
        assert!(NameFrame::parse(r#"{"msgType":"Login"}"#).is_err());
        assert!(
            NameFrame::parse(r#"{"msgType":"Resume","name":"b","token":"t","epoch":"e","seq":-1}"#)
                .is_err()
        );
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(token_hash(&a).len(), 64);
        assert!(same_hash(&token_hash(&a), &token_hash(&a)));
        assert!(!same_hash(&token_hash(&a), &token_hash(&b)));
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(new_epoch().len(), 16);
    }

    #[test]
    fn the_journal_gives_what_was_missed_or_says_why_not() {
        let mut journal = Journal::default();
        journal.record(1, For::Everyone, Kind::Broadcast, "a");
        journal.record(2, For::Name("bob".into()), Kind::Broadcast, "to bob");
        journal.record(4, For::Name("eve".into()), Kind::Broadcast, "to eve");
        journal.record(5, For::Everyone, Kind::Broadcast, "b");
        let seqs = |r: Result<Vec<(u64, Kind, Rc<str>)>, Gap>| {
            r.map(|v| v.into_iter().map(|(s, _, _)| s).collect::<Vec<_>>())
        };
        assert_eq!(seqs(journal.since(0, 5, "bob", 100)), Ok(vec![1, 2, 5]));
        assert_eq!(seqs(journal.since(2, 5, "bob", 100)), Ok(vec![5]));
        assert_eq!(seqs(journal.since(5, 5, "bob", 100)), Ok(vec![]));
        assert_eq!(seqs(journal.since(6, 5, "bob", 100)), Err(Gap::Ahead));
        assert_eq!(seqs(journal.since(0, 5, "bob", 7)), Err(Gap::TooMuch));
        journal.forget_to(5);
        assert_eq!(seqs(journal.since(4, 5, "bob", 100)), Err(Gap::TooOld));
        assert_eq!(seqs(journal.since(5, 5, "bob", 100)), Ok(vec![]));
        // Past its bounds the oldest go, and positions before them are too old.
        let big = "x".repeat(JOURNAL_BYTES / 2);
        for seq in 6..9 {
            journal.record(seq, For::Everyone, Kind::Broadcast, &big);
        }
        assert!(journal.bytes() <= JOURNAL_BYTES);
        assert_eq!(seqs(journal.since(6, 8, "bob", usize::MAX)), Ok(vec![7, 8]));
        assert_eq!(journal.since(5, 8, "bob", usize::MAX), Err(Gap::TooOld));
    }
}
