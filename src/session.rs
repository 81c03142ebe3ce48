//! The chat policy of one connection, free of I/O: logging in (password,
//! then name), then chatting under the rate limit and the keep-alive. It
//! turns messages into room calls and tells the connection what to do.

use std::time::Instant;

use log::{info, warn};
use tungstenite::Message;

use crate::addresses::{Addresses, Peer};
use crate::config::Limits;
use crate::connection::close_code;
use crate::metrics::Stats;
use crate::protocol::{ErrorCode, Rejection, Request, parse_request};
use crate::ratelimit::{LogBudget, TokenBucket, Verdict};
use crate::room::{ConnId, Outbound, Room};

/// What a session hands back to the event loop for its connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Send this `Error`; the connection stays open.
    Refuse(Rejection),
    /// Send a WebSocket Ping.
    Ping,
    /// The user is in the room: full-size messages from now on.
    LoggedIn,
    /// Claim this name on the cluster (`Session::claimed` when it is ours).
    Claim {
        name: String,
        key: String,
    },
    /// Send the `Error` (if any) and a Close with `code`; the session is over.
    Close {
        code: u16,
        reason: &'static str,
        why: Option<Rejection>,
    },
}

impl Action {
    /// Close 1008 after this `Error`: a policy refused the client.
    fn policy(reason: &'static str, why: Rejection) -> Action {
        Action::Close { code: close_code::POLICY, reason, why: Some(why) }
    }
}

/// What a session may touch besides itself.
pub struct Cx<'a> {
    pub room: &'a mut Room,
    pub out: &'a mut Vec<Outbound>,
    pub addresses: &'a mut Addresses,
    pub stats: &'a mut Stats,
    pub limits: &'a Limits,
    pub id: ConnId,
    /// The client's address, for the log and the per-address limits.
    pub peer: Peer,
    pub now: Instant,
}

#[derive(Debug)]
enum Phase {
    /// TLS and HTTP handshake: no WebSocket yet.
    Connecting,
    AwaitingPassword {
        since: Instant,
    },
    AwaitingName {
        since: Instant,
    },
    /// In a cluster: the name was asked of Redis, the answer is awaited.
    Claiming {
        since: Instant,
    },
    Chatting {
        ping_sent: Option<Instant>,
    },
    /// Logged out or refused; the connection is closing.
    Ended,
}

#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// Every message costs a token (none when rate limiting is off).
    bucket: Option<TokenBucket>,
    refusals: RefusalLog,
}

impl Session {
    pub fn new() -> Self {
        Session { phase: Phase::Connecting, bucket: None, refusals: RefusalLog::default() }
    }

    pub fn is_chatting(&self) -> bool {
        matches!(self.phase, Phase::Chatting { .. })
    }

