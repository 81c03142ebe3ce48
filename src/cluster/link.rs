//! The link's state machine without I/O: down → joining → up → down, with
//! backoff. Fed replies, messages, breaks, ticks and the server's calls, it
//! queues `Out`s (commands, connect, disconnect) and `Note`s for the server.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};

use super::event::{Event, KeptRules, LocalUser, Origin, Proposed, RemoteUser};
use super::scripts::{self, Script};
use crate::protocol::{ErrorCode, Rejection};
use crate::ratelimit::LogBudget;
use crate::redis::{Command, ConnError, RedisUrl, Value};

/// A node refreshes its lease this often...
const LEASE_EVERY: Duration = Duration::from_secs(2);
/// ...and is dead to the others once it has not for this long: its users
/// are announced as left within `LEASE_TTL + LEASE_EVERY` (12 s).
const LEASE_TTL: Duration = Duration::from_secs(10);
/// Redis not answering a command for this long means the link is down.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Connecting, subscribing and syncing must be done in this time.
const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// A proposal Redis runs later than this after it was sent is dropped by
/// the script: by then the node may have given up on the link (after
/// `REPLY_TIMEOUT`) and told the sender `cluster_unavailable`.
const PROPOSAL_DEADLINE: Duration = Duration::from_millis(2500);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most bytes queued to Redis before proposals are refused.
const MAX_QUEUED: usize = 16 << 20;
/// Largest event a user may publish: far below what Redis lets a
/// subscriber fall behind by (`client-output-buffer-limit pubsub`, 8 MB
/// for 60 s by default), so that one message cannot get every node cut off.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// A claim of a name this node holds for a connection that has gone is
/// asked again (once a second) this many times.
const CLAIM_RETRIES: u8 = 3;

/// What the link asks of the connections, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// Open both connections (commands, subscription); then call
    /// `connected`, or `broken(LinkError::NoSocket)` if they cannot be.
    Connect,
    /// Close both connections: the link is down.
    Disconnect,
    /// Send on the command connection (its reply comes to `on_reply`).
    Command(Command),
    /// Send on the subscription connection.
    Subscription(Command),
}

/// What the server must act on.
#[derive(Debug)]
pub enum Note {
    /// The room's next event, and its number in the cluster's one order.
    Event(u64, Event),
    /// What `origin` asked was not done, and why (`name_taken` for a
    /// claim, `cluster_unavailable`, `user_offline`, `message_too_big`).
    /// A `ctl` request's origin (`Origin::control`) is no connection.
    Refused { origin: Origin, why: Rejection },
    /// The link is up (again): the room as the cluster has it now.
    /// `conflicts`: comparison keys of local users whose names are
    /// another node's. `rules`: the bans, mutes and lock Redis keeps.
    Synced {
        users: Vec<RemoteUser>,
        history: Vec<(String, String)>,
        conflicts: Vec<String>,
        rules: KeptRules,
        /// Names the room's memory on Redis (new when Redis lost it).
        epoch: String,
        /// The order is whole from this number on.
        seq: u64,
    },
    /// The link broke; it is being mended. Events may have been missed.
    Down { why: LinkError },
}

