//! One connection's chat session, free of I/O, and the owner of its life:
//! handshaking → logging in (password, name, in a cluster the claim) →
//! chatting (as a member or a moderator) → ended. The connection reports
//! what happened; the session decides, under the rate limit and the
//! keep-alive, and pushes `Effect`s.

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use log::info;
use serde_json::Value;
use tungstenite::Message;

use crate::addresses::{Addresses, Peer};
use crate::admins::{Admins, Check};
use crate::config::Limits;
use crate::effect::{
    ClusterCall, ConnId, Count, Effect, Effects, Ending, IDLE_TIMEOUT, MESSAGE_TIMEOUT, Push,
};
use crate::moderation::{Action, Rules};
use crate::names;
use crate::peerlog::{Abuse, Class, PeerLog};
use crate::protocol::{ErrorCode, Rejection, Request, Role, close_code, parse_request};
use crate::ratelimit::{ByteBucket, TokenBucket, Verdict};
use crate::resume::{self, Ask, NameFrame};
use crate::room::{Resumed, Room, Welcome};

/// What a session may touch besides itself.
pub struct Cx<'a> {
    pub room: &'a mut Room,
    pub out: &'a mut Effects,
    pub addresses: &'a mut Addresses,
    /// The log's budget per address: every line a peer causes is charged.
    pub log: &'a mut PeerLog,
    pub limits: &'a Limits,
    pub id: ConnId,
    /// The client's address, for the log and the per-address limits.
    pub peer: Peer,
    /// The address this connection is charged to (`None`: a trusted proxy
    /// that has not named its client yet).
    pub charged: Option<IpAddr>,
    pub now: Instant,
    /// The owner's rules: bans, mutes, the lock, the room-wide login rate.
    pub rules: &'a mut Rules,
    /// The wall clock, for the rules' ends.
    pub wall: SystemTime,
    /// The moderators (`admins`) and the bound on checking their passwords.
    pub admins: &'a mut Admins,
}

impl Cx<'_> {
    fn end(&mut self, how: Ending) {
        self.out.push(Effect::End { conn: self.id, how });
    }

    /// Whether a line of `class` about this peer may be logged now.
    fn may_log(&mut self, class: Class) -> bool {
        self.log.allow(class, self.peer.ip, self.now)
    }
}

/// At most this many messages are held while a name is claimed (and at
/// most `max_message_bytes` of them in all).
const MAX_HELD: usize = 16;

#[derive(Debug)]
enum Login {
    Password,
    /// The password came; the name is awaited.
    Name(Password),
    /// In a cluster: the name was asked of Redis, the answer is awaited.
    /// Boxed: a claim is short and a cluster's only, and every byte of a
    /// session is paid per user.
    Claiming(Box<Claim>),
}

/// A login waiting for the cluster's answer about the name.
#[derive(Debug)]
struct Claim {
    /// What the client sends meanwhile: handled once the name is theirs.
    held: Held,
    /// What they will be (their password said so, with the name).
    role: Role,
    /// Kept in case the claim cannot be made and the name is chosen again.
    password: Password,
    /// What their welcome will say (a resumable session's token).
    welcome: Welcome,
    /// A `Resume`: what it asked (the cluster checks the token).
    resume: Option<Ask>,
}

/// The password frame, until the name comes.
enum Password {
    /// Checked when it came: the room's (a room without `admins`: as the
    /// original server does).
    Room,
    /// In a room with `admins`: whose password it must be depends on the
    /// name (an admin's own, or the room's), so it is checked with the
    /// name. Boxed: most sessions never hold one, and every byte of a
    /// session is paid per user.
    #[allow(clippy::box_collection)]
    Held(Box<String>),
}

/// Never shows the password.
impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Room => f.write_str("Room"),
            Password::Held(_) => f.write_str("Held(..)"),
        }
    }
}

/// Text messages sent while the name is claimed, in order, within
/// `MAX_HELD` messages and `max_message_bytes` bytes.
#[derive(Debug, Default)]
struct Held(Vec<Message>);

impl Held {
    /// Keeps `message`, or refuses it (`login_pending`) past the bounds.
    fn push(&mut self, message: Message, max_bytes: usize) -> Result<(), Rejection> {
        let held = &mut self.0;
        let bytes: usize = held.iter().map(Message::len).sum();
        if held.len() >= MAX_HELD || bytes + message.len() > max_bytes {
            return Err(Rejection::new(
                ErrorCode::LoginPending,
                format!(
                    "your name is still being claimed, and what is held until then is full \
                     ({MAX_HELD} messages or {max_bytes} bytes): this one was not delivered; \
                     wait for the welcome (ServerName) before sending more"
                ),
            ));
        }
        held.push(message);
        Ok(())
    }

    fn take(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.0)
    }
}

/// `why`, saying that `discarded` messages held during the claim were not
/// delivered.
fn with_discarded(mut why: Rejection, discarded: usize) -> Rejection {
    if discarded > 0 {
        let (s, were) = if discarded == 1 { ("", "was") } else { ("s", "were") };
        why.text += &format!(" ({discarded} message{s} sent after the name {were} not delivered)");
    }
    why
}

#[derive(Debug)]
enum Phase {
    /// TLS and HTTP handshake: no WebSocket yet.
    Handshaking,
    LoggingIn {
        step: Login,
        since: Instant,
    },
    Chatting {
        ping_sent: Option<Instant>,
        /// What the user's messages may still cost in bytes (`pay_bytes`).
        bytes: ByteBucket,
        /// A member, or a moderator (who may send `Moderate`).
        role: Role,
        /// A resumable session: room messages carry their `seq`.
        sequenced: bool,
    },
    /// Logged out, refused or disconnected: the connection is closing.
    Ended,
    /// The Autobahn echo endpoint (feature `testing`): no login, every
    /// message goes back to its sender.
    #[cfg(feature = "testing")]
    Echoing,
}