    /// Not logged in yet (and not ended): counts as a handshake of its address.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting
                | Phase::AwaitingPassword { .. }
                | Phase::AwaitingName { .. }
                | Phase::Claiming { .. }
        )
    }

    /// The WebSocket opened: the login clock starts.
    pub fn opened(&mut self, now: Instant) {
        self.phase = Phase::AwaitingPassword { since: now };
    }

    /// Ends the session; `true` if it had not logged in.
    pub fn end(&mut self) -> bool {
        let unauthenticated = self.is_unauthenticated();
        self.phase = Phase::Ended;
        unauthenticated
    }

    pub fn on_message(&mut self, message: Message, cx: &mut Cx) -> Action {
        if let Phase::Chatting { ping_sent } = &mut self.phase {
            *ping_sent = None;
        }
        let data = matches!(message, Message::Text(_) | Message::Binary(_));
        match self.bucket.as_mut().map_or(Verdict::Allow, |b| b.take(cx.now)) {
            Verdict::Allow => {}
            Verdict::Refuse if data => {
                let why = Rejection::new(
                    ErrorCode::RateLimited,
                    "too many messages: this one was not delivered; slow down",
                );
                return self.refuse(why, cx);
            }
            Verdict::Refuse => return Action::Nothing,
            Verdict::Flood => {
                warn!("{}: flooding past the rate limit, disconnecting", cx.peer);
                let why = Rejection::new(
                    ErrorCode::RateLimited,
                    "kept flooding past the rate limit: disconnected",
                );
                return Action::policy("rate limit exceeded", why);
            }
        }
        match (message, &self.phase) {
            (Message::Text(text), Phase::AwaitingPassword { since }) => {
                let since = *since;
                self.on_password(strip_line_end(&text), since, cx)
            }
            (Message::Text(text), Phase::AwaitingName { since }) => {
                let name = strip_line_end(&text);
                if !cx.room.is_clustered() {
                    return self.join(name, cx);
                }
                match cx.room.check_name(name) {
                    Err(why) => refused_login(why, cx),
                    Ok(_) if !cx.room.is_up() => self.refuse(Rejection::cluster_unavailable(), cx),
                    Ok(checked) => {
                        self.phase = Phase::Claiming { since: *since };
                        Action::Claim { name: checked.display, key: checked.key }
                    }
                }
            }
            (Message::Text(text), Phase::Chatting { .. }) => match parse_request(&text) {
                Ok(request) => {
                    Stats::count(&mut cx.stats.received, request.kind(), 1);
                    if let (Request::OnlineUsers, Some(bucket)) = (&request, &mut self.bucket) {
                        // The list of a large room is up to 128 KiB: it costs
                        // a token per 256 users, up to a whole burst.
                        let extra = (cx.room.len() / 256) as u32;
                        bucket.charge(extra.min(bucket.burst()));
                    }
                    cx.room.handle(cx.id, request, cx.out);
                    Action::Nothing
                }
                Err(why) => self.refuse(why, cx),
            },
            (Message::Binary(_), Phase::Chatting { .. }) => self.refuse(
                Rejection::new(
                    ErrorCode::BinaryUnsupported,
                    "binary frames are not supported: send JSON in text frames",
                ),
                cx,
            ),
            (
                Message::Binary(_),
                Phase::AwaitingPassword { .. }
                | Phase::AwaitingName { .. }
                | Phase::Claiming { .. },
            ) => {
                let why = Rejection::new(
                    ErrorCode::BinaryUnsupported,
                    "log in with two text frames: the password, then the username",
                );
                Action::Close {
                    code: close_code::UNSUPPORTED_DATA,
                    reason: "text frames only",
                    why: Some(why),
                }
            }
            _ => Action::Nothing,
        }
    }

    /// The cluster gave us the name asked for in `Action::Claim`.
    pub fn claimed(&mut self, name: &str, cx: &mut Cx) -> Action {
        match self.phase {
            Phase::Claiming { .. } => self.join(name, cx),
            _ => Action::Nothing,
        }
    }

    /// The cluster refused the claim (`name_taken`) or could not be asked.
    pub fn claim_failed(&mut self, why: Rejection, cx: &mut Cx) -> Action {
        let Phase::Claiming { since } = self.phase else {
            return Action::Nothing;
        };
        if why.code == ErrorCode::NameTaken {
            return refused_login(why, cx);
        }
        self.phase = Phase::AwaitingName { since };
        self.refuse(why, cx)
    }

    /// Whether an `Action::Claim` is awaiting its answer.
    pub fn is_claiming(&self) -> bool {
        matches!(self.phase, Phase::Claiming { .. })
    }

    fn join(&mut self, name: &str, cx: &mut Cx) -> Action {
        match cx.room.join(cx.id, name) {
            Ok(()) => {
                info!("{}: {name:?} logged in ({} online)", cx.peer, cx.room.len());
                self.phase = Phase::Chatting { ping_sent: None };
                self.bucket = (cx.limits.rate_limit_per_sec > 0).then(|| {
                    let l = cx.limits;
                    TokenBucket::new(l.rate_limit_per_sec, l.rate_limit_burst, cx.now)
                });
                Action::LoggedIn
            }
            Err(why) => refused_login(why, cx),
        }
    }

    fn on_password(&mut self, given: &str, since: Instant, cx: &mut Cx) -> Action {
        let ip = cx.peer.ip;
        if !cx.addresses.may_try_password(ip, cx.now) {
            info!("{}: too many wrong passwords from this address, refused unchecked", cx.peer);
            let why = Rejection::new(
                ErrorCode::TooManyAttempts,
                "too many wrong passwords from your address: wait a minute and try again",
            );
            return Action::policy("too many attempts", why);
        }
        if cx.room.check_password(given) {
            self.phase = Phase::AwaitingName { since };
            return Action::Nothing;
        }
        cx.addresses.wrong_password(ip, cx.now);
        info!("{}: wrong password", cx.peer);
        let why = Rejection::new(ErrorCode::WrongPassword, "wrong password");
        Action::policy("wrong password", why)
    }

    fn refuse(&mut self, why: Rejection, cx: &mut Cx) -> Action {
        Stats::count(&mut cx.stats.received, "refused", 1);
        self.refusals.note(cx.peer, why.code, cx.now);
        Action::Refuse(why)
    }

    /// Timers, about once a second: the login deadline and keep-alive pings.
    pub fn tick(
        &mut self,
        last_heard: Instant,
        peer: Peer,
        limits: &Limits,
        now: Instant,
    ) -> Action {
        self.refusals.tick(peer, now);
        match &mut self.phase {
            Phase::AwaitingPassword { since }
            | Phase::AwaitingName { since }
            | Phase::Claiming { since }
                if now.saturating_duration_since(*since) >= limits.login_timeout =>
            {
                info!("{peer}: login timeout");
                let why = Rejection::new(ErrorCode::LoginTimeout, "login took too long");
                Action::policy("login timeout", why)
            }
            Phase::Chatting { ping_sent } => {
                let Some(idle) = limits.idle_timeout else {
                    return Action::Nothing;
                };
                match *ping_sent {
                    None if now.saturating_duration_since(last_heard) >= idle => {
                        *ping_sent = Some(now);
                        Action::Ping
                    }
                    Some(sent) if now.saturating_duration_since(sent) >= idle => {
                        info!("{peer}: no answer to ping, disconnecting");
                        Action::Close {
                            code: close_code::GOING_AWAY,
                            reason: "idle timeout",
                            why: None,
                        }
                    }
                    _ => Action::Nothing,
                }
            }
            _ => Action::Nothing,
        }
    }
}

