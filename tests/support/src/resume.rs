//! A client that opts in to resuming (docs/PROTOCOL.md, "Resuming after a
//! dropped connection"): it logs in with `{"msgType":"Login","name":..}`,
//! keeps the token, the epoch and the highest `seq` it has read, and comes
//! back with `{"msgType":"Resume",..}`. Built on [`Client`]; every read has
//! the client's timeout ([`TIMEOUT`]).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use crate::{Client, TIMEOUT, TestServer};

/// What a client keeps to resume: its name, the token and epoch of the
/// last welcome (or `Resumed`), and the highest `seq` it has read.
#[derive(Clone, Debug, PartialEq)]
pub struct Ticket {
    pub name: String,
    pub token: String,
    pub epoch: String,
    pub seq: u64,
}

impl Ticket {
    /// From a welcome's or a `Resumed`'s `resume` object.
    pub fn from_answer(name: &str, answer: &Value) -> Self {
        let resume = &answer["resume"];
        let field = |key: &str| {
            resume[key]
                .as_str()
                .unwrap_or_else(|| panic!("no resume.{key} string in {answer}"))
                .to_owned()
        };
        Ticket {
            name: name.to_owned(),
            token: field("token"),
            epoch: field("epoch"),
            seq: resume["seq"].as_u64().unwrap_or_else(|| panic!("no resume.seq in {answer}")),
        }
    }

    /// The `Resume` name frame.
    pub fn resume_frame(&self) -> Value {
        json!({
            "msgType": "Resume",
            "name": self.name,
            "token": self.token,
            "epoch": self.epoch,
            "seq": self.seq,
        })
    }

    /// The same ticket with another token (a guess, a stolen one).
    pub fn with_token(&self, token: &str) -> Self {
        Ticket { token: token.to_owned(), ..self.clone() }
    }
}

/// A random-looking token of the right shape (43 base64url characters)
/// that no server gave: `n` makes each one different.
/// `answer` is a `Resumed` reset (with its reason).
pub fn assert_reset(answer: &Value) {
    assert_eq!(answer["msgType"], "Resumed", "{answer}");
    assert_eq!(answer["reset"], true, "{answer}");
    assert!(answer["why"].is_string(), "{answer}");
}

/// `answer` resumes `ticket`'s session exactly: its token, epoch and
/// position echoed, no reset.
pub fn assert_exact(answer: &Value, ticket: &Ticket) {
    assert_eq!(answer["msgType"], "Resumed", "{answer}");
    assert!(answer.get("reset").is_none_or(|r| r == false), "{answer}");
    assert_eq!(answer["resume"]["token"], ticket.token.as_str(), "{answer}");
    assert_eq!(answer["resume"]["epoch"], ticket.epoch.as_str(), "{answer}");
    assert_eq!(answer["resume"]["seq"], ticket.seq, "{answer}");
}