/// Why the link broke (or could not be made); `Display` is the log line's
/// reason, and what users are told in `messages_lost`.
#[derive(Debug)]
pub enum LinkError {
    /// The command connection failed.
    Commands(ConnError),
    /// The subscription failed.
    Subscription(ConnError),
    NoSocket,
    /// Connecting, subscribing and syncing took longer than `LINK_TIMEOUT`.
    JoinTimeout,
    /// A command went unanswered for `REPLY_TIMEOUT`.
    ReplyTimeout,
    /// This node's sync event did not come back within `LINK_TIMEOUT`.
    MarkerLost,
    ReplyToNothing,
    /// Redis answered a command with an error (not a one-off: not OOM).
    Refused(String),
    DeclaredDead,
    BadSync,
    NotAMessage,
    /// An event after this node's sync event came before it.
    OutOfOrder {
        marker: u64,
    },
    /// Events `first..=last` never came.
    Missed {
        first: u64,
        last: u64,
    },
    /// The room's event count went back (Redis emptied).
    WentBack {
        from: u64,
        to: u64,
    },
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Commands(e) => write!(f, "commands: {e}"),
            LinkError::Subscription(e) => write!(f, "subscription: {e}"),
            LinkError::NoSocket => write!(f, "cannot open a socket to Redis"),
            LinkError::JoinTimeout => {
                write!(f, "Redis did not answer within {} s", LINK_TIMEOUT.as_secs())
            }
            LinkError::ReplyTimeout => {
                write!(f, "Redis did not answer for {} s", REPLY_TIMEOUT.as_secs())
            }
            LinkError::MarkerLost => {
                write!(f, "this node's registration did not come back on the subscription")
            }
            LinkError::ReplyToNothing => write!(f, "Redis sent a reply to nothing"),
            LinkError::Refused(e) => write!(f, "Redis refused: {e}"),
            LinkError::DeclaredDead => write!(f, "the other nodes declared this one dead"),
            LinkError::BadSync => write!(f, "Redis answered the sync with something else"),
            LinkError::NotAMessage => {
                write!(f, "the subscription sent something else than a message")
            }
            LinkError::OutOfOrder { marker } => write!(f, "events after {marker} came before it"),
            LinkError::Missed { first, last } => write!(f, "missed events {first} to {last}"),
            LinkError::WentBack { from, to } => write!(
                f,
                "the room's event count went back from {from} to {to} (Redis was emptied?)"
            ),
        }
    }
}

impl std::error::Error for LinkError {}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterStats {
    pub events: u64,
    pub published: u64,
    pub unavailable: u64,
    pub link_downs: u64,
    pub syncs: u64,
    pub connect_attempts: u64,
    pub dead_nodes: u64,
}

/// What a command's reply answers.
#[derive(Debug)]
enum Pending {
    Load,
    Claim { origin: Origin, key: String, name: String, token: Option<String>, retries: u8 },
    Resume(Origin),
    Say(Origin),
    PublicKey(Origin),
    Private { origin: Origin, target: String },
    Moderate(Origin),
    Leave,
    Lease,
    Sync,
}

impl Pending {
    /// The connection waiting for this reply, if any.
    fn origin(&self) -> Option<Origin> {
        match self {
            Pending::Claim { origin, .. }
            | Pending::Resume(origin)
            | Pending::Say(origin)
            | Pending::PublicKey(origin)
            | Pending::Private { origin, .. }
            | Pending::Moderate(origin) => Some(*origin),
            _ => None,
        }
    }
}

/// Where mending a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joining {
    /// `Out::Connect` asked for, `connected` not called yet.
    Connecting,
    /// SUBSCRIBE sent, not confirmed yet.
    Subscribing,
    /// Subscribed: the server is to hand over its users (`sync`).
    Subscribed,
    /// SYNC sent; its reply makes the link `Up`.
    Syncing,
}

#[derive(Debug)]
enum State {
    Down {
        retry_at: Instant,
    },
    /// Connecting, subscribing, then registering and reading the room
    /// (`sync`); events that arrive meanwhile wait in `early`, users who
    /// leave meanwhile in `left`.
    Joining {
        since: Instant,
        step: Joining,
        early: Vec<(u64, Event)>,
        left: Vec<String>,
    },
    Up {
        lease_due: Instant,
        /// The sequence number of this node's own sync, until it comes
        /// back on the subscription: the events before it are in the
        /// snapshot already (commands and subscription are two connections,
        /// so they may still arrive after the sync's reply).
        marker: Option<(u64, Instant)>,
    },
}

