//! What the room, the sessions and the cluster's notes ask the event loop to
//! do, as data. They decide; `Server::apply` (server.rs) carries each effect
//! out, in the order asked, and is the only code that touches a socket.

use crate::cluster::Proposed;
use crate::moderation::Action;
use crate::protocol::{ErrorCode, Kind, Rejection, Reply};

/// Identifies a connection; the server uses its slab key.
pub type ConnId = usize;

/// Who receives a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    One(ConnId),
    Many(Vec<ConnId>),
    /// Every local user online at the moment of delivery.
    Everyone,
}

/// One message of room traffic: serialized once, whatever the number of
/// recipients, and framed once by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub to: To,
    pub kind: Kind,
    pub json: String,
    /// The room's position once a recipient has this message: resumable
    /// sessions get it as a first field, `"seq"` (docs/PROTOCOL.md,
    /// "Sequence numbers"); others get `json` as it is.
    pub seq: Option<u64>,
}

impl Outbound {
    pub fn new(to: To, reply: &Reply) -> Self {
        Outbound { to, kind: reply.kind(), json: reply.to_json(), seq: None }
    }

    /// `json` with `"seq"` as its first field.
    pub fn sequenced_json(&self) -> Option<String> {
        let seq = self.seq?;
        let rest = self.json.strip_prefix('{')?;
        Some(format!("{{\"seq\":{seq},{rest}"))
    }
}

/// How a session ends, and so what its connection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A policy ended it: the `Error` (if any), then a Close with `code`.
    Close { code: u16, reason: &'static str, why: Option<Rejection> },
    /// A reader past its output limit: what it had not started is dropped,
    /// and it is told `slow_reader`.
    TooSlow,
    /// The server is shutting down: Close 1001.
    ShutDown,
    /// The connection ended it (the peer closed, or broke the protocol):
    /// the connection is closing already; `why` is for the log.
    /// `dropped`: no goodbye (the link broke, or a Close other than 1000):
    /// a resumable session keeps its place for `resume_grace_secs`.
    Lost { why: String, dropped: bool },
}

/// `Ending::Close` reasons of a link gone quiet rather than a policy: a
/// resumable session keeps its place after them.
pub const IDLE_TIMEOUT: &str = "idle timeout";
pub const MESSAGE_TIMEOUT: &str = "message timeout";

/// What a local connection asks of the cluster (in a cluster only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCall {
    /// Ask Redis for this name; the session logs in when its `Join` comes back.
    /// `token_hash`: a resumable session's (kept on Redis for its resume
    /// on any node).
    Claim { conn: ConnId, name: String, key: String, token_hash: Option<String> },
    /// What the whole room must see in one order: it takes effect when it
    /// comes back from Redis.
    Propose { from: ConnId, what: Proposed },
    /// A local user left: the name is free.
    Release { name_key: String },
    /// Resume the session holding this name if `token_hash` is its token's
    /// (else, the name being free, claim it): the session logs in when the
    /// `Resume` (or `Join`) comes back.
    /// `new_token_hash`: the new session's, if the name is free.
    Resume {
        conn: ConnId,
        name: String,
        key: String,
        token_hash: String,
        new_token_hash: Option<String>,
        /// The room's lock keeps this login out, should the name be free.
        locked_out: bool,
    },
}

/// Something to count for `/metrics` that only a decision knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// A message from a logged-in user, by `msgType` (`None`: refused).
    Received(Option<&'static str>),
    /// A `Resume`, by how it went: `exact`, `reset`, `refused`.
    Resume(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Room traffic to chatting users, within their output limits; a reader
    /// past its limit is cut off (`Ending::TooSlow`).
    Send(Outbound),
    /// An `Error` to one connection, from the reserve above its limit; the
    /// connection stays open.
    Refuse {
        conn: ConnId,
        why: Rejection,
    },
    /// A WebSocket Ping (keep-alive).
    Ping(ConnId),
    /// The user is in the room: messages up to `max_message_bytes` from now
    /// on, and room traffic: `Send`s before this one in the effects are not
    /// for them (decided before they were in the room).
    LoggedIn(ConnId),
    /// End the session on `conn` (any connection, not only the one that
    /// asked): it leaves the room, and its connection closes as `how` says.
    End {
        conn: ConnId,
        how: Ending,
    },
    Cluster(ClusterCall),
    Count(Count),
    /// A moderator's action from the room (the session checked the role
    /// and what moderators may do): carried out in their name as the
    /// owner's `ragnarok ctl` would, or refused (`moderation_refused`).
    Moderate {
        by: ConnId,
        action: Action,
    },
    /// The Autobahn echo endpoint (feature `testing`): this message back to
    /// its sender, as it came (text or binary).
    #[cfg(feature = "testing")]
    Echo {
        conn: ConnId,
        message: tungstenite::Message,
    },
}

/// The effects of one step, in order.
pub type Effects = Vec<Effect>;

/// Shorthands for the decisions that push effects.
pub trait Push {
    fn send(&mut self, to: To, reply: &Reply);
    fn refuse(&mut self, conn: ConnId, why: Rejection);
}

impl Push for Effects {
    fn send(&mut self, to: To, reply: &Reply) {
        self.push(Effect::Send(Outbound::new(to, reply)));
    }

    fn refuse(&mut self, conn: ConnId, why: Rejection) {
        self.push(Effect::Refuse { conn, why });
    }
}

impl Ending {
    /// Close 1008 after this `Error`: a policy refused the client.
    pub fn policy(reason: &'static str, why: Rejection) -> Ending {
        Ending::Close { code: crate::protocol::close_code::POLICY, reason, why: Some(why) }
    }

    /// The `Error` code the client is sent, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Ending::Close { why: Some(why), .. } => Some(why.code),
            Ending::TooSlow => Some(ErrorCode::SlowReader),
            _ => None,
        }
    }

    /// For the log line saying why the user left.
    pub fn reason(&self) -> &str {
        match self {
            Ending::Close { reason, .. } => reason,
            Ending::TooSlow => "too slow",
            Ending::ShutDown => "server shutting down",
            Ending::Lost { why, .. } => why,
        }
    }

    /// Whether a resumable session keeps its place in the room for
    /// `resume_grace_secs` after this ending (docs/PROTOCOL.md, "When the
    /// grace runs"): the link broke or went quiet, not a goodbye or a policy.
    pub fn keeps_place(&self) -> bool {
        match self {
            Ending::Lost { dropped, .. } => *dropped,
            Ending::TooSlow => true,
            Ending::Close { reason, .. } => *reason == IDLE_TIMEOUT || *reason == MESSAGE_TIMEOUT,
            Ending::ShutDown => false,
        }
    }
}