pub fn forged_token(n: u32) -> String {
    format!("{n:0>10}{}", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456-_")[..43].to_owned()
}

/// A message's `seq`, if it has one.
pub fn seq_of(m: &Value) -> Option<u64> {
    m.get("seq").map(|s| s.as_u64().unwrap_or_else(|| panic!("seq not a number in {m}")))
}

/// The message without its `seq`.
pub fn without_seq(m: &Value) -> Value {
    let mut m = m.clone();
    if let Some(object) = m.as_object_mut() {
        object.remove("seq");
    }
    m
}

/// A logged-in client that opted in to resuming.
pub struct Resumable {
    pub client: Client,
    pub ticket: Ticket,
    /// Every message read, in order (for failure reports and checks).
    pub seen: Vec<Value>,
}

impl Resumable {
    /// Wraps a client whose answer (a welcome with `resume`, or `Resumed`)
    /// has been read.
    pub fn new(name: &str, client: Client, answer: &Value) -> Self {
        Resumable { client, ticket: Ticket::from_answer(name, answer), seen: Vec::new() }
    }

    pub fn send(&mut self, value: Value) {
        self.client.send_json(value);
    }

    /// The next JSON message within `wait`, None if none came. The highest
    /// `seq` is kept. Panics if the connection ends.
    pub fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let tcp = self.client.ws.get_mut().tcp();
            tcp.set_read_timeout(Some(left)).unwrap();
            let read = self.client.ws.read();
            let _ = self.client.ws.get_mut().tcp().set_read_timeout(Some(TIMEOUT));
            match read {
                Ok(Message::Text(text)) => {
                    let m: Value = serde_json::from_str(&text).expect("JSON");
                    if let Some(seq) = seq_of(&m) {
                        self.ticket.seq = self.ticket.seq.max(seq);
                    }
                    self.seen.push(m.clone());
                    return Some(m);
                }
                Ok(Message::Close(frame)) => {
                    let _ = self.client.ws.flush();
                    panic!("{}: closed ({frame:?}); read: {}", self.ticket.name, self.recent());
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return None;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: {e}; read: {}", self.ticket.name, self.recent()),
            }
        }
    }

    /// The next JSON message, within [`TIMEOUT`].
    pub fn recv(&mut self) -> Value {
        self.try_recv(TIMEOUT).unwrap_or_else(|| {
            panic!("{}: nothing within {TIMEOUT:?}; read: {}", self.ticket.name, self.recent())
        })
    }

    /// Reads until a message for which `wanted` is true (within
    /// [`TIMEOUT`]); returns every message read, that one last.
    pub fn recv_until(&mut self, what: &str, mut wanted: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + TIMEOUT;
        let mut read = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_recv(left) {
                Some(m) => {
                    let done = wanted(&m);
                    read.push(m);
                    if done {
                        return read;
                    }
                }
                None => panic!(
                    "{}: no {what} within {TIMEOUT:?}; read meanwhile: {read:?}",
                    self.ticket.name
                ),
            }
        }
    }

    /// Skips messages until one with this `msgType`.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        self.recv_until(kind, |m| m["msgType"] == kind).pop().unwrap()
    }

    /// The last messages read, for failure reports.
    pub fn recent(&self) -> String {
        let from = self.seen.len().saturating_sub(20);
        format!("{:?}", &self.seen[from..])
    }
}

impl TestServer {
    /// Sends the password and a `Login` name frame on `client`; reads the
    /// welcome (which must carry `resume`) and the `OnlineUsers` after it.
    pub fn log_in_resumable(&self, mut client: Client, name: &str) -> Resumable {
        client.send_text(&self.password);
        client.send_json(json!({"msgType": "Login", "name": name}));
        let welcome = client.recv_json();
        assert_eq!(welcome["ServerName"], "Test Room", "{welcome}");
        assert!(welcome["resume"].is_object(), "no resume in the welcome {welcome}");
        let mut session = Resumable::new(name, client, &welcome);
        let users = session.recv();
        assert_eq!(users["msgType"], "OnlineUsers", "{users}");
        session
    }

    /// A resumable login over a direct connection.
    pub fn login_resumable(&self, name: &str) -> Resumable {
        self.log_in_resumable(self.connect(), name)
    }

    /// A resumable login over a connection to `via` (a [`crate::Relay`]).
    pub fn login_resumable_via(&self, via: SocketAddr, name: &str) -> Resumable {
        self.log_in_resumable(self.connect_via(via), name)
    }

    /// Sends the password and `ticket`'s `Resume` frame on `client`;
    /// returns the client and the first answer (`Resumed`, or an `Error`).
    pub fn send_resume(&self, mut client: Client, ticket: &Ticket) -> (Client, Value) {
        client.send_text(&self.password);
        client.send_json(ticket.resume_frame());
        let answer = client.recv_json();
        (client, answer)
    }

    /// Resumes `ticket` on `client`: the answer must be `Resumed` (exact or
    /// a reset). Returns it and the session, which goes on with the
    /// answer's token and epoch, and the `seq` the answer gives.
    pub fn resume(&self, client: Client, ticket: &Ticket) -> (Value, Resumable) {
        let (client, answer) = self.send_resume(client, ticket);
        assert_eq!(answer["msgType"], "Resumed", "resume of {ticket:?}: {answer}");
        assert_eq!(answer["ServerName"], "Test Room", "{answer}");
        let session = Resumable::new(&ticket.name, client, &answer);
        (answer, session)
    }
}