pub struct Link {
    /// Where Redis is, for the log (the password masked).
    redis: String,
    /// This node's id: random, new at every start.
    node: Rc<str>,
    /// Key prefix on Redis: `ragnarok:<cluster_name>:`.
    prefix: String,
    history_size: usize,
    history_bytes: usize,
    state: State,
    backoff: Duration,
    /// The last event applied.
    seq: u64,
    /// One entry per command sent, in order, with when it was sent.
    pending: VecDeque<(Pending, Instant)>,
    /// What the caller is to do, in order.
    out: VecDeque<Out>,
    notes: VecDeque<Note>,
    failures: u32,
    /// Claims Redis granted whose `Join` has not come back yet: refused if
    /// the link breaks first.
    granted: Vec<Origin>,
    /// Claims to send again: the name was this node's, held for a
    /// connection that has gone (its release is on its way).
    retry: Vec<Pending>,
    /// Redis's clock minus ours, in ms (from the last sync).
    clock_offset: i64,
    /// Our clock, in ms since the Unix epoch.
    clock: fn() -> u64,
    /// Bytes waiting on the command connection: what the caller last
    /// counted (`set_backlog`) plus what was queued since.
    backlog: usize,
    /// Commands Redis refused, logged within a budget.
    refused_log: LogBudget,
    stats: ClusterStats,
}

impl Link {
    /// `cluster_name`: nodes with the same Redis and name are one room.
    /// `history`: most broadcasts a joiner is sent, and most bytes of them.
    pub fn new(
        redis: &RedisUrl,
        cluster_name: &str,
        history: (usize, usize),
        now: Instant,
    ) -> Link {
        Link {
            redis: redis.to_string(),
            node: Rc::from(node_id()),
            prefix: format!("ragnarok:{cluster_name}:"),
            history_size: history.0,
            history_bytes: history.1,
            state: State::Down { retry_at: now },
            backoff: BACKOFF_MIN,
            seq: 0,
            pending: VecDeque::new(),
            out: VecDeque::new(),
            notes: VecDeque::new(),
            failures: 0,
            granted: Vec::new(),
            retry: Vec::new(),
            clock_offset: 0,
            clock: unix_millis,
            backlog: 0,
            refused_log: LogBudget::default(),
            stats: ClusterStats::default(),
        }
    }

    pub fn node(&self) -> &Rc<str> {
        &self.node
    }