#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// Every message costs a token (none when rate limiting is off).
    bucket: Option<TokenBucket>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        Session { phase: Phase::Handshaking, bucket: None }
    }

    pub fn is_chatting(&self) -> bool {
        matches!(self.phase, Phase::Chatting { .. })
    }

    /// A resumable session: room messages go to it with their `seq`.
    pub fn is_sequenced(&self) -> bool {
        matches!(self.phase, Phase::Chatting { sequenced: true, .. })
    }

    /// For the metrics: handshaking, logging_in, chatting or ended.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Handshaking => "handshaking",
            Phase::LoggingIn { .. } => "logging_in",
            Phase::Chatting { .. } => "chatting",
            Phase::Ended => "closing",
            #[cfg(feature = "testing")]
            Phase::Echoing => "chatting",
        }
    }

    /// Not logged in yet (and not ended): counts as a handshake of its address.
    #[cfg(test)]
    fn is_unauthenticated(&self) -> bool {
        matches!(self.phase, Phase::Handshaking | Phase::LoggingIn { .. })
    }

    /// Whether a claim of a name is awaiting the cluster's answer.
    pub fn is_claiming(&self) -> bool {
        matches!(self.phase, Phase::LoggingIn { step: Login::Claiming(_), .. })
    }

    /// The WebSocket opened: the login clock starts, and every frame from
    /// now on costs a token.
    pub fn opened(&mut self, now: Instant, limits: &Limits) {
        if let Phase::Handshaking = self.phase {
            self.phase = Phase::LoggingIn { step: Login::Password, since: now };
            self.bucket = (limits.rate_limit_per_sec > 0)
                .then(|| TokenBucket::new(limits.rate_limit_burst, now));
        }
    }

    /// A reload changed the limits. The rate, the burst, the byte budget
    /// and the timeouts are read from `Cx::limits` at every use, so they
    /// apply at once; what a session keeps is its bucket: rate limiting
    /// turned on gives an open session a full one, turned off takes it
    /// away, and a smaller burst is fitted without making anyone a flood.
    pub fn limits_changed(&mut self, limits: &Limits, now: Instant) {
        if !matches!(self.phase, Phase::LoggingIn { .. } | Phase::Chatting { .. }) {
            return;
        }
        let burst = limits.rate_limit_burst;
        match &mut self.bucket {
            _ if limits.rate_limit_per_sec == 0 => self.bucket = None,
            Some(bucket) => bucket.fit(burst),
            None => self.bucket = Some(TokenBucket::new(burst, now)),
        }
    }

    /// A moderator whose name was taken out of `admins` (a reload): a
    /// member from now on.
    pub fn demote(&mut self) {
        if let Phase::Chatting { role, .. } = &mut self.phase {
            *role = Role::Member;
        }
    }

    /// Fragments arrived (frames of a message that are not its last, which
    /// `connection.rs` counts as they come): each costs a token, as a
    /// message does. A stream of them is a flood like any other.
    pub fn on_fragments(&mut self, fragments: u32, cx: &mut Cx) {
        let (rate, burst) = (cx.limits.rate_limit_per_sec, cx.limits.rate_limit_burst);
        let Some(bucket) = &mut self.bucket else { return };
        if bucket.take_n(cx.now, fragments, rate, burst) == Verdict::Flood {
            self.flooded(cx);
        }
    }

    fn flooded(&mut self, cx: &mut Cx) {
        if let Phase::Ended = self.phase {
            return;
        }
        cx.log.abuse(Abuse::Flood, cx.peer.ip, cx.now);
        let why = Rejection::new(
            ErrorCode::RateLimited,
            "kept flooding past the rate limit: disconnected",
        );
        cx.end(Ending::policy("rate limit exceeded", why));
    }

    /// A session of the Autobahn echo endpoint: once open, every message
    /// (of up to `max_message_bytes`) goes back to its sender.
    #[cfg(feature = "testing")]
    pub fn echo(&mut self, cx: &mut Cx) {
        self.phase = Phase::Echoing;
        cx.out.push(Effect::LoggedIn(cx.id));
    }

    /// The one way a session ends (`Effect::End` asks the server to call
    /// it): the user leaves the room, the cluster is told the name is free,
    /// and an unauthenticated connection stops counting as a handshake.
    /// `false` if it had ended already.
    pub fn end(&mut self, how: &Ending, cx: &mut Cx) -> bool {
        let was = std::mem::replace(&mut self.phase, Phase::Ended);
        match was {
            Phase::Ended => return false,
            #[cfg(feature = "testing")]
            Phase::Echoing => return true,
            Phase::Handshaking | Phase::LoggingIn { .. } => {
                if let Some(ip) = cx.charged {
                    cx.addresses.handshake_done(ip);
                }
            }
            Phase::Chatting { sequenced: true, .. } if how.keeps_place() => {
                let grace = cx.limits.resume_grace;
                let name = cx.room.name_of(cx.id).map(str::to_owned);
                if !grace.is_zero() && cx.room.detach(cx.id, cx.now + grace, cx.peer.ip, cx.out) {
                    if cx.may_log(Class::Sessions) {
                        let (name, why, secs) =
                            (name.unwrap_or_default(), how.reason(), grace.as_secs());
                        info!("{}: {name:?} dropped ({why}): kept {secs} s for a resume", cx.peer);
                    }
                    return true;
                }
            }
            Phase::Chatting { .. } => {}
        }
        let name_key = cx.room.name_key_of(cx.id);
        if let Some(name) = cx.room.leave(cx.id).filter(|_| cx.may_log(Class::Sessions)) {
            let why = how.reason();
            info!("{}: {name:?} left: {why} ({} online)", cx.peer, cx.room.online());
        }
        if let (true, Some(name_key)) = (cx.room.is_clustered(), name_key) {
            let name_key = name_key.to_string();
            cx.out.push(Effect::Cluster(ClusterCall::Release { name_key }));
        }
        true
    }

    pub fn on_message(&mut self, message: Message, cx: &mut Cx) {
        if let Phase::Ended = self.phase {
            return;
        }
        #[cfg(feature = "testing")]
        if let (Phase::Echoing, Message::Text(_) | Message::Binary(_)) = (&self.phase, &message) {
            return cx.out.push(Effect::Echo { conn: cx.id, message });
        }
        if let Phase::Chatting { ping_sent, .. } = &mut self.phase {
            *ping_sent = None;
        }
        let data = matches!(message, Message::Text(_) | Message::Binary(_));
        let (rate, burst) = (cx.limits.rate_limit_per_sec, cx.limits.rate_limit_burst);
        // Every message costs a token, pings and pongs too (its fragments
        // before the last cost theirs as they came: `on_fragments`).
        match self.bucket.as_mut().map_or(Verdict::Allow, |b| b.take(cx.now, rate, burst)) {
            Verdict::Allow => {}
            Verdict::Refuse if data => {
                let why = Rejection::new(
                    ErrorCode::RateLimited,
                    "too many messages: this one was not delivered; slow down",
                );
                return self.refuse(why, cx);
            }
            Verdict::Refuse => return,
            Verdict::Flood => return self.flooded(cx),
        }
        if let (Phase::LoggingIn { step: Login::Claiming(claim), .. }, Message::Text(_)) =
            (&mut self.phase, &message)
        {
            // Handled once the name is claimed (`claimed`).
            if let Err(why) = claim.held.push(message, cx.limits.max_message_bytes) {
                self.refuse(why, cx);
            }
            return;
        }
        if self.pay_bytes(&message, cx) {
            self.handle(message, cx);
        }
    }

    /// A message that passed the rate limit, by phase.
    fn handle(&mut self, message: Message, cx: &mut Cx) {
        let login = match &self.phase {
            Phase::LoggingIn { step, since } => Some((step, *since)),
            _ => None,
        };
        match (message, login) {
            (Message::Text(text), Some((Login::Password, since))) => {
                self.on_password(strip_line_end(&text), since, cx)
            }
            (Message::Text(text), Some((Login::Name(_), since))) => {
                self.on_name(strip_line_end(&text), since, cx)
            }
            (Message::Text(text), None) if self.is_chatting() => match parse_request(&text) {
                Ok(Request::Moderate(fields)) => self.moderate(&fields, cx),
                Ok(Request::Broadcast { .. } | Request::PrivateMessage { .. })
                    if let Some(Err(why)) =
                        cx.room.name_key_of(cx.id).map(|key| cx.rules.may_speak(&key, cx.wall)) =>
                {
                    self.refuse(why, cx)
                }
                Ok(request) => {
                    cx.out.push(Effect::Count(Count::Received(Some(request.kind()))));
                    if let (Request::OnlineUsers, Some(bucket)) = (&request, &mut self.bucket) {
                        // The list of a large room is up to 128 KiB: it costs
                        // a token per 256 users, up to a whole burst.
                        let extra = (cx.room.online() / 256) as u32;
                        bucket.charge(extra.min(cx.limits.rate_limit_burst));
                    }
                    cx.room.handle(cx.id, request, cx.out);
                }
                Err(why) => self.refuse(why, cx),
            },
            (Message::Binary(_), None) if self.is_chatting() => self.refuse(
                Rejection::new(
                    ErrorCode::BinaryUnsupported,
                    "binary frames are not supported: send JSON in text frames",
                ),
                cx,
            ),
            (Message::Binary(_), Some(_)) => {
                let why = Rejection::new(
                    ErrorCode::BinaryUnsupported,
                    "log in with two text frames: the password, then the username",
                );
                cx.end(Ending::Close {
                    code: close_code::UNSUPPORTED_DATA,
                    reason: "text frames only",
                    why: Some(why),
                });
            }
            _ => {}
        }
    }

    /// The name frame: a bare name, or a `Login` or `Resume` (JSON). What
    /// costs nothing is checked first: a banned name or address, or an
    /// address past its logins, spends no moderator's password check.
    fn on_name(&mut self, frame: &str, since: Instant, cx: &mut Cx) {
        let frame = match NameFrame::parse(frame) {
            Ok(frame) => frame,
            Err(why) => return refused_login(Rejection::new(ErrorCode::InvalidField, why), cx),
        };
        let resuming = !cx.limits.resume_grace.is_zero();
        let (name, ask, resumable) = match &frame {
            NameFrame::Bare(name) => (*name, None, false),
            NameFrame::Login { name } => (name.as_str(), None, resuming),
            NameFrame::Resume(ask) => (ask.name.as_str(), Some(ask), resuming),
        };
        if !cx.addresses.may_log_in(cx.peer.ip, cx.now) {
            cx.log.abuse(Abuse::TooManyLogins, cx.peer.ip, cx.now);
            let why = Rejection::new(
                ErrorCode::TooManyLogins,
                "too many logins from your address: wait a little and try again",
            );
            return refused_login(why, cx);
        }
        if let Some(why) = cx.rules.banned(name, cx.peer.ip, cx.wall) {
            return refused_login(why, cx);
        }
        let role = match &self.phase {
            Phase::LoggingIn { step: Login::Name(Password::Held(given)), .. } => {
                match admin_or_room_password(given, name, cx) {
                    Some(role) => role,
                    None => return,
                }
            }
            _ => Role::Member,
        };
        let welcome = match ask {
            Some(ask) if resumable => return self.resume(ask.clone(), role, since, cx),
            Some(_) => Welcome::Reset { token: None, why: "resuming is off on this server" },
            None => match resumable.then(resume::new_token).flatten() {
                Some(token) => Welcome::Resumable { token },
                None => Welcome::Plain,
            },
        };
        self.log_in(name, role, welcome, None, since, cx);
    }

    /// A new session: the lock and the room's login rate, then standalone
    /// the room, in a cluster the claim of the name. In a cluster a resume
    /// comes here too (`resume`): Redis says whether the session is held,
    /// and checks the lock should the name be free.
    fn log_in(
        &mut self,
        name: &str,
        role: Role,
        welcome: Welcome,
        resume: Option<Ask>,
        since: Instant,
        cx: &mut Cx,
    ) {
        let resuming = resume.is_some();
        let admitted = match resuming {
            true => cx.rules.admits_by_rate(role, cx.now),
            false => cx.rules.admits_unbanned(role, cx.now),
        };
        if let Err(why) = admitted {
            return refused_login(why, cx);
        }
        if !cx.room.is_clustered() {
            return self.join(name, role, welcome, cx);
        }
        let checked = match resuming {
            true => names::check(name),
            false => cx.room.check_name(name),
        };
        match checked {
            Err(why) => refused_login(why, cx),
            Ok(_) if !cx.room.reaches_everyone() => {
                self.refuse(Rejection::cluster_unavailable(), cx)
            }
            Ok(checked) => {
                let token_hash = welcome.token().map(resume::token_hash);
                let (name, key) = (checked.display, checked.key);
                let call = match &resume {
                    Some(ask) => ClusterCall::Resume {
                        conn: cx.id,
                        name,
                        key,
                        token_hash: resume::token_hash(&ask.token),
                        new_token_hash: token_hash,
                        locked_out: role == Role::Member,
                    },
                    None => ClusterCall::Claim { conn: cx.id, name, key, token_hash },
                };
                self.claiming(role, welcome, resume, since);
                cx.out.push(Effect::Cluster(call));
            }
        }
    }

    /// Asking the cluster: what is sent meanwhile is held.
    fn claiming(&mut self, role: Role, welcome: Welcome, resume: Option<Ask>, since: Instant) {
        let password = match &mut self.phase {
            Phase::LoggingIn { step: Login::Name(password), .. } => {
                std::mem::replace(password, Password::Room)
            }
            _ => Password::Room,
        };
        let claim = Claim { held: Held::default(), role, password, welcome, resume };
        self.phase = Phase::LoggingIn { step: Login::Claiming(Box::new(claim)), since };
    }

    /// A `Resume` (resuming on): standalone, the room resumes the session
    /// if the token is its own; in a cluster Redis says so first. A name
    /// nobody holds is logged in afresh, as a reset.
    fn resume(&mut self, ask: Ask, role: Role, since: Instant, cx: &mut Cx) {
        // Tokens are guessed no faster than passwords.
        if !may_try_password(cx) {
            return;
        }
        // Should the session be over: a new one, told as a reset.
        let fresh = || Welcome::Reset { token: resume::new_token(), why: SESSION_OVER };
        if cx.room.is_clustered() {
            let welcome = fresh();
            let name = ask.name.clone();
            return self.log_in(&name, role, welcome, Some(ask), since, cx);
        }
        match cx.room.resume(cx.id, &ask, false, role, cx.out) {
            Resumed::Yes { took_over, exact } => self.resumed(role, took_over, exact, cx),
            Resumed::NotHeld => {
                cx.out.push(Effect::Count(Count::Resume("reset")));
                self.log_in(&ask.name, role, fresh(), None, since, cx)
            }
            Resumed::Refused => wrong_token(cx),
        }
    }

    /// In a cluster: Redis said the token is the session's, which is this
    /// node's now.
    pub fn resumed_in_cluster(&mut self, cx: &mut Cx) {
        let Phase::LoggingIn { step: Login::Claiming(claim), .. } = &mut self.phase else {
            return;
        };
        let Some(ask) = claim.resume.take() else { return };
        let (held, role) = (claim.held.take(), claim.role);
        match cx.room.resume(cx.id, &ask, true, role, cx.out) {
            Resumed::Yes { took_over, exact } => self.resumed(role, took_over, exact, cx),
            // Not known here (nodes that disagree on a name's rules): the
            // name Redis moved here is freed, the client logs in again.
            Resumed::NotHeld | Resumed::Refused => {
                if let Ok(name) = names::check(&ask.name) {
                    cx.out.push(Effect::Cluster(ClusterCall::Release { name_key: name.key }));
                }
                let why = Rejection::cluster_unavailable();
                return refused_login(with_discarded(why, held.len()), cx);
            }
        }
        self.handle_held(held, cx);
    }

    /// The session is this connection's again (`took_over`: the one that
    /// had it, closed without leaving). Charged to this address as a login.
    fn resumed(&mut self, role: Role, took_over: Option<ConnId>, exact: bool, cx: &mut Cx) {
        let how = if exact { "exact" } else { "reset" };
        cx.out.push(Effect::Count(Count::Resume(how)));
        if cx.may_log(Class::Sessions) {
            let name = cx.room.name_of(cx.id).unwrap_or_default();
            info!("{}: {name:?} resumed their session ({} online)", cx.peer, cx.room.online());
        }
        // (`Room::resume` said `LoggedIn`, before what it sent.)
        self.chatting(role, true, cx);
        if let Some(old) = took_over {
            let why = Rejection::new(
                ErrorCode::ResumedElsewhere,
                "your session was resumed by another connection",
            );
            let how = Ending::policy("resumed elsewhere", why);
            cx.out.push(Effect::End { conn: old, how });
        }
    }

    /// The cluster gave us the name asked for in `ClusterCall::Claim`: the
    /// user joins, then what they sent meanwhile is handled, in order, as
    /// if it came now (rate limit included).
    pub fn claimed(&mut self, name: &str, cx: &mut Cx) {
        let Phase::LoggingIn { step: Login::Claiming(claim), .. } = &mut self.phase else {
            return;
        };
        let (held, role) = (claim.held.take(), claim.role);
        let welcome = std::mem::replace(&mut claim.welcome, Welcome::Plain);
        self.join(name, role, welcome, cx);
        self.handle_held(held, cx);
    }

    fn handle_held(&mut self, held: Vec<Message>, cx: &mut Cx) {
        for message in held {
            let ended = |cx: &Cx| {
                cx.out.iter().any(|e| matches!(e, Effect::End { conn, .. } if *conn == cx.id))
            };
            if !self.is_chatting() || ended(cx) {
                break;
            }
            // Their tokens were taken as they came; their bytes now.
            if self.pay_bytes(&message, cx) {
                self.handle(message, cx);
            }
        }
    }

    /// The cluster refused the claim (`name_taken`) or could not be asked.
    /// What was held meanwhile is not delivered, and the refusal says so.
    pub fn claim_failed(&mut self, why: Rejection, cx: &mut Cx) {
        let Phase::LoggingIn { step: Login::Claiming(claim), since } = &mut self.phase else {
            return;
        };
        let (why, since) = (with_discarded(why, claim.held.take().len()), *since);
        if why.code == ErrorCode::ResumeRefused {
            return wrong_token(cx);
        }
        if matches!(why.code, ErrorCode::NameTaken | ErrorCode::RoomLocked) {
            return refused_login(why, cx);
        }
        let password = std::mem::replace(&mut claim.password, Password::Room);
        self.phase = Phase::LoggingIn { step: Login::Name(password), since };
        self.refuse(why, cx)
    }

    fn join(&mut self, name: &str, role: Role, welcome: Welcome, cx: &mut Cx) {
        let sequenced = welcome.token().is_some();
        match cx.room.join_as(cx.id, name, role, welcome) {
            Ok(()) => {
                if cx.may_log(Class::Sessions) {
                    let (peer, online) = (cx.peer, cx.room.online());
                    match role {
                        Role::Member => info!("{peer}: {name:?} logged in ({online} online)"),
                        Role::Moderator => {
                            info!("{peer}: {name:?} logged in as a moderator ({online} online)")
                        }
                    }
                }
                cx.rules.logged_in(cx.now);
                self.chatting(role, sequenced, cx);
                cx.out.push(Effect::LoggedIn(cx.id));
            }
            Err(why) => refused_login(why, cx),
        }
    }

    /// In the room (joined or resumed): charged to the address as a login.
    /// (The caller says `Effect::LoggedIn`, where room traffic is to start.)
    fn chatting(&mut self, role: Role, sequenced: bool, cx: &mut Cx) {
        let bytes = ByteBucket::new(cx.now);
        self.phase = Phase::Chatting { ping_sent: None, bytes, role, sequenced };
        cx.addresses.logged_in(cx.peer.ip, cx.now);
        // Chatting starts with a whole burst, whatever the login cost.
        if let Some(bucket) = &mut self.bucket {
            *bucket = TokenBucket::new(cx.limits.rate_limit_burst, cx.now);
        }
        if let Some(ip) = cx.charged {
            cx.addresses.handshake_done(ip);
        }
    }

    fn on_password(&mut self, given: &str, since: Instant, cx: &mut Cx) {
        if !cx.admins.is_empty() {
            // Checked with the name, which says whose password it must be.
            let step = Login::Name(Password::Held(Box::new(given.to_owned())));
            self.phase = Phase::LoggingIn { step, since };
            return;
        }
        if !may_try_password(cx) {
            return;
        }
        if cx.room.check_password(given) {
            self.phase = Phase::LoggingIn { step: Login::Name(Password::Room), since };
            return;
        }
        wrong_password(cx);
    }

    /// A `Moderate` request: a moderator's action goes to the loop
    /// (`Effect::Moderate`) if moderators may do it; anyone else is told
    /// `not_a_moderator`. The connection stays open either way.
    fn moderate(&mut self, fields: &Value, cx: &mut Cx) {
        let Phase::Chatting { role: Role::Moderator, .. } = self.phase else {
            let why = "only moderators may moderate (the room's admins, logged in with their \
                       own password)";
            return self.refuse(Rejection::new(ErrorCode::NotAModerator, why), cx);
        };
        let action = match Action::of_json(fields) {
            Some(Ok(action)) => action,
            Some(Err(why)) => return self.refuse(Rejection::new(ErrorCode::InvalidField, why), cx),
            None if fields.get("cmd").is_none() => {
                let why = Rejection::new(ErrorCode::MissingField, "field \"cmd\" is missing");
                return self.refuse(why, cx);
            }
            None => {
                let why = "field \"cmd\" must be one of \"kick\", \"ban\", \"unban\", \"mute\", \
                           \"unmute\", \"lock\", \"unlock\", \"say\"";
                return self.refuse(Rejection::new(ErrorCode::InvalidField, why), cx);
            }
        };
        let admins = &*cx.admins;
        if let Err(why) = cx.rules.may_moderate(&action, |key| admins.is_admin(key)) {
            return self.refuse(Rejection::new(ErrorCode::ModerationRefused, why), cx);
        }
        cx.out.push(Effect::Count(Count::Received(Some("Moderate"))));
        cx.out.push(Effect::Moderate { by: cx.id, action });
    }

    /// The byte budget of a chatting user (`rate_limit_bytes_per_sec`,
    /// `rate_limit_bytes_burst`): a text or binary message costs its
    /// payload's length, so that what one user makes the server write is
    /// bounded in bytes, not only in messages. One the budget cannot pay for
    /// is refused (`rate_limited`, not delivered) and costs no bytes.
    /// `false`: refused.
    fn pay_bytes(&mut self, message: &Message, cx: &mut Cx) -> bool {
        let (Phase::Chatting { bytes, .. }, Message::Text(_) | Message::Binary(_)) =
            (&mut self.phase, message)
        else {
            return true;
        };
        let (rate, burst) = (cx.limits.rate_limit_bytes_per_sec, cx.limits.rate_limit_bytes_burst);
        if bytes.take(cx.now, rate, burst, message.len()) {
            return true;
        }
        let text = format!(
            "too many bytes in a short time ({burst} at once, then {rate} a second): this \
             message of {} bytes was not delivered; wait a few seconds",
            message.len()
        );
        self.refuse(Rejection::new(ErrorCode::RateLimited, text), cx);
        false
    }

    fn refuse(&mut self, why: Rejection, cx: &mut Cx) {
        cx.out.push(Effect::Count(Count::Received(None)));
        if cx.may_log(Class::Messages) {
            info!("{}: refused a message: {}", cx.peer, why.code.as_str());
        }
        cx.out.refuse(cx.id, why);
    }

    /// Timers, about once a second: the login and message deadlines and
    /// keep-alive pings. `last_heard`: the last whole message;
    /// `unfinished`: since when a message has been arriving, if one is.
    pub fn tick(&mut self, last_heard: Instant, unfinished: Option<Instant>, cx: &mut Cx) {
        let (peer, now) = (cx.peer, cx.now);
        let open = !matches!(self.phase, Phase::Handshaking | Phase::Ended);
        match unfinished {
            Some(since)
                if open && now.saturating_duration_since(since) >= cx.limits.message_timeout =>
            {
                if cx.log.allow(Class::Refusals, peer.ip, now) {
                    info!("{peer}: a message took too long to arrive");
                }
                let text = format!(
                    "your message did not arrive whole within {} s",
                    cx.limits.message_timeout.as_secs()
                );
                let why = Rejection::new(ErrorCode::MessageTimeout, text);
                return cx.end(Ending::policy(MESSAGE_TIMEOUT, why));
            }
            _ => {}
        }
        match &mut self.phase {
            Phase::LoggingIn { since, .. }
                if now.saturating_duration_since(*since) >= cx.limits.login_timeout =>
            {
                if cx.log.allow(Class::Refusals, peer.ip, now) {
                    info!("{peer}: login timeout");
                }
                let why = Rejection::new(ErrorCode::LoginTimeout, "login took too long");
                cx.end(Ending::policy("login timeout", why));
            }
            Phase::Chatting { ping_sent, .. } => {
                let Some(idle) = cx.limits.idle_timeout else { return };
                match *ping_sent {
                    None if now.saturating_duration_since(last_heard) >= idle => {
                        *ping_sent = Some(now);
                        cx.out.push(Effect::Ping(cx.id));
                    }
                    Some(sent) if now.saturating_duration_since(sent) >= idle => {
                        if cx.log.allow(Class::Refusals, peer.ip, now) {
                            info!("{peer}: no answer to ping, disconnecting");
                        }
                        cx.end(Ending::Close {
                            code: close_code::GOING_AWAY,
                            reason: IDLE_TIMEOUT,
                            why: None,
                        });
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// Whether the address may try a password now (`login_attempts_per_minute`);
/// if not, the session ends with `too_many_attempts`.
fn may_try_password(cx: &mut Cx) -> bool {
    let ip = cx.peer.ip;
    if cx.addresses.may_try_password(ip, cx.now) {
        return true;
    }
    cx.log.abuse(Abuse::TooManyAttempts, ip, cx.now);
    let why = Rejection::new(
        ErrorCode::TooManyAttempts,
        "too many wrong passwords from your address: wait a minute and try again",
    );
    cx.end(Ending::policy("too many attempts", why));
    false
}

/// A wrong password: counted for the address, and the session ends.
fn wrong_password(cx: &mut Cx) {
    cx.addresses.wrong_password(cx.peer.ip, cx.now);
    if cx.may_log(Class::Refusals) {
        info!("{}: wrong password", cx.peer);
    }
    let why = Rejection::new(ErrorCode::WrongPassword, "wrong password");
    cx.end(Ending::policy("wrong password", why));
}

/// In a room with `admins`, once the name is known: the password frame
/// `given` must be the admin's own under an admin's name (or a look-alike
/// of it), the room's under any other. The role it gives; `None`: the
/// session ends (a wrong password, too many attempts from the address or
/// of admin passwords in the whole server).
fn admin_or_room_password(given: &str, name: &str, cx: &mut Cx) -> Option<Role> {
    if !may_try_password(cx) {
        return None;
    }
    let key = names::check(name).ok().map(|n| n.key);
    let check = key.map_or(Check::NotAnAdmin, |key| cx.admins.check(&key, given, cx.now));
    match check {
        Check::Right => Some(Role::Moderator),
        Check::NotAnAdmin if cx.room.check_password(given) => Some(Role::Member),
        Check::Busy => {
            if cx.may_log(Class::Refusals) {
                info!("{}: a moderator's password not checked: too many at once", cx.peer);
            }
            let why = Rejection::new(
                ErrorCode::TooManyAttempts,
                "too many moderator logins are being tried right now: wait a few seconds \
                 and try again",
            );
            cx.end(Ending::policy("too many attempts", why));
            None
        }
        Check::Wrong | Check::NotAnAdmin => {
            wrong_password(cx);
            None
        }
    }
}

/// Why a `Resume` that found no session is a reset.
const SESSION_OVER: &str = "your session had ended (it was away longer than the server keeps \
                            sessions, or the server restarted): this is a new one";

/// A `Resume` with a token that is not the session's: counted as a wrong
/// password of the address, and the session ends.
fn wrong_token(cx: &mut Cx) {
    cx.out.push(Effect::Count(Count::Resume("refused")));
    cx.addresses.wrong_password(cx.peer.ip, cx.now);
    if cx.may_log(Class::Refusals) {
        info!("{}: a resume with a wrong token", cx.peer);
    }
    let why = Rejection::new(
        ErrorCode::ResumeRefused,
        "that name is held by a session whose token is not this one",
    );
    cx.end(Ending::policy("wrong resume token", why));
}

fn refused_login(why: Rejection, cx: &mut Cx) {
    if cx.may_log(Class::Refusals) {
        info!("{}: login refused: {}", cx.peer, why.code.as_str());
    }
    cx.end(Ending::policy("login refused", why));
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

    use crate::cluster::Proposed;
    use crate::effect::{Outbound, To};
    use crate::history::History;
    use crate::room::{Link, Mode};

    /// What a session asked for its own connection in one step, read off
    /// its effects (room traffic goes to `World::out`).
    #[derive(Debug, PartialEq, Eq)]
    enum Action {
        Nothing,
        Refuse(Rejection),
        Ping,
        LoggedIn,
        Claim { name: String, key: String },
        Close { code: u16, reason: &'static str, why: Option<Rejection> },
        Moderate(crate::moderation::Action),
    }

    struct World {
        room: Room,
        out: Vec<Outbound>,
        proposed: Vec<Proposed>,
        addresses: Addresses,
        log: PeerLog,
        limits: Limits,
        now: Instant,
        rules: Rules,
        admins: Admins,
        /// `log_in` lets a second pass before each login.
        spaced: bool,
    }

    impl World {
        fn new(password: &str) -> Self {
            let config = Config::default();
            World {
                room: Room::new("t", password, History::new(0, 0), 1 << 20),
                out: Vec::new(),
                proposed: Vec::new(),
                addresses: Addresses::new(&config.limits),
                log: PeerLog::default(),
                limits: config.limits,
                now: Instant::now(),
                rules: Rules::default(),
                admins: Admins::default(),
                spaced: true,
            }
        }

        /// A room with the password `password` and these admins.
        fn with_admins(password: &str, admins: &[(&str, &str)]) -> Self {
            let admins: serde_json::Map<String, Value> = admins
                .iter()
                .map(|(name, pw)| {
                    (name.to_string(), crate::admins::hash_password(pw).unwrap().into())
                })
                .collect();
            let admins = crate::admins::of_json(&Value::Object(admins)).unwrap();
            World { admins: Admins::new(&admins), ..World::new(password) }
        }

        fn send(&mut self, session: &mut Session, id: ConnId, text: &str) -> Action {
            self.with(id, |cx| session.on_message(Message::text(text), cx))
        }

        fn tick(&mut self, session: &mut Session, last_heard: Instant, at: Instant) -> Action {
            let now = std::mem::replace(&mut self.now, at);
            let action = self.with(1, |cx| session.tick(last_heard, None, cx));
            self.now = now;
            action
        }

        fn with(&mut self, id: ConnId, f: impl FnOnce(&mut Cx)) -> Action {
            let mut actions = self.all(id, f);
            assert!(actions.len() <= 1, "one action per step: {actions:?}");
            actions.pop().unwrap_or(Action::Nothing)
        }

        /// Every action of one step, in order (cluster proposals go to
        /// `World::proposed`).
        fn all(&mut self, id: ConnId, f: impl FnOnce(&mut Cx)) -> Vec<Action> {
            let mut effects = Effects::new();
            let mut cx = Cx {
                room: &mut self.room,
                out: &mut effects,
                addresses: &mut self.addresses,
                log: &mut self.log,
                limits: &self.limits,
                id,
                peer: Peer::direct("192.0.2.1:5000".parse().unwrap()),
                charged: None,
                now: self.now,
                rules: &mut self.rules,
                wall: SystemTime::now(),
                admins: &mut self.admins,
            };
            f(&mut cx);
            let mut actions = Vec::new();
            for effect in effects {
                let this = match effect {
                    Effect::Send(message) => {
                        self.out.push(message);
                        continue;
                    }
                    Effect::Cluster(ClusterCall::Propose { what, .. }) => {
                        self.proposed.push(what);
                        continue;
                    }
                    Effect::Count(_) | Effect::Cluster(ClusterCall::Release { .. }) => continue,
                    Effect::Refuse { why, .. } => Action::Refuse(why),
                    Effect::Ping(_) => Action::Ping,
                    Effect::LoggedIn(_) => Action::LoggedIn,
                    Effect::Cluster(ClusterCall::Claim { name, key, .. }) => {
                        Action::Claim { name, key }
                    }
                    Effect::End { how: Ending::Close { code, reason, why }, .. } => {
                        Action::Close { code, reason, why }
                    }
                    Effect::Moderate { action, .. } => Action::Moderate(action),
                    other => panic!("not a session's effect: {other:?}"),
                };
                actions.push(this);
            }
            actions
        }
    }

    #[test]
    fn in_a_cluster_the_name_is_claimed_first() {
        let mut w = World::new("");
        w.room.set_mode(Mode::Node(Link::Down));
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        w.send(&mut s, 1, "");
        // The link is down: the login waits, the connection stays.
        assert_eq!(code(w.send(&mut s, 1, "alice")), Some(ErrorCode::ClusterUnavailable));
        w.room.set_mode(Mode::Node(Link::Up));
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
        t.opened(w.now, &w.limits);
        w.send(&mut t, 2, "");
        assert!(matches!(w.send(&mut t, 2, "carol"), Action::Claim { .. }));
        let taken = Rejection::new(ErrorCode::NameTaken, "taken");
        let action = w.with(2, |cx| t.claim_failed(taken, cx));
        assert!(matches!(action, Action::Close { code: close_code::POLICY, .. }), "{action:?}");
    }

    /// A session of a cluster node that has sent the password and `name`:
    /// the claim is out.
    fn claiming(w: &mut World, id: ConnId, name: &str) -> Session {
        w.room.set_mode(Mode::Node(Link::Up));
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        w.send(&mut s, id, "");
        assert!(matches!(w.send(&mut s, id, name), Action::Claim { .. }));
        s
    }

    #[test]
    fn what_arrives_during_the_claim_is_handled_after_it_in_order() {
        let mut w = World::new("");
        let mut s = claiming(&mut w, 1, "bob");
        let say = r#"{"msgType":"Broadcast","text":"b1"}"#;
        assert_eq!(w.send(&mut s, 1, say), Action::Nothing, "held");
        assert_eq!(w.send(&mut s, 1, r#"{"msgType":"OnlineUsers"}"#), Action::Nothing, "held");
        assert_eq!(code(w.send(&mut s, 1, "{")), None, "held, not parsed yet");
        assert!(w.proposed.is_empty() && w.out.is_empty());
        let actions = w.all(1, |cx| s.claimed("bob", cx));
        let codes: Vec<_> = actions.iter().map(code_of).collect();
        assert_eq!(actions[0], Action::LoggedIn);
        assert_eq!(codes[1..], [Some(ErrorCode::BadJson)], "{actions:?}");
        assert!(
            matches!(&w.proposed[..], [Proposed::Say { name, text }] if &**name == "bob" && text == "b1"),
            "{:?}",
            w.proposed
        );
        let list = w.out.iter().filter(|o| o.json.contains("OnlineUsers")).count();
        assert_eq!(list, 2, "the welcome's list and the answer: {:?}", w.out);
    }

    #[test]
    fn what_arrives_during_the_claim_is_bounded_and_never_dropped_silently() {
        let mut w = World::new("");
        w.limits.rate_limit_per_sec = 1;
        w.limits.rate_limit_burst = 40;
        let mut s = claiming(&mut w, 1, "bob");
        let ask = r#"{"msgType":"OnlineUsers"}"#;
        for i in 0..MAX_HELD {
            assert_eq!(w.send(&mut s, 1, ask), Action::Nothing, "{i}");
        }
        assert_eq!(code(w.send(&mut s, 1, ask)), Some(ErrorCode::LoginPending), "past the count");
        // Charged when they came: all handled once the name is claimed.
        let actions = w.all(1, |cx| s.claimed("bob", cx));
        let lists = w.out.iter().filter(|o| o.json.contains("OnlineUsers")).count();
        assert_eq!(lists, 1 + MAX_HELD, "the welcome's and each answer: {actions:?}");
        assert!(s.is_chatting());

        // Past the rate limit while held: refused at once.
        w.limits.rate_limit_burst = 10;
        let mut r = claiming(&mut w, 3, "dave");
        let codes: Vec<_> = (0..10).map(|_| code(w.send(&mut r, 3, ask))).collect();
        // The password and the name took two tokens.
        assert_eq!(codes[..8], [None; 8]);
        assert_eq!(codes[8..], [Some(ErrorCode::RateLimited); 2]);
        w.limits.rate_limit_burst = 40;

        // Past max_message_bytes in all.
        let mut t = claiming(&mut w, 2, "carol");
        let big = format!(
            r#"{{"msgType":"Broadcast","text":"{}"}}"#,
            "x".repeat(w.limits.max_message_bytes - 40)
        );
        assert_eq!(w.send(&mut t, 2, &big), Action::Nothing);
        assert_eq!(code(w.send(&mut t, 2, &big)), Some(ErrorCode::LoginPending), "past the bytes");

        // A claim refused for another reason than the name: back to the
        // name, and the refusal says what was not delivered.
        let why = Rejection::cluster_unavailable();
        match w.with(2, |cx| t.claim_failed(why, cx)) {
            Action::Refuse(why) => {
                assert_eq!(why.code, ErrorCode::ClusterUnavailable);
                assert!(why.text.contains("1 message sent after the name"), "{}", why.text);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(w.send(&mut t, 2, "carol"), Action::Claim { .. }),
            "asks for the name again"
        );
        // The name taken: the login refusal, and the held messages with it.
        let mut u = claiming(&mut w, 3, "dave");
        w.send(&mut u, 3, ask);
        let taken = Rejection::new(ErrorCode::NameTaken, "taken");
        let action = w.with(3, |cx| u.claim_failed(taken, cx));
        assert!(matches!(action, Action::Close { code: close_code::POLICY, .. }), "{action:?}");
    }

    #[test]
    fn messages_held_during_the_claim_pay_their_bytes_too() {
        // Found by the attack review: they skipped the byte budget.
        let mut w = World::new("");
        w.limits.rate_limit_bytes_per_sec = 1000;
        w.limits.rate_limit_bytes_burst = w.limits.max_message_bytes as u32;
        let mut s = claiming(&mut w, 1, "bob");
        let say = |tag: &str| {
            let shell = r#"{"msgType":"Broadcast","text":""}"#.len();
            let n = w.limits.max_message_bytes - shell - 200;
            format!(r#"{{"msgType":"Broadcast","text":"{tag}{}"}}"#, "x".repeat(n))
        };
        let (held, after) = (say("held"), say("after"));
        assert_eq!(w.send(&mut s, 1, &held), Action::Nothing);
        w.all(1, |cx| s.claimed("bob", cx));
        // The same instant: the held one took the burst.
        assert_eq!(code(w.send(&mut s, 1, &after)), Some(ErrorCode::RateLimited));
        let sent = w.proposed.iter().filter(|p| matches!(p, Proposed::Say { .. })).count();
        assert_eq!(sent, 1, "one burst's worth of bytes at once");
    }

    /// A reload: the rate limit read from the limits at every message,
    /// the bucket added or dropped as rate limiting is turned on or off.
    #[test]
    fn a_reload_changes_the_rate_limit_of_open_sessions() {
        let mut w = World::new("");
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        w.send(&mut s, 1, "");
        assert_eq!(w.send(&mut s, 1, "alice"), Action::LoggedIn);
        let say = r#"{"msgType":"Broadcast","text":"hi"}"#;
        let refused = |w: &mut World, s: &mut Session, n: usize| {
            (0..n).filter(|_| code(w.send(s, 1, say)) == Some(ErrorCode::RateLimited)).count()
        };
        w.limits.rate_limit_per_sec = 0;
        s.limits_changed(&w.limits, w.now);
        assert_eq!(refused(&mut w, &mut s, 100), 0, "off");
        (w.limits.rate_limit_per_sec, w.limits.rate_limit_burst) = (1, 3);
        s.limits_changed(&w.limits, w.now);
        assert_eq!(refused(&mut w, &mut s, 4), 1, "on again: a full bucket of the new burst");
        w.limits.rate_limit_burst = 40;
        s.limits_changed(&w.limits, w.now);
        assert_eq!(refused(&mut w, &mut s, 1), 1, "a larger burst fills at the rate");
        assert!(s.is_chatting());
        // Not opened yet: nothing to change.
        let mut t = Session::new();
        t.limits_changed(&w.limits, w.now);
        assert!(t.bucket.is_none());
    }

    #[test]
    fn a_session_stays_small() {
        // 64 bytes before a claim (boxed, in `Login::Claiming`):
        // the phase (40: chatting holds the keep-alive's and the byte budget's
        // moments) and the message bucket (24).
        assert!(std::mem::size_of::<Session>() <= 64, "{}", std::mem::size_of::<Session>());
    }

    fn code_of(action: &Action) -> Option<ErrorCode> {
        match action {
            Action::Refuse(why) | Action::Close { why: Some(why), .. } => Some(why.code),
            _ => None,
        }
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
        s.opened(w.now, &w.limits);
        assert!(s.is_unauthenticated());
        assert_eq!(w.send(&mut s, 1, "963\n"), Action::Nothing);
        assert_eq!(w.send(&mut s, 1, "alice\r\n"), Action::LoggedIn);
        assert!(s.is_chatting() && !s.is_unauthenticated());
        assert_eq!(w.room.name_of(1), Some("alice"));
        assert_eq!(code(w.send(&mut s, 1, "{")), Some(ErrorCode::BadJson));
        assert_eq!(w.send(&mut s, 1, r#"{"msgType":"Broadcast","text":"hi"}"#), Action::Nothing);
        assert!(w.out.iter().any(|o| o.json.contains("\"hi\"")));
        assert!(!s.is_unauthenticated());
    }

    fn role(s: &Session) -> Option<Role> {
        match s.phase {
            Phase::Chatting { role, .. } => Some(role),
            _ => None,
        }
    }

    /// Logs in with `password` and `name` on a new session: the last action.
    fn log_in(w: &mut World, id: ConnId, password: &str, name: &str) -> (Session, Action) {
        let mut s = Session::new();
        if w.spaced {
            // Past the bound on admin password checks in the whole server.
            w.now += Duration::from_secs(1);
        }
        s.opened(w.now, &w.limits);
        assert_eq!(w.send(&mut s, id, password), Action::Nothing, "checked with the name");
        let action = w.send(&mut s, id, name);
        (s, action)
    }

    #[test]
    fn an_admin_name_takes_the_admins_own_password_and_no_other() {
        let mut w = World::with_admins("963", &[("alice", "her own"), ("carol", "carol's")]);
        let (s, action) = log_in(&mut w, 1, "her own\n", "alice\r\n");
        assert_eq!((action, role(&s)), (Action::LoggedIn, Some(Role::Moderator)));
        // The room's password, another admin's, or hers under another name.
        for (id, password, name) in
            [(2, "963", "carol"), (3, "her own", "carol"), (4, "her own", "bob")]
        {
            let (s, action) = log_in(&mut w, id, password, name);
            assert_eq!(code(action), Some(ErrorCode::WrongPassword), "{password} {name}");
            assert_eq!(role(&s), None);
        }
        // A look-alike of an admin's name is that admin: their password.
        w.room.leave(1);
        for look_alike in ["ALICE", "a1ice", "\u{430}lice"] {
            let (_, action) = log_in(&mut w, 5, "963", look_alike);
            assert_eq!(code(action), Some(ErrorCode::WrongPassword), "{look_alike}");
        }
        let (s, action) = log_in(&mut w, 5, "her own", "Alice");
        assert_eq!((action, role(&s)), (Action::LoggedIn, Some(Role::Moderator)));
        // Everyone else: the room's password, as a member.
        let (s, action) = log_in(&mut w, 6, "963", "bob");
        assert_eq!((action, role(&s)), (Action::LoggedIn, Some(Role::Member)));
        let (_, action) = log_in(&mut w, 7, "000", "dave");
        assert_eq!(code(action), Some(ErrorCode::WrongPassword), "refused at the name");
        let mut out = Effects::new();
        w.room.flush_presence(&mut out);
        let welcomes: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Send(o) if o.json.contains("ServerName") => Some((o.to.clone(), &*o.json)),
                _ => None,
            })
            .collect();
        assert_eq!(
            welcomes,
            [
                (To::Many(vec![6]), r#"{"ServerName":"t"}"#),
                (To::Many(vec![5]), r#"{"ServerName":"t","role":"moderator"}"#),
            ]
        );
    }

    #[test]
    fn wrong_admin_passwords_count_for_the_address_and_checks_are_bounded_for_all() {
        let mut w = World::with_admins("", &[("alice", "pw")]);
        let allowed = w.limits.login_attempts_per_minute as usize;
        for i in 0..allowed {
            let (_, action) = log_in(&mut w, i, "guess", "alice");
            assert_eq!(code(action), Some(ErrorCode::WrongPassword), "{i}");
        }
        let (_, action) = log_in(&mut w, 99, "pw", "alice");
        assert_eq!(code(action), Some(ErrorCode::TooManyAttempts), "not checked");
        let (_, action) = log_in(&mut w, 99, "", "bob");
        assert_eq!(code(action), Some(ErrorCode::TooManyAttempts), "any name from there");

        // From many addresses: a few checks a second in the whole server.
        let mut w = World::with_admins("", &[("alice", "pw")]);
        (w.limits.login_attempts_per_minute, w.spaced) = (0, false);
        let codes: Vec<_> = (0..6).map(|i| code(log_in(&mut w, i, "guess", "alice").1)).collect();
        let busy = Some(ErrorCode::TooManyAttempts);
        assert_eq!(
            codes,
            [Some(ErrorCode::WrongPassword); 4].into_iter().chain([busy, busy]).collect::<Vec<_>>()
        );
        let (s, _) = log_in(&mut w, 10, "", "bob");
        assert_eq!(role(&s), Some(Role::Member), "members are not held up");
        w.now += Duration::from_secs(1);
        let (s, _) = log_in(&mut w, 11, "pw", "alice");
        assert_eq!(role(&s), Some(Role::Moderator));
    }

    #[test]
    fn only_a_moderator_moderates() {
        let mut w = World::with_admins("", &[("alice", "pw"), ("carol", "pw2")]);
        let (mut alice, _) = log_in(&mut w, 1, "pw", "alice");
        let (mut bob, _) = log_in(&mut w, 2, "", "bob");
        let kick =
            r#"{"msgType":"Moderate","cmd":"kick","target":"bob","for_secs":600,"reason":"spam"}"#;
        assert_eq!(code(w.send(&mut bob, 2, kick)), Some(ErrorCode::NotAModerator));
        assert!(bob.is_chatting(), "stays open");
        match w.send(&mut alice, 1, kick) {
            Action::Moderate(crate::moderation::Action::Kick { target, for_secs, reason }) => {
                assert_eq!((&*target, for_secs, &*reason), ("bob", Some(600), "spam"));
            }
            other => panic!("{other:?}"),
        }
        for (request, expected) in [
            (
                r#"{"msgType":"Moderate","cmd":"kick","target":"Car0l"}"#,
                ErrorCode::ModerationRefused,
            ),
            (
                r#"{"msgType":"Moderate","cmd":"ban","target":"10.0.0.0/8"}"#,
                ErrorCode::ModerationRefused,
            ),
            (r#"{"msgType":"Moderate","cmd":"fly"}"#, ErrorCode::InvalidField),
            (r#"{"msgType":"Moderate","cmd":"kick"}"#, ErrorCode::InvalidField),
            (
                r#"{"msgType":"Moderate","cmd":"mute","target":"bob","for_secs":-1}"#,
                ErrorCode::InvalidField,
            ),
            (r#"{"msgType":"Moderate"}"#, ErrorCode::MissingField),
        ] {
            assert_eq!(code(w.send(&mut alice, 1, request)), Some(expected), "{request}");
        }
        assert!(alice.is_chatting());
    }

    #[test]
    fn in_a_cluster_a_moderator_is_claimed_as_one_and_may_choose_again() {
        let mut w = World::with_admins("963", &[("alice", "pw")]);
        w.room.set_mode(Mode::Node(Link::Down));
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        w.send(&mut s, 1, "pw");
        assert_eq!(code(w.send(&mut s, 1, "alice")), Some(ErrorCode::ClusterUnavailable));
        w.room.set_mode(Mode::Node(Link::Up));
        assert!(matches!(w.send(&mut s, 1, "alice"), Action::Claim { .. }), "the password kept");
        let why = Rejection::cluster_unavailable();
        w.with(1, |cx| s.claim_failed(why, cx));
        assert!(matches!(w.send(&mut s, 1, "alice"), Action::Claim { .. }), "kept again");
        assert_eq!(w.with(1, |cx| s.claimed("alice", cx)), Action::LoggedIn);
        assert_eq!(role(&s), Some(Role::Moderator));
    }

    #[test]
    fn a_held_password_is_never_shown() {
        let step = Login::Name(Password::Held(Box::new("hunter2".into())));
        assert!(!format!("{step:?}").contains("hunter2"), "{step:?}");
    }

    #[test]
    fn wrong_passwords_are_throttled_per_address() {
        let mut w = World::new("963");
        let allowed = w.limits.login_attempts_per_minute as usize;
        for i in 0..allowed {
            let mut s = Session::new();
            s.opened(w.now, &w.limits);
            assert_eq!(code(w.send(&mut s, i, "000")), Some(ErrorCode::WrongPassword), "{i}");
        }
        // Past the limit even the right password is not checked.
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        assert_eq!(code(w.send(&mut s, 99, "963")), Some(ErrorCode::TooManyAttempts));
        // A minute later the address may try again.
        w.now += Duration::from_secs(61);
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        assert_eq!(w.send(&mut s, 100, "963"), Action::Nothing);
    }

    #[test]
    fn logins_are_throttled_per_address() {
        let mut w = World::new("");
        let allowed = w.limits.logins_per_minute_per_ip as usize;
        assert!(allowed > 0, "on by default");
        let mut sessions = Vec::new();
        for i in 0..allowed {
            let mut s = Session::new();
            s.opened(w.now, &w.limits);
            w.send(&mut s, i, "");
            w.send(&mut s, i, &format!("user{i}"));
            assert!(s.is_chatting(), "{i}");
            sessions.push(s);
        }
        // Past the rate the name is not tried.
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        w.send(&mut s, 99, "");
        assert_eq!(code(w.send(&mut s, 99, "late")), Some(ErrorCode::TooManyLogins));
        // The bucket refills at the rate: one login in 60 / rate seconds.
        w.now += Duration::from_secs(60) / allowed as u32;
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        w.send(&mut s, 100, "");
        w.send(&mut s, 100, "later");
        assert!(s.is_chatting());
    }

    #[test]
    fn a_message_must_arrive_whole_within_the_timeout() {
        let mut w = World::new("");
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        let (since, timeout) = (w.now, w.limits.message_timeout);
        w.now = since + timeout - Duration::from_millis(1);
        assert_eq!(w.with(1, |cx| s.tick(since, Some(since), cx)), Action::Nothing);
        w.now = since + timeout;
        match w.with(1, |cx| s.tick(since, Some(since), cx)) {
            Action::Close { code: close_code::POLICY, why: Some(why), .. } => {
                assert_eq!(why.code, ErrorCode::MessageTimeout);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fragments_without_a_message_flood_too() {
        let mut w = World::new("");
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        let burst = w.limits.rate_limit_burst;
        assert_eq!(w.with(1, |cx| s.on_fragments(2 * burst - 1, cx)), Action::Nothing);
        match w.with(1, |cx| s.on_fragments(1, cx)) {
            Action::Close { why: Some(why), .. } => assert_eq!(why.code, ErrorCode::RateLimited),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_frames_cost_tokens_too() {
        let mut w = World::new("");
        w.limits.rate_limit_per_sec = 1;
        w.limits.rate_limit_burst = 5;
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
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
    fn messages_cost_their_bytes_and_a_refused_one_costs_none() {
        let mut w = World::new("");
        w.limits.rate_limit_bytes_per_sec = 1000;
        w.limits.rate_limit_bytes_burst = 3000;
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        // Logging in costs no bytes.
        w.send(&mut s, 1, &"p".repeat(2000));
        assert_eq!(w.send(&mut s, 1, "bob"), Action::LoggedIn);
        let say = |n: usize| {
            let shell = r#"{"msgType":"Broadcast","text":""}"#.len();
            format!(r#"{{"msgType":"Broadcast","text":"{}"}}"#, "x".repeat(n - shell))
        };
        assert_eq!(w.send(&mut s, 1, &say(1000)), Action::Nothing);
        assert_eq!(w.send(&mut s, 1, &say(1500)), Action::Nothing);
        // 500 bytes left: a message of 1000 is refused, not delivered...
        match w.send(&mut s, 1, &say(1000)) {
            Action::Refuse(why) => {
                assert_eq!(why.code, ErrorCode::RateLimited);
                assert!(why.text.contains("too many bytes"), "{}", why.text);
                assert!(why.text.contains("message of 1000 bytes"), "{}", why.text);
            }
            other => panic!("{other:?}"),
        }
        // ...and costs nothing: 500 still pass.
        assert_eq!(w.send(&mut s, 1, &say(500)), Action::Nothing);
        assert_eq!(code(w.send(&mut s, 1, &say(100))), Some(ErrorCode::RateLimited));
        let binary = w.with(1, |cx| s.on_message(Message::binary(vec![0u8; 10]), cx));
        assert_eq!(code(binary), Some(ErrorCode::RateLimited), "binary frames cost bytes too");
        // Refilled at the rate.
        w.now += Duration::from_secs(1);
        assert_eq!(w.send(&mut s, 1, &say(1000)), Action::Nothing);
        let sent = w.out.iter().filter(|o| o.json.contains("\"Broadcast\"")).count();
        assert_eq!(sent, 4, "the refused ones were not delivered");
        assert!(s.is_chatting(), "refused for bytes, never a flood");

        // Off at a rate of 0.
        w.limits.rate_limit_bytes_per_sec = 0;
        assert_eq!(w.send(&mut s, 1, &say(5000)), Action::Nothing);
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
        s.opened(w.now, &w.limits);
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
        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        let late = w.now + w.limits.login_timeout;
        assert_eq!(code(w.tick(&mut s, w.now, late)), Some(ErrorCode::LoginTimeout));

        let mut s = Session::new();
        s.opened(w.now, &w.limits);
        w.send(&mut s, 1, "");
        w.send(&mut s, 1, "carol");
        let idle = w.limits.idle_timeout.unwrap();
        assert_eq!(w.tick(&mut s, w.now, w.now + idle), Action::Ping);
        assert!(matches!(
            w.tick(&mut s, w.now, w.now + idle * 2),
            Action::Close { code: close_code::GOING_AWAY, .. }
        ));
    }
}