fn refused_login(why: Rejection, cx: &Cx) -> Action {
    info!("{}: login refused: {}", cx.peer, why.code.as_str());
    Action::policy("login refused", why)
}

/// Refused inputs, logged within a budget: the first of an interval at
/// once, the rest as one count when it ends.
#[derive(Debug, Default)]
struct RefusalLog(LogBudget);

impl RefusalLog {
    fn note(&mut self, peer: Peer, code: ErrorCode, now: Instant) {
        if self.0.allow(now) {
            info!("{peer}: refused a message: {}", code.as_str());
        }
    }

    fn tick(&mut self, peer: Peer, now: Instant) {
        if let Some(n) = self.0.unlogged(now) {
            info!("{peer}: refused {n} more messages in the last minute");
        }
    }
}

/// Strips one trailing `\n` or `\r\n`, as line-based clients send.
fn strip_line_end(s: &str) -> &str {
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.strip_suffix('\r').unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    struct World {
        room: Room,
        out: Vec<Outbound>,
        addresses: Addresses,
        stats: Stats,
        limits: Limits,
        now: Instant,
    }

    impl World {
        fn new(password: &str) -> Self {
            let config = Config::default();
            World {
                room: Room::new("t", password, 0, 1 << 20),
                out: Vec::new(),
                addresses: Addresses::new(&config.limits),
                stats: Stats::default(),
                limits: config.limits,
                now: Instant::now(),
            }
        }

        fn send(&mut self, session: &mut Session, id: ConnId, text: &str) -> Action {
            self.with(id, |cx| session.on_message(Message::text(text), cx))
        }

        fn with(&mut self, id: ConnId, f: impl FnOnce(&mut Cx) -> Action) -> Action {
            let mut cx = Cx {
                room: &mut self.room,
                out: &mut self.out,
                addresses: &mut self.addresses,
                stats: &mut self.stats,
                limits: &self.limits,
                id,
                peer: Peer::direct("192.0.2.1:5000".parse().unwrap()),
                now: self.now,
            };
            f(&mut cx)
        }
    }

    #[test]
    fn in_a_cluster_the_name_is_claimed_first() {
        let mut w = World::new("");
        w.room.cluster();
        let mut s = Session::new();
        s.opened(w.now);
        w.send(&mut s, 1, "");
        // The link is down: the login waits, the connection stays.
        assert_eq!(code(w.send(&mut s, 1, "alice")), Some(ErrorCode::ClusterUnavailable));
        w.room.set_up(true);
        let claim = w.send(&mut s, 1, "A\u{30A}lice");
        assert_eq!(claim, Action::Claim { name: "\u{C5}lice".into(), key: "a\u{30A}lice".into() });
        assert!(s.is_claiming() && s.is_unauthenticated());
        assert_eq!(w.room.name_of(1), None, "not in the room until the cluster says so");
        // The cluster could not be asked: back to choosing a name.
        let why = Rejection::cluster_unavailable();
        assert_eq!(
            code(w.with(1, |cx| s.claim_failed(why, cx))),
            Some(ErrorCode::ClusterUnavailable)
        );
        assert!(matches!(w.send(&mut s, 1, "bob"), Action::Claim { .. }));
        assert_eq!(w.with(1, |cx| s.claimed("bob", cx)), Action::LoggedIn);
        assert_eq!(w.room.name_of(1), Some("bob"));
        assert_eq!(w.with(1, |cx| s.claimed("bob", cx)), Action::Nothing, "once");

        // Another node has the name: refused as a local holder would be.
        let mut t = Session::new();
        t.opened(w.now);
        w.send(&mut t, 2, "");
        assert!(matches!(w.send(&mut t, 2, "carol"), Action::Claim { .. }));
        let taken = Rejection::new(ErrorCode::NameTaken, "taken");
        let action = w.with(2, |cx| t.claim_failed(taken, cx));
        assert!(matches!(action, Action::Close { code: close_code::POLICY, .. }), "{action:?}");
    }

    fn code(action: Action) -> Option<ErrorCode> {
        match action {
            Action::Refuse(why) | Action::Close { why: Some(why), .. } => Some(why.code),
            _ => None,
        }
    }

    #[test]
    fn strips_one_line_ending() {
        assert_eq!(strip_line_end("963\n"), "963");
        assert_eq!(strip_line_end("963\r\n"), "963");
        assert_eq!(strip_line_end("963\n\n"), "963\n");
        assert_eq!(strip_line_end("963"), "963");
    }

    #[test]
    fn login_then_chat() {
        let mut w = World::new("963");
        let mut s = Session::new();
        s.opened(w.now);
        assert!(s.is_unauthenticated());
        assert_eq!(w.send(&mut s, 1, "963\n"), Action::Nothing);
        assert_eq!(w.send(&mut s, 1, "alice\r\n"), Action::LoggedIn);
        assert!(s.is_chatting() && !s.is_unauthenticated());
        assert_eq!(w.room.name_of(1), Some("alice"));
        assert_eq!(code(w.send(&mut s, 1, "{")), Some(ErrorCode::BadJson));
        assert_eq!(w.send(&mut s, 1, r#"{"msgType":"Broadcast","text":"hi"}"#), Action::Nothing);
        assert!(w.out.iter().any(|o| o.json.contains("\"hi\"")));
        assert!(!s.end());
    }

    #[test]
    fn wrong_passwords_are_throttled_per_address() {
        let mut w = World::new("963");
        let allowed = w.limits.login_attempts_per_minute as usize;
        for i in 0..allowed {
            let mut s = Session::new();
            s.opened(w.now);
            assert_eq!(code(w.send(&mut s, i, "000")), Some(ErrorCode::WrongPassword), "{i}");
        }
        // Past the limit even the right password is not checked.
        let mut s = Session::new();
        s.opened(w.now);
        assert_eq!(code(w.send(&mut s, 99, "963")), Some(ErrorCode::TooManyAttempts));
        // A minute later the address may try again.
        w.now += Duration::from_secs(61);
        let mut s = Session::new();
        s.opened(w.now);
        assert_eq!(w.send(&mut s, 100, "963"), Action::Nothing);
    }

    #[test]
    fn binary_frames_cost_tokens_too() {
        let mut w = World::new("");
        w.limits.rate_limit_per_sec = 1;
        w.limits.rate_limit_burst = 5;
        let mut s = Session::new();
        s.opened(w.now);
        w.send(&mut s, 1, "");
        assert_eq!(w.send(&mut s, 1, "bob"), Action::LoggedIn);
        let codes: Vec<_> = (0..8)
            .map(|_| code(w.with(1, |cx| s.on_message(Message::binary(vec![1u8]), cx))))
            .collect();
        use ErrorCode::*;
        assert_eq!(codes[..5], [Some(BinaryUnsupported); 5]);
        assert_eq!(codes[5..], [Some(RateLimited); 3]);
    }

    #[test]
    fn the_list_of_a_large_room_costs_more_tokens() {
        let mut w = World::new("");
        w.limits.rate_limit_per_sec = 1;
        w.limits.rate_limit_burst = 3;
        for id in 0..600 {
            w.room.join(id, &format!("user{id}")).unwrap();
        }
        let mut s = Session::new();
        s.opened(w.now);
        w.send(&mut s, 1000, "");
        assert_eq!(w.send(&mut s, 1000, "alice"), Action::LoggedIn);
        let ask = r#"{"msgType":"OnlineUsers"}"#;
        assert_eq!(w.send(&mut s, 1000, ask), Action::Nothing);
        // 601 users: two tokens more than a message, so the bucket is empty.
        assert_eq!(code(w.send(&mut s, 1000, ask)), Some(ErrorCode::RateLimited));
    }

    #[test]
    fn login_times_out_and_idle_users_are_pinged() {
        let mut w = World::new("");
        let peer = Peer::direct("192.0.2.1:5000".parse().unwrap());
        let mut s = Session::new();
        s.opened(w.now);
        let late = w.now + w.limits.login_timeout;
        assert_eq!(code(s.tick(w.now, peer, &w.limits, late)), Some(ErrorCode::LoginTimeout));

        let mut s = Session::new();
        s.opened(w.now);
        w.send(&mut s, 1, "");
        w.send(&mut s, 1, "carol");
        let idle = w.limits.idle_timeout.unwrap();
        assert_eq!(s.tick(w.now, peer, &w.limits, w.now + idle), Action::Ping);
        assert!(matches!(
            s.tick(w.now, peer, &w.limits, w.now + idle * 2),
            Action::Close { code: close_code::GOING_AWAY, .. }
        ));
    }
}