    /// A reload changed `history_size` or `history_max_bytes`: broadcasts
    /// from now on keep this many on Redis, and the next sync asks for this
    /// much.
    pub fn set_history(&mut self, (size, bytes): (usize, usize)) {
        (self.history_size, self.history_bytes) = (size, bytes);
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// What happened since the last call, in order.
    pub fn take_notes(&mut self) -> VecDeque<Note> {
        std::mem::take(&mut self.notes)
    }

    /// What the caller is to do, in order: take from the front.
    pub fn output(&mut self) -> &mut VecDeque<Out> {
        &mut self.out
    }

    /// Bytes queued on the command connection and not yet written: past
    /// `MAX_QUEUED`, proposals and claims are refused.
    pub fn set_backlog(&mut self, bytes: usize) {
        self.backlog = bytes;
    }

    /// Timers: reconnecting, the lease, retried claims, and Redis not
    /// answering (replies already received must have been fed first).
    pub fn tick(&mut self, now: Instant) {
        if let Some(n) = self.refused_log.unlogged(now) {
            warn!("cluster: Redis refused {n} more commands in the last minute");
        }
        match &mut self.state {
            State::Down { retry_at } if now >= *retry_at => {
                self.stats.connect_attempts += 1;
                self.state = State::Joining {
                    since: now,
                    step: Joining::Connecting,
                    early: Vec::new(),
                    left: Vec::new(),
                };
                self.out.push_back(Out::Connect);
            }
            State::Down { .. } => {}
            State::Joining { since, .. }
                if now.saturating_duration_since(*since) >= LINK_TIMEOUT =>
            {
                self.down(LinkError::JoinTimeout, now);
            }
            State::Joining { .. } => {}
            State::Up { lease_due, marker } => {
                if let Some((_, since)) = marker
                    && now.saturating_duration_since(*since) >= LINK_TIMEOUT
                {
                    return self.down(LinkError::MarkerLost, now);
                }
                if let Some((_, sent)) = self.pending.front()
                    && now.saturating_duration_since(*sent) >= REPLY_TIMEOUT
                {
                    return self.down(LinkError::ReplyTimeout, now);
                }
                if now >= *lease_due {
                    *lease_due = now + LEASE_EVERY;
                    let command = scripts::lease(&self.prefix, &self.node, LEASE_TTL.as_millis());
                    self.eval(command, Pending::Lease, now);
                }
                for claim in std::mem::take(&mut self.retry) {
                    if let Pending::Claim { origin, key, name, token, retries } = claim {
                        self.send_claim(origin, &key, &name, token, retries, now);
                    }
                }
            }
        }
    }

    /// Both connections are open (or opening: commands may be queued).
    pub fn connected(&mut self, now: Instant) {
        let State::Joining { step: step @ Joining::Connecting, .. } = &mut self.state else {
            return;
        };
        *step = Joining::Subscribing;
        for script in Script::ALL {
            self.eval(scripts::load(script), Pending::Load, now);
        }
        self.out.push_back(Out::Subscription(scripts::subscribe(&self.prefix)));
    }

    /// A connection failed (or could not be opened).
    pub fn broken(&mut self, why: LinkError, now: Instant) {
        if !matches!(self.state, State::Down { .. }) {
            self.down(why, now);
        }
    }

    /// A reply on the command connection, to the oldest command unanswered.
    pub fn on_reply(&mut self, reply: Value, now: Instant) {
        let result = match self.pending.pop_front() {
            Some((pending, _)) => self.answered(pending, reply, now),
            None => Err(LinkError::ReplyToNothing),
        };
        self.check(result, now);
    }

    /// A message pushed on the subscription.
    pub fn on_message(&mut self, message: Value, now: Instant) {
        let result = self.pushed(message);
        self.check(result, now);
    }

    /// Waiting to send the node's users: the server answers with `sync`.
    pub fn wants_sync(&self) -> bool {
        matches!(&self.state, State::Joining { step: Joining::Subscribed, .. })
    }

    /// Registers this node's users and asks for the room as it is.
    pub fn sync(&mut self, users: &[LocalUser], now: Instant) {
        let State::Joining { step: step @ Joining::Subscribed, .. } = &mut self.state else {
            return;
        };
        *step = Joining::Syncing;
        let history = (self.history_size, self.history_bytes);
        // The epoch Redis takes if it has none (new, or emptied): a new one
        // every time, so that a Redis emptied and filled again by this same
        // node does not name its new memory as the old.
        let epoch = crate::resume::new_epoch();
        // (And the last number this node's users were given: a Redis that
        // lost the count starts again above it, never at what they saw.)
        let at = (epoch.as_str(), self.seq);
        let command =
            scripts::sync(&self.prefix, &self.node, LEASE_TTL.as_millis(), history, at, users);
        self.eval(command, Pending::Sync, now);
    }

    /// Asks for `name` for `origin`: `Event::Join` when it is ours,
    /// `Note::Refused` when not.
    /// `token`: a resumable session's token hash, kept on Redis.
    pub fn claim(
        &mut self,
        origin: Origin,
        key: &str,
        name: &str,
        token: Option<String>,
        now: Instant,
    ) {
        self.send_claim(origin, key, name, token, 0, now);
    }

    /// Asks for the session under `name` for `origin`, if `token_hash` is
    /// its token's: `Event::Resume` when it is ours, `Event::Join` when
    /// the name was free (claimed with `new_token`), `Note::Refused`
    /// (`resume_refused`) when held with another token, or `room_locked`
    /// when free while the room is locked (`locked_out`: a member's).
    pub fn resume(
        &mut self,
        origin: Origin,
        (key, name): (&str, &str),
        token_hash: &str,
        (new_token, locked_out): (Option<&str>, bool),
        now: Instant,
    ) {
        if !self.can_send() {
            return self.refuse(origin, Rejection::cluster_unavailable());
        }
        let (node, conn) = (self.node.to_string(), origin.to_conn());
        let (key_of, name_of) = (key.to_owned(), name.to_owned());
        let resumed = Event::Resume {
            node: node.clone(),
            conn: conn.clone(),
            key: key_of.clone(),
            name: name_of.clone(),
        };
        let joined = Event::Join { node, conn, key: key_of, name: name_of };
        let command = scripts::resume(
            &self.prefix,
            &self.node,
            key,
            name,
            token_hash,
            new_token,
            locked_out,
            resumed.to_json(),
            joined.to_json(),
        );
        self.eval(command, Pending::Resume(origin), now);
    }

    /// A local user left (or a claim came back for a connection that is
    /// gone): the name is free. While the link is down there is nothing to
    /// do (the next `sync` leaves the user out); while it is being mended,
    /// the user is released once it is.
    pub fn leave(&mut self, key: &str, now: Instant) {
        match &mut self.state {
            State::Up { .. } => {}
            State::Joining { left, .. } => return left.push(key.into()),
            State::Down { .. } => return,
        }
        let event = Event::Leave { node: self.node.to_string(), key: key.into() };
        let command = scripts::leave(&self.prefix, &self.node, key, event.to_json());
        self.eval(command, Pending::Leave, now);
    }

    /// Publishes what a local user (or `ctl`) asked; it takes effect on every node
    /// (this one too) when it comes back as an event. Redis drops it if it
    /// arrives after the moment this node would have given up on it (so a
    /// message refused with `cluster_unavailable` is never sent later).
    pub fn propose(&mut self, origin: Origin, what: Proposed, now: Instant) {
        if !self.can_send() {
            return self.refuse(origin, Rejection::cluster_unavailable());
        }
        let deadline =
            (self.clock)() as i64 + self.clock_offset + PROPOSAL_DEADLINE.as_millis() as i64;
        let (prefix, node) = (&self.prefix, &self.node);
        let (command, pending) = match what {
            Proposed::Say { name, text } => {
                let json = Event::Say { name: name.to_string(), text }.to_json();
                if json.len() > MAX_EVENT_BYTES {
                    return self.refuse_too_big(origin);
                }
                (scripts::say(prefix, deadline, self.history_size, json), Pending::Say(origin))
            }
            Proposed::PublicKey { name_key, key } => {
                let (node_id, key_of) = (node.to_string(), name_key.to_string());
                let json = Event::PublicKey { node: node_id, key: key_of, pk: key.clone() };
                let json = json.to_json();
                if json.len() > MAX_EVENT_BYTES {
                    return self.refuse_too_big(origin);
                }
                let command = scripts::public_key(prefix, deadline, node, &name_key, key, json);
                (command, Pending::PublicKey(origin))
            }
            Proposed::Private { to_key, to_name, from, text } => {
                let (to, from) = (to_key.to_string(), from.to_string());
                let json = Event::Private { to, from, text }.to_json();
                if json.len() > MAX_EVENT_BYTES {
                    return self.refuse_too_big(origin);
                }
                let target = to_name.to_string();
                let command = scripts::private(prefix, deadline, &to_key, json);
                (command, Pending::Private { origin, target })
            }
            Proposed::Moderate { by, at, action, kept } => {
                let conn = origin.to_conn();
                let json = Event::Moderate { node: node.to_string(), conn, by, at, action };
                let json = json.to_json();
                if json.len() > MAX_EVENT_BYTES {
                    return self.refuse_too_big(origin);
                }
                (scripts::moderate(prefix, deadline, &kept, json), Pending::Moderate(origin))
            }
        };
        self.eval(command, pending, now);
        self.stats.published += 1;
    }

    fn refuse_too_big(&mut self, origin: Origin) {
        let text = format!(
            "in this room (several servers) a message may have at most {} KiB",
            MAX_EVENT_BYTES / 1024
        );
        self.refuse(origin, Rejection::new(ErrorCode::MessageTooBig, text));
    }

    fn send_claim(
        &mut self,
        origin: Origin,
        key: &str,
        name: &str,
        token: Option<String>,
        retries: u8,
        now: Instant,
    ) {
        if !self.can_send() {
            return self.refuse(origin, Rejection::cluster_unavailable());
        }
        let event = Event::Join {
            node: self.node.to_string(),
            conn: origin.to_conn(),
            key: key.into(),
            name: name.into(),
        };
        let command =
            scripts::claim(&self.prefix, &self.node, key, name, event.to_json(), token.as_deref());
        let pending = Pending::Claim { origin, key: key.into(), name: name.into(), token, retries };
        self.eval(command, pending, now);
    }

    fn can_send(&self) -> bool {
        matches!(self.state, State::Up { .. }) && self.backlog < MAX_QUEUED
    }

    fn refuse(&mut self, origin: Origin, why: Rejection) {
        if why.code == ErrorCode::ClusterUnavailable {
            self.stats.unavailable += 1;
        }
        self.notes.push_back(Note::Refused { origin, why });
    }

    /// Queues `command` on the command connection, its reply to be taken
    /// as `pending`; nothing while the link is down.
    fn eval(&mut self, command: Command, pending: Pending, now: Instant) {
        if matches!(self.state, State::Down { .. }) {
            return;
        }
        self.backlog += command.encoded_len();
        self.out.push_back(Out::Command(command));
        self.pending.push_back((pending, now));
    }

    /// Breaks the link when `result` says so.
    fn check(&mut self, result: Result<(), LinkError>, now: Instant) {
        if let Err(why) = result {
            self.down(why, now);
        }
    }

    /// Breaks the link: what was asked and not done is refused, the server
    /// is told, and a reconnect is scheduled.
    fn down(&mut self, why: LinkError, now: Instant) {
        let was = std::mem::replace(&mut self.state, State::Down { retry_at: now + self.backoff });
        let was_up = matches!(was, State::Up { .. });
        if !matches!(was, State::Down { .. }) {
            self.out.push_back(Out::Disconnect);
        }
        let mut waiting: Vec<Origin> = std::mem::take(&mut self.granted);
        waiting.extend(std::mem::take(&mut self.retry).iter().filter_map(Pending::origin));
        waiting.extend(self.pending.drain(..).filter_map(|(p, _)| p.origin()));
        self.backlog = 0;
        for origin in waiting {
            self.refuse(origin, Rejection::cluster_unavailable());
        }
        if was_up {
            self.stats.link_downs += 1;
            self.failures = 0;
            warn!("cluster: lost the link to {} ({why}); reconnecting", self.redis);
            self.notes.push_back(Note::Down { why });
        } else {
            self.failures += 1;
            // Every failure until the backoff is at its longest, then one a minute.
            let per_minute = (60 / BACKOFF_MAX.as_secs().max(1)) as u32;
            if self.backoff < BACKOFF_MAX || self.failures % per_minute == 1 {
                warn!(
                    "cluster: cannot reach {} ({why}); retrying in {} ms ({} attempts)",
                    self.redis,
                    self.backoff.as_millis(),
                    self.failures
                );
            }
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn answered(&mut self, pending: Pending, reply: Value, now: Instant) -> Result<(), LinkError> {
        if let Value::Error(e) = &reply {
            // Out of memory, say: that one command is refused. Anything
            // else (scripts flushed, a Redis that cannot run them) is mended
            // by reconnecting, which loads the scripts again.
            if self.refused_log.allow(now) {
                warn!("cluster: Redis refused a command: {e}");
            }
            if let Some(origin) = pending.origin() {
                self.refuse(origin, Rejection::cluster_unavailable());
            }
            let one_off = e.starts_with("OOM") || e.contains("maxmemory");
            return match pending {
                Pending::Sync | Pending::Lease | Pending::Load => {
                    Err(LinkError::Refused(e.clone()))
                }
                _ if one_off => Ok(()),
                _ => Err(LinkError::Refused(e.clone())),
            };
        }
        match pending {
            Pending::Load | Pending::Leave => {}
            Pending::Resume(origin) => match reply {
                Value::Int(0) => {
                    let why = "that name is held by a session whose token is not this one";
                    self.refuse(origin, Rejection::new(ErrorCode::ResumeRefused, why));
                }
                Value::Int(3) => {
                    let why = "the room is locked: no new logins for now";
                    self.refuse(origin, Rejection::new(ErrorCode::RoomLocked, why));
                }
                _ => self.granted.push(origin),
            },
            Pending::Claim { origin, key, name, token, retries } => match reply {
                Value::Array(parts) => {
                    let holder = match parts.first() {
                        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                        _ => name.clone(),
                    };
                    let mine = parts.get(1) == Some(&Value::Int(1));
                    if mine && retries < CLAIM_RETRIES {
                        // Held here for a connection that has gone: its
                        // release is queued; ask again after it.
                        let retries = retries + 1;
                        self.retry.push(Pending::Claim { origin, key, name, token, retries });
                    } else {
                        let text = format!(
                            "the name {name:?} is taken: {holder:?} is online in this room"
                        );
                        self.refuse(origin, Rejection::new(ErrorCode::NameTaken, text));
                    }
                }
                _ => self.granted.push(origin),
            },
            Pending::Say(origin)
            | Pending::PublicKey(origin)
            | Pending::Private { origin, .. }
            | Pending::Moderate(origin)
                if reply == Value::Int(-1) =>
            {
                if self.refused_log.allow(now) {
                    warn!(
                        "cluster: a message reached Redis after its deadline: dropped, its sender told"
                    );
                }
                self.refuse(origin, Rejection::cluster_unavailable());
            }
            Pending::Say(_) | Pending::PublicKey(_) | Pending::Moderate(_) => {}
            Pending::Private { origin, target } => {
                if reply == Value::Int(0) {
                    self.refuse(origin, Rejection::user_offline(&target));
                }
            }
            Pending::Lease => {
                if reply == Value::Int(1) {
                    return Err(LinkError::DeclaredDead);
                }
            }
            Pending::Sync => self.synced(reply, now)?,
        }
        Ok(())
    }

    fn synced(&mut self, reply: Value, now: Instant) -> Result<(), LinkError> {
        let Value::Array(parts) = reply else { return Err(LinkError::BadSync) };
        let [
            Value::Int(seq),
            Value::Array(conflicts),
            Value::Array(users),
            Value::Array(keys),
            Value::Array(history),
            Value::Int(redis_ms),
            Value::Array(bans),
            Value::Array(mutes),
            Value::Int(locked),
            Value::Bytes(epoch),
        ] = &parts[..]
        else {
            return Err(LinkError::BadSync);
        };
        let State::Joining { .. } = self.state else { return Err(LinkError::BadSync) };
        self.clock_offset = redis_ms - (self.clock)() as i64;
        let text = |v: &Value| match v {
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        let keys: HashMap<String, String> =
            keys.chunks(2).filter_map(|kv| Some((text(kv.first()?), text(kv.get(1)?)))).collect();
        let mut remote = Vec::new();
        for kv in users.chunks(2) {
            let (Some(key), Some(value)) = (kv.first(), kv.get(1)) else { continue };
            let (key, value) = (text(key), text(value));
            let Some((node, name)) = value.split_once('\n') else { continue };
            if node != &*self.node {
                let key = keys.get(&key).cloned();
                remote.push(RemoteUser { node: Rc::from(node), name: name.to_owned(), key });
            }
        }
        let history = history
            .iter()
            .filter_map(|h| match serde_json::from_str(&text(h)) {
                Ok(Event::Say { name, text }) => Some((name, text)),
                _ => None,
            })
            .collect();
        let conflicts = conflicts.iter().map(text).collect();
        // HGETALLs: field, value, field, value...
        let pairs = |list: &[Value]| -> Vec<(String, String)> {
            list.chunks(2).filter_map(|kv| Some((text(kv.first()?), text(kv.get(1)?)))).collect()
        };
        let rules = KeptRules {
            bans: pairs(bans).into_iter().map(|(_, ban)| ban).collect(),
            mutes: pairs(mutes),
            locked: *locked == 1,
        };
        let seq = *seq as u64;
        let up = State::Up { lease_due: now + LEASE_EVERY, marker: Some((seq, now)) };
        let State::Joining { early, left, .. } = std::mem::replace(&mut self.state, up) else {
            return Err(LinkError::BadSync);
        };
        self.seq = seq;
        self.stats.syncs += 1;
        self.backoff = BACKOFF_MIN;
        self.failures = 0;
        info!(
            "cluster: joined {} as node {} ({} users on other nodes)",
            self.redis,
            self.node,
            remote.len()
        );
        let epoch = String::from_utf8_lossy(epoch).into_owned();
        self.notes.push_back(Note::Synced { users: remote, history, conflicts, rules, epoch, seq });
        for key in left {
            self.leave(&key, now);
        }
        for (seq, event) in early {
            self.on_event(seq, event)?;
        }
        Ok(())
    }

    fn pushed(&mut self, message: Value) -> Result<(), LinkError> {
        let Value::Array(parts) = message else { return Err(LinkError::NotAMessage) };
        match parts.first() {
            Some(Value::Bytes(kind)) if kind == b"message" => {}
            Some(Value::Bytes(kind)) if kind == b"subscribe" => {
                if let State::Joining { step: step @ Joining::Subscribing, .. } = &mut self.state {
                    *step = Joining::Subscribed;
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        let Some(Value::Bytes(payload)) = parts.get(2) else { return Ok(()) };
        let Some((seq, event)) = Event::parse_published(&String::from_utf8_lossy(payload)) else {
            // From a newer version, or not ours: the order is still whole.
            warn!("cluster: ignored an event this node does not understand");
            return Ok(());
        };
        match &mut self.state {
            State::Joining { early, .. } => {
                early.push((seq, event));
                Ok(())
            }
            _ => self.on_event(seq, event),
        }
    }

    /// The next event of the room's order; a gap, or the order starting
    /// over (Redis flushed), breaks the link so that the room is read again.
    fn on_event(&mut self, seq: u64, event: Event) -> Result<(), LinkError> {
        if let State::Up { marker, .. } = &mut self.state
            && let Some((at, _)) = *marker
        {
            return match seq.cmp(&at) {
                std::cmp::Ordering::Less => Ok(()), // in the snapshot
                std::cmp::Ordering::Equal => {
                    *marker = None;
                    Ok(())
                }
                std::cmp::Ordering::Greater => Err(LinkError::OutOfOrder { marker: at }),
            };
        }
        if seq != self.seq + 1 {
            return Err(if seq > self.seq {
                LinkError::Missed { first: self.seq + 1, last: seq - 1 }
            } else {
                LinkError::WentBack { from: self.seq, to: seq }
            });
        }
        self.seq = seq;
        self.stats.events += 1;
        match &event {
            Event::Dead { node } if *node == *self.node => return Err(LinkError::DeclaredDead),
            Event::Dead { .. } => self.stats.dead_nodes += 1,
            Event::Join { node, conn, .. } | Event::Resume { node, conn, .. }
                if *node == *self.node =>
            {
                if let Some(origin) = Origin::parse(conn) {
                    self.granted.retain(|o| *o != origin);
                }
            }
            _ => {}
        }
        self.notes.push_back(Note::Event(seq, event));
        Ok(())
    }
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// 16 random hex digits.
fn node_id() -> String {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let seed = unix_millis() ^ u64::from(std::process::id()).rotate_left(32);
        bytes = seed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
