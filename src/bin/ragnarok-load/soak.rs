//! The soak scenario: for `-t` seconds about `-n` users stay online while
//! some leave and new ones join every second; many of them broadcast at a
//! steady rate and send private messages to random others; a few slow
//! readers at a time stop reading until the server cuts them off; bad
//! inputs of every kind are mixed in, in running sessions and on fresh
//! connections. Every answer is checked, and so is every delivery:
//!
//! - **Broadcasts.** One user, the reference, is online from the first
//!   message to the last: the order in which it receives broadcasts is the
//!   server's one global order. (A sequence number given by the load
//!   generator would not be: two users' messages sent at the same moment
//!   are accepted in whichever order the server reads its sockets.) Every
//!   other user's broadcasts, the history replayed when it joined followed
//!   by the live ones, must be one unbroken run of that order: nothing
//!   missing (lost), nothing twice or out of place (reordered). The run
//!   starts right after what was accepted before the user joined (a joiner
//!   who got no history while the room had some missed something) and, for
//!   a user who leaves, reaches at least its own last broadcast, sent just
//!   before its Close. Users cut off by the server (slow readers, probes)
//!   must have an unbroken prefix. Every broadcast sent reaches the
//!   reference exactly once, each sender's in the order sent.
//! - **Private messages** between random pairs arrive exactly once and in
//!   order, except those the server refused with `user_offline` because the
//!   target had left (never while it was still online): per pair, delivered
//!   plus refused equals sent. A tenth go to users who are leaving or have
//!   just left, so that both outcomes occur.
//! - **Slow readers** stop reading after login while other users send them
//!   large private messages (so that the cut-off comes in seconds, not
//!   minutes); once a `UsersLeft` names them, they read again and must find
//!   an unbroken prefix, `Error` `slow_reader` and Close 1008.
//! - **Bad inputs.** In a session (answered with an `Error`, the session
//!   goes on): invalid JSON, a JSON array, an unknown `msgType`, missing and
//!   non-string fields, an empty and an oversize public key, a binary frame,
//!   a private message to nobody. On their own connections: a wrong
//!   password (`wrong_password`, 1008), a message over `max_message_bytes`
//!   (`message_too_big`, 1009), a ping flood while logged in and not reading
//!   (`rate_limited`, 1008), invalid UTF-8 (1007), an unmasked frame (1002),
//!   a ping flood before login (`rate_limited`, 1008), and half-open
//!   handshakes: a connection that sends nothing, half an HTTP request (both
//!   closed by the server after `handshake_timeout_secs`), a password
//!   without a name (`login_timeout`, 1008, after `login_timeout_secs`).
//! - **The server process** (`--pid`): RSS (VmRSS) and open descriptors
//!   (`/proc/PID/fd`) at the start, every second, and after each of the
//!   two cycles the run is cut in, when everyone has left and it has been
//!   quiet for 5 s. Descriptors must be back to their number at the start
//!   after each cycle; RSS after the second cycle within 20 % + 2 MiB of
//!   RSS after the first (see `CYCLES` for why not of the start).
//!
//! - **Cuts** (`--cuts R`, issue 19): the chat users connect through a
//!   relay in the load generator (`cut.rs`) that drops the TCP connections
//!   of random users, R times a second, with no Close; they reconnect after
//!   up to `--cut-away` ms and `Resume`. Every check above holds across the
//!   cuts, and by `seq` nothing comes twice; a reset, a message before
//!   `Resumed`, a cut user named in a `UsersLeft` or `UsersJoined` or
//!   missing from a full `OnlineUsers` fail the run. A quarter of the users
//!   log in the old way and are never cut (no `seq` must reach them).
//!
//! The load stays inside the server's default limits, all from 127.0.0.1:
//! each client keeps to 5 messages a second (burst 10; the server allows 20,
//! burst 40) and 16 KiB of them a second (burst 64 KiB; the server allows
//! 32 KiB and 128 KiB), at most 12 connections are unauthenticated at once (the
//! server's `max_handshakes_per_ip` is 16), and a wrong password goes out
//! once every 10 s (`login_attempts_per_minute` is 10). Only
//! `max_connections_per_ip` (64) must be raised above `-n` plus about 20,
//! and the per-address rates of new connections and logins (120 and 30 a
//! minute) turned off: the churn of `-n` users from one address is more.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Deserialize;
use slab::Slab;

use crate::{Options, frame, not_yet, sample};

/// The soak's own options (`--rate`, `--private-rate`, `--slow`,
/// `--max-message-bytes`, `--seed`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Broadcasts per second, all users together.
    rate: f64,
    /// Private messages per second, all users together.
    private_rate: f64,
    /// Slow readers at a time.
    slow: usize,
    /// The server's `max_message_bytes`: the oversize probe sends one more.
    max_message_bytes: usize,
    seed: Option<u64>,
    /// Cuts per second (`--cuts`): 0 is no relay, every user the old way.
    cuts: f64,
    /// A cut user reconnects after a random delay up to this.
    cut_away: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rate: 50.0,
            private_rate: 20.0,
            slow: 3,
            max_message_bytes: 16384,
            seed: None,
            cuts: 0.0,
            cut_away: Duration::from_millis(2000),
        }
    }
}

impl Settings {
    pub fn takes(arg: &str) -> bool {
        matches!(
            arg,
            "--rate"
                | "--private-rate"
                | "--slow"
                | "--max-message-bytes"
                | "--seed"
                | "--cuts"
                | "--cut-away"
        )
    }

    pub fn set(&mut self, arg: &str, value: &str) -> Result<(), String> {
        let bad = |e: &dyn std::fmt::Display| format!("{arg} {value}: {e}");
        match arg {
            "--rate" => self.rate = value.parse().map_err(|e| bad(&e))?,
            "--private-rate" => self.private_rate = value.parse().map_err(|e| bad(&e))?,
            "--slow" => self.slow = value.parse().map_err(|e| bad(&e))?,
            "--max-message-bytes" => {
                self.max_message_bytes = value.parse().map_err(|e| bad(&e))?;
            }
            "--seed" => self.seed = Some(value.parse().map_err(|e| bad(&e))?),
            "--cuts" => {
                self.cuts = value.parse().map_err(|e| bad(&e))?;
                if !(self.cuts.is_finite() && self.cuts >= 0.0) {
                    return Err(format!("{arg} {value}: cuts per second, 0 or more"));
                }
            }
            "--cut-away" => {
                let ms: u64 = value.parse().map_err(|e| bad(&e))?;
                self.cut_away = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
        Ok(())
    }
}

/// Each client's own pace: a quarter of the server's default rate limit
/// (20 a second, burst 40), so that nothing is ever `rate_limited`.
const CLIENT_RATE: f64 = 5.0;
const CLIENT_BURST: f64 = 10.0;
/// And half of its default byte budget (32 KiB a second, burst 128 KiB):
/// the large private messages to the slow readers would pass it otherwise.
const CLIENT_BYTE_RATE: f64 = 16384.0;
const CLIENT_BYTE_BURST: f64 = 65536.0;
/// Share of the users that leave (and are replaced) every second.
const CHURN: f64 = 0.025;
/// Share of the private messages sent to a user who is leaving or has just
/// left (the others go to users online).
const LATE_PRIVATE: f64 = 0.1;
/// In-session bad inputs per second, all users together.
const BAD_RATE: f64 = 2.0;
/// A new probe (bad input on its own connection) this often.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Wrong passwords at most this often: 6 a minute, under the server's
/// default `login_attempts_per_minute` of 10 (past it every login from the
/// address would be refused for a minute, the soak's own users included).
const WRONG_PASSWORD_EVERY: Duration = Duration::from_secs(10);
/// Connections not logged in yet, at most (the server's default
/// `max_handshakes_per_ip` is 16); joins in flight among them.
const UNAUTHENTICATED_MAX: usize = 12;
const JOINS_IN_FLIGHT: usize = 8;
/// Half-open probes at a time (each holds a handshake slot until timed out).
const HALF_OPEN_MAX: usize = 3;
/// Large private messages per second sent to each stalled slow reader, by
/// many senders (each within its own budgets): with `max_message_bytes` at
/// 16 KiB a feed is 8 KiB, so 60 a second (~480 KB/s) cuts a slow reader
/// off within seconds (20 a second took ~20 s, most of a short soak).
const FEED_RATE: f64 = 60.0;
const FEED_BYTES: usize = 32 * 1024;
/// Pings in the flood while logged in and before login (past the burst: a
/// flood either way).
const FLOOD_PINGS_CHATTING: usize = 200;
const FLOOD_PINGS_LOGIN: usize = 200;
/// How long a flooding probe goes without reading.
const FLOOD_PAUSE: Duration = Duration::from_secs(1);
/// A joiner must be logged in by then.
const LOGIN_DEADLINE: Duration = Duration::from_secs(30);
/// A probe without its answer by then is counted as unanswered (covers the
/// server's default `login_timeout_secs` of 60 twice over).
const PROBE_DEADLINE: Duration = Duration::from_secs(150);
/// After the run: quiet before the last sample.
const QUIET: Duration = Duration::from_secs(5);
/// RSS after the run may exceed the baseline by this much (allocator slack).
const RSS_SLACK_PERCENT: u64 = 20;
const RSS_SLACK_KIB: u64 = 2048;
/// The run is cut in this many equal cycles, each ending with everyone gone
/// and a sample of the server. (RSS is judged between cycles, not against
/// the start: glibc keeps the heap it grew to after the memory is freed. A
/// 60-s, 200-user soak left 9.3 MB of heap with 0.44 MB in use, and
/// `malloc_trim(0)` took RSS from 12.5 MiB to 4.2 MiB. What a leak leaves
/// grows with the work done; what the allocator keeps does not.)
const CYCLES: usize = 2;
/// Details kept for the report (the counters count everything).
const MAX_DETAILS: usize = 40;
/// With `--cuts`: the share of users that log in the old way (a bare name):
/// never cut, they check that the old protocol is unchanged (no `seq`, no
/// `resume`) and that they, too, never see a cut user leave or join.
const PLAIN_SHARE: f64 = 0.25;
/// A cut event cuts one user, or with this chance 2 to 5 at once.
const CUT_GROUP: f64 = 0.2;
/// A user is cut only after this long online (its join has reached
/// everyone), and not again until this long after it is back.
const CUT_AFTER: Duration = Duration::from_secs(1);
/// The relay must have cut a connection by then.
const CUT_DEADLINE: Duration = Duration::from_secs(10);
/// With `--cuts`, cuts and slow readers take turns: slow readers are fed
/// megabytes of private messages to be cut off (about 10 s at the
/// defaults), and the server keeps only the room's last 1 MiB for resuming
/// (private messages included), so a user away while they are fed would
/// rightly get a reset. Each cycle starts with this long of cuts (at most
/// half the cycle's sending), then the slow readers' turn (`--slow` of
/// them, started once nobody is away, fed until all are cut off), and
/// again.
const CUT_TURN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Online from first to last; its broadcasts are the global order.
    Reference,
    /// Joins, chats, sends bad inputs now and then, leaves.
    Normal,
    /// A ping flood before login, not read: pings cost tokens before login
    /// too, so it ends as a flood.
    FloodFirst,
    /// Logs in, stops reading until cut off.
    Slow,
    WrongPassword,
    Oversize,
    PingFlood,
    BadUtf8,
    Unmasked,
    /// Connects and sends nothing.
    Silent,
    /// Sends half an HTTP request.
    HalfRequest,
    /// Sends the password, never the name.
    NoName,
}

impl Kind {
    fn chats(self) -> bool {
        matches!(self, Kind::Reference | Kind::Normal)
    }

    fn prefix(self) -> char {
        match self {
            Kind::Reference | Kind::Normal => 'u',
            Kind::Slow => 's',
            _ => 'p',
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Reference => "reference",
            Kind::Normal => "user",
            Kind::FloodFirst => "ping flood before login",
            Kind::Slow => "slow reader",
            Kind::WrongPassword => "wrong password",
            Kind::Oversize => "oversize message",
            Kind::PingFlood => "ping flood while logged in",
            Kind::BadUtf8 => "invalid UTF-8",
            Kind::Unmasked => "unmasked frame",
            Kind::Silent => "silent connection",
            Kind::HalfRequest => "half an HTTP request",
            Kind::NoName => "password, no name",
        }
    }

    /// The `Error` code and Close code that must end a probe.
    fn expected_end(self) -> Option<(Option<&'static str>, u16)> {
        Some(match self {
            Kind::Slow => (Some("slow_reader"), 1008),
            Kind::WrongPassword => (Some("wrong_password"), 1008),
            Kind::Oversize => (Some("message_too_big"), 1009),
            Kind::PingFlood | Kind::FloodFirst => (Some("rate_limited"), 1008),
            Kind::BadUtf8 => (None, 1007),
            Kind::Unmasked => (None, 1002),
            Kind::NoName => (Some("login_timeout"), 1008),
            _ => return None,
        })
    }
}

/// Probes in turn, one a second (kinds not possible at the moment skipped).
const PROBES: [Kind; 9] = [
    Kind::WrongPassword,
    Kind::Oversize,
    Kind::Silent,
    Kind::PingFlood,
    Kind::BadUtf8,
    Kind::HalfRequest,
    Kind::FloodFirst,
    Kind::Unmasked,
    Kind::NoName,
];

/// In-session bad inputs and the `Error` code each must get back.
const BAD_INPUTS: [(&str, &str); 10] = [
    (r#"{"msgType":"Broadcast","text":"#, "bad_json"),
    ("[1,2,3]", "bad_json"),
    (r#"{"msgType":"Dance","text":"x"}"#, "unknown_type"),
    (r#"{"text":"no type"}"#, "missing_field"),
    (r#"{"msgType":"Broadcast"}"#, "missing_field"),
    (r#"{"msgType":"Broadcast","text":42}"#, "invalid_field"),
    (r#"{"msgType":"PublicKey","key":""}"#, "invalid_field"),
    ("KEY_TOO_LARGE", "key_too_large"),
    ("BINARY", "binary_unsupported"),
    ("PM_TO_NOBODY", "user_offline"),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Upgrading,
    LoggingIn,
    Chatting,
    /// Sent Close; reading until the server's.
    Leaving,
    /// `--cuts`: the relay was told to cut the connection; reading what
    /// still comes until the end of the stream.
    Cut,
    /// The connection is gone; a new one at `Client::reconnect_at`.
    Away,
    /// Reconnected: the password and `Resume` sent; waiting for `Resumed`,
    /// the missed messages and the snapshot (`OnlineUsers`).
    Resuming,
}

struct Client {
    idx: u32,
    name: String,
    kind: Kind,
    phase: Phase,
    socket: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    inbox: Vec<u8>,
    outbox: VecDeque<u8>,
    /// Not reading (a slow reader, a flooding probe): events are ignored.
    stalled: bool,
    /// Read again at this time (flooding probes).
    resume_at: Option<Instant>,
    /// Never writes (the silent probe: not even a TLS hello).
    mute: bool,
    write_failed: bool,
    dirty: bool,
    started: Instant,
    chatting_since: Option<Instant>,
    /// The client's own pace: messages, and bytes of them.
    tokens: f64,
    bytes: f64,
    refilled: Instant,
    /// Broadcasts sent (the next one's sequence number).
    sent: u32,
    stream: Stream,
    /// Error codes owed for bad inputs sent in the session, in order.
    expect: VecDeque<&'static str>,
    /// Errors that answered nothing we sent: a probe's last words, or
    /// unexpected.
    errors: Vec<String>,
    pings: usize,
    pongs: usize,
    /// A slow reader's name was in a `UsersLeft`.
    cut_off: bool,
    /// `--cuts`: logs in with `{"msgType":"Login"}` and may be cut.
    resumable: bool,
    /// What the welcome (or `Resumed`) gave to resume with.
    token: Option<String>,
    epoch: Option<String>,
    /// The highest `seq` seen, of any message.
    max_seq: Option<u64>,
    /// The `seq` this connection's `Resume` gave.
    resume_seq: Option<u64>,
    /// Times cut; since when it is away (cut and not back).
    cuts: u32,
    away_since: Option<Instant>,
    reconnect_at: Option<Instant>,
    /// This connection is a resume, begun then.
    resuming: Option<Instant>,
    /// After `Resumed`: the `missed` promised, and the messages with a
    /// `seq` counted since.
    replay: Option<(u64, u64)>,
    /// `sent` when it last sent something that may be answered (a private
    /// message, a bad input): it is cut only once its own broadcast sent
    /// after that has come back (the answer, sent before it, is in).
    answerable_mark: Option<u32>,
    /// The number of its own latest broadcast it has received.
    echoed: Option<u32>,
    /// A reset gave it a new token: its session had ended, and the others
    /// saw it join again (as the protocol says).
    rejoined: bool,
}

impl Client {
    /// A token and `bytes` for a message, if the client's pace has both.
    fn take_token(&mut self, now: Instant, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * CLIENT_RATE).min(CLIENT_BURST);
        self.bytes = (self.bytes + elapsed * CLIENT_BYTE_RATE).min(CLIENT_BYTE_BURST);
        if self.tokens >= 1.0 && self.bytes >= bytes as f64 {
            self.tokens -= 1.0;
            self.bytes -= bytes as f64;
            true
        } else {
            false
        }
    }

    fn send_text(&mut self, text: &str) {
        frame(1, text.as_bytes(), &mut self.outbox);
    }
}

/// A user's broadcasts, checked against the global order as the reference
/// receives it.
#[derive(Default)]
struct Stream {
    /// Index in the global order of the next broadcast due to this user.
    next: Option<usize>,
    /// Received and not yet compared (the reference has not had them yet),
    /// with the history flag.
    pending: VecDeque<(u64, bool)>,
    /// Its first broadcast was a live one (no history): where in the order.
    joined_live_at: Option<usize>,
    /// The id of its own last broadcast, sent just before its Close.
    bye: Option<u64>,
    /// It left by its own Close (the bye must have arrived).
    left_cleanly: bool,
}

/// The global order of broadcasts: as the reference received them.
#[derive(Default)]
struct Order {
    ids: Vec<u64>,
    index: HashMap<u64, usize>,
    /// Per sender: the next sequence number due at the reference.
    next_seq: HashMap<u32, u32>,
}

/// Private messages between one pair, in one direction.
#[derive(Default)]
struct Pair {
    sent: u32,
    /// Next sequence number due at the target.
    next: u32,
    delivered: u32,
    offline: u32,
}

#[derive(Default)]
struct Tally {
    joins: u64,
    left: u64,
    peak_online: usize,
    broadcasts: u64,
    deliveries: u64,
    replays: u64,
    privates: u64,
    privates_delivered: u64,
    privates_offline: u64,
    feeds: u64,
    feeds_delivered: u64,
    feeds_offline: u64,
    lost: u64,
    reordered: u64,
    unmatched: u64,
    misattributed: u64,
    join_gaps: u64,
    tail_gaps: u64,
    offline_while_online: u64,
    dropped: u64,
    slow_started: u64,
    slow_cut_off: u64,
    // --cuts
    cuts: u64,
    resumes: u64,
    missed_replayed: u64,
    /// Messages with a `seq` at or below one the client had already seen.
    duplicated: u64,
    resets: u64,
    /// A cut user named in a `UsersLeft`, or missing from a full
    /// `OnlineUsers`, while it was away (or any user still online named in
    /// a `UsersLeft`); a cut user named in a `UsersJoined`.
    seen_leaving: u64,
    seen_joining: u64,
    /// Room messages without a `seq` to a resumable client, with one to an
    /// old one, a `seq` that differs from the reference's, a replay not
    /// of `missed` messages.
    seq_faults: u64,
    /// Messages with a `seq` on a resuming connection before its `Resumed`.
    before_resumed: u64,
    /// From the new connection to the snapshot after the missed messages.
    resume_ms: Vec<f64>,
    /// Time in the slow readers' turns (no cuts).
    feeding_secs: f64,
    /// Per kind of bad input: answered as expected, and not.
    answers: BTreeMap<&'static str, (u64, u64)>,
    /// Things that went wrong, described (the first `MAX_DETAILS`).
    details: Vec<String>,
    problems: u64,
}

impl Tally {
    fn problem(&mut self, what: String) {
        self.problems += 1;
        if self.details.len() < MAX_DETAILS {
            self.details.push(what);
        }
    }

    fn answer(&mut self, what: &'static str, ok: bool, detail: impl FnOnce() -> String) {
        let entry = self.answers.entry(what).or_default();
        if ok {
            entry.0 += 1;
        } else {
            entry.1 += 1;
            self.problem(detail());
        }
    }

    fn answered(&self) -> (u64, u64) {
        self.answers.values().fold((0, 0), |(a, b), (ok, bad)| (a + ok, b + bad))
    }
}

/// Server process figures.
#[derive(Clone, Copy, Default)]
struct Resources {
    rss_kib: u64,
    fds: u64,
}

fn resources(pid: Option<u32>) -> Option<Resources> {
    let pid = pid?;
    let rss_kib = sample(Some(pid))?.rss_kib;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Resources { rss_kib, fds })
}

/// splitmix64: small, seedable, good enough to pick users and sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// What the server sends, the fields the soak looks at.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "msgType", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(rename = "SrcUser", borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(rename = "TgtUser", borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(default)]
    history: bool,
    #[serde(rename = "Users", borrow, default)]
    users: Vec<Cow<'a, str>>,
    seq: Option<u64>,
    #[serde(rename = "ServerName", borrow)]
    server_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    resume: Option<ResumeInfo<'a>>,
    missed: Option<u64>,
    #[serde(default)]
    reset: bool,
    #[serde(borrow)]
    why: Option<Cow<'a, str>>,
    #[serde(default)]
    more: bool,
}

/// The welcome's and `Resumed`'s `resume`.
#[derive(Deserialize)]
struct ResumeInfo<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(borrow)]
    epoch: Cow<'a, str>,
    seq: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Users come and go, everything is sent.
    Running,
    /// Nothing new; waiting for probes and slow readers to finish.
    Draining,
    /// Every user leaves, the reference last.
    Leaving,
    /// Everyone is gone; waiting for quiet.
    Quiet,
}

/// What one cycle checks against: its own reference, order and tag.
#[derive(Default)]
struct Cycle {
    /// This cycle's tag, first in every text (the history of earlier cycles
    /// and runs is ignored).
    run: String,
    reference: Option<u32>,
    order: Order,
    pairs: HashMap<(u32, u32), Pair>,
    /// Broadcasts sent by each client number.
    sent_by: HashMap<u32, u32>,
    /// Streams of users who are gone, checked once the order is complete.
    finished: Vec<(String, Stream)>,
    history_seen: bool,
    /// The users who began to leave last.
    leavers: VecDeque<u32>,
    /// `--cuts`: each broadcast's `seq`, as the first client to get it saw
    /// it: every other must see the same (the room's one order).
    seq_of: HashMap<u64, u64>,
}

struct Soak<'o> {
    o: &'o Options,
    s: Settings,
    poll: Poll,
    clients: Slab<Client>,
    /// Live clients by their number (names are `u12`, `s13`, `p14`).
    by_idx: HashMap<u32, usize>,
    next_idx: u32,
    rng: Rng,
    seed: u64,
    /// The cycle under way (1-based) and when its sending began.
    cycle: usize,
    start: Instant,
    stage: Stage,
    drain_deadline: Option<Instant>,
    quiet_since: Option<Instant>,
    cy: Cycle,
    t: Tally,
    // Scheduler: fractional messages due.
    due_broadcasts: f64,
    due_privates: f64,
    due_bad: f64,
    due_leaves: f64,
    due_feeds: f64,
    last_step: Instant,
    next_probe: Instant,
    probe_turn: usize,
    last_wrong_password: Option<Instant>,
    next_slow: Instant,
    bad_turn: usize,
    buf: Vec<u8>,
    dirty: Vec<usize>,
    // Server figures: at the start, after each cycle, the peak.
    baseline: Option<Resources>,
    after: Vec<Option<Resources>>,
    peak: Resources,
    last_sample: Instant,
    last_report: Instant,
    report_every: Duration,
    /// When the soak began.
    lifetime: Instant,
    /// `--cuts`: the relay the chat users connect through.
    relay: Option<crate::cut::Relay>,
    due_cuts: f64,
    /// With `--cuts`: the slow readers' turn (no cuts), since when, and
    /// how many were started in it.
    feeding: bool,
    turn_since: Instant,
    slow_this_turn: usize,
    /// `RAGNAROK_SOAK_TRACE` set: every resume and what the resuming
    /// connection gets until the snapshot, on stderr.
    trace: bool,
}

pub fn run(o: &Options) -> io::Result<()> {
    if o.users < 48 {
        return Err(io::Error::other(
            "soak needs -n 48 or more: leaves are announced as UsersLeft (how slow readers \
             learn they were cut off) only in rooms of over 32 users",
        ));
    }
    let wanted = o.users as u64 + 256;
    let limit = ragnarok::fdlimit::raise(wanted);
    if limit < wanted {
        eprintln!("ragnarok-load: the open file limit is {limit}: not all users can connect");
    }
    let s = o.soak.clone();
    let seed = s.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        t.map_or(1, |d| d.as_nanos() as u64) ^ u64::from(std::process::id())
    });
    let now = Instant::now();
    let secs = o.duration.as_secs_f64();
    let mut soak = Soak {
        o,
        s,
        poll: Poll::new()?,
        clients: Slab::new(),
        by_idx: HashMap::new(),
        next_idx: 0,
        rng: Rng(seed),
        seed,
        cycle: 0,
        start: now,
        stage: Stage::Running,
        drain_deadline: None,
        quiet_since: None,
        cy: Cycle::default(),
        t: Tally::default(),
        due_broadcasts: 0.0,
        due_privates: 0.0,
        due_bad: 0.0,
        due_leaves: 0.0,
        due_feeds: 0.0,
        last_step: now,
        next_probe: now + PROBE_EVERY,
        probe_turn: 0,
        last_wrong_password: None,
        next_slow: now + Duration::from_millis(500),
        bad_turn: 0,
        buf: vec![0; 64 * 1024],
        dirty: Vec::new(),
        baseline: resources(o.pid),
        after: Vec::new(),
        peak: Resources::default(),
        last_sample: now,
        last_report: now,
        report_every: Duration::from_secs_f64((secs / 20.0).clamp(2.0, 30.0)),
        lifetime: now,
        relay: None,
        due_cuts: 0.0,
        feeding: false,
        turn_since: now,
        slow_this_turn: 0,
        trace: std::env::var_os("RAGNAROK_SOAK_TRACE").is_some(),
    };
    if soak.s.cuts > 0.0 {
        let relay = crate::cut::Relay::start(o.addr)?;
        println!(
            "cuts: {}/s through a relay on {} (reconnect after 0-{} ms); {:.0} % of the users log in the old way and are never cut",
            soak.s.cuts,
            relay.addr,
            soak.s.cut_away.as_millis(),
            PLAIN_SHARE * 100.0
        );
        soak.relay = Some(relay);
    }
    if let Some(b) = soak.baseline {
        soak.peak = b;
    }
    println!(
        "soak {secs} s in {CYCLES} cycles: about {} users, {}/s broadcasts, {}/s private, {} slow readers at a time, seed {seed}",
        o.users, soak.s.rate, soak.s.private_rate, soak.s.slow
    );
    match soak.baseline {
        Some(b) => println!("server at the start: RSS {} KiB, {} open fds", b.rss_kib, b.fds),
        None => println!("no --pid: RSS and open fds are not checked"),
    }
    soak.begin_cycle(now)?;
    soak.run_loop()?;
    soak.report()
}

impl Soak<'_> {
    /// A new cycle: a new tag and order, its reference first.
    fn begin_cycle(&mut self, now: Instant) -> io::Result<()> {
        self.cycle += 1;
        self.cy = Cycle { run: format!("{:06x}", self.rng.next() & 0xff_ffff), ..Cycle::default() };
        self.start = now;
        self.stage = Stage::Running;
        self.drain_deadline = None;
        self.quiet_since = None;
        self.last_step = now;
        self.next_slow = now + Duration::from_millis(500);
        self.feeding = false;
        self.turn_since = now;
        self.slow_this_turn = 0;
        println!("cycle {} of {CYCLES}: tag {}", self.cycle, self.cy.run);
        self.spawn(Kind::Reference, now)?;
        Ok(())
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.poll.poll(&mut events, Some(Duration::from_millis(10)))?;
            let now = Instant::now();
            for event in events.iter() {
                let key = event.token().0;
                let Some(c) = self.clients.get_mut(key) else { continue };
                if event.is_writable() {
                    c.dirty = true;
                    self.dirty.push(key);
                }
                if !c.stalled && (event.is_readable() || event.is_read_closed() || event.is_error())
                {
                    self.read(key, now);
                }
            }
            let now = Instant::now();
            self.step(now)?;
            self.timers(now);
            self.flush_dirty();
            self.check_streams();
            self.sample(now);
            if self.stage == Stage::Quiet
                && self.quiet_since.is_some_and(|t| now.duration_since(t) >= QUIET)
            {
                self.end_cycle(now);
                if self.cycle == CYCLES {
                    return Ok(());
                }
                self.begin_cycle(now)?;
            }
            if self.cy.reference.is_some_and(|r| !self.by_idx.contains_key(&r))
                && self.stage < Stage::Quiet
            {
                return Err(io::Error::other(format!(
                    "the reference user was disconnected: {:?}",
                    self.t.details
                )));
            }
        }
    }

    // ---- clients -------------------------------------------------------

    fn spawn(&mut self, kind: Kind, now: Instant) -> io::Result<usize> {
        let idx = self.next_idx;
        self.next_idx += 1;
        let tls = match &self.o.tls {
            Some(config) => Some(Box::new(
                rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap())
                    .map_err(io::Error::other)?,
            )),
            None => None,
        };
        // With --cuts the chat users go through the relay, most of them
        // resumable; probes and slow readers connect directly.
        let (addr, resumable) = match &self.relay {
            Some(relay) if kind.chats() => {
                (relay.addr, kind == Kind::Reference || !self.rng.chance(PLAIN_SHARE))
            }
            _ => (self.o.addr, false),
        };
        let socket = TcpStream::connect(addr)?;
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let mut client = Client {
            idx,
            name: format!("{}{idx}", kind.prefix()),
            kind,
            phase: Phase::Upgrading,
            socket,
            tls,
            inbox: Vec::new(),
            outbox: VecDeque::new(),
            stalled: false,
            resume_at: None,
            mute: kind == Kind::Silent,
            write_failed: false,
            dirty: true,
            started: now,
            chatting_since: None,
            tokens: CLIENT_BURST,
            bytes: CLIENT_BYTE_BURST,
            refilled: now,
            sent: 0,
            stream: Stream::default(),
            expect: VecDeque::new(),
            errors: Vec::new(),
            pings: 0,
            pongs: 0,
            cut_off: false,
            resumable,
            token: None,
            epoch: None,
            max_seq: None,
            resume_seq: None,
            cuts: 0,
            away_since: None,
            reconnect_at: None,
            resuming: None,
            replay: None,
            answerable_mark: None,
            echoed: None,
            rejoined: false,
        };
        self.poll.registry().register(
            &mut client.socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let request = super::upgrade_request(self.o.addr);
        match kind {
            Kind::Silent => {}
            // Stops in the middle of a header line.
            Kind::HalfRequest => client.outbox.extend(&request.as_bytes()[..40]),
            _ => client.outbox.extend(request.as_bytes()),
        }
        if kind == Kind::Reference {
            self.cy.reference = Some(idx);
        }
        if kind == Kind::Slow {
            self.t.slow_started += 1;
        }
        entry.insert(client);
        self.by_idx.insert(idx, key);
        self.dirty.push(key);
        Ok(key)
    }

    /// Reads what the socket has and handles it.
    fn read(&mut self, key: usize, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        let got = {
            let c = &mut self.clients[key];
            read_into(&mut c.socket, c.tls.as_deref_mut(), &mut c.inbox, &mut buf)
        };
        self.buf = buf;
        if self.clients[key].tls.is_some() {
            self.mark_dirty(key);
        }
        if !self.handle_inbox(key, now) {
            return;
        }
        match got {
            Ok(true) => {}
            Ok(false) => self.end(key, None, "end of stream".into(), now),
            Err(e) => self.end(key, None, format!("read failed: {e}"), now),
        }
    }

    /// Handles what arrived; `false` once the client has ended.
    fn handle_inbox(&mut self, key: usize, now: Instant) -> bool {
        let mut inbox = std::mem::take(&mut self.clients[key].inbox);
        let mut at = 0;
        if self.clients[key].phase == Phase::Upgrading {
            let Some(end) = crate::find(&inbox, b"\r\n\r\n") else {
                self.clients[key].inbox = inbox;
                return true;
            };
            if !inbox.starts_with(b"HTTP/1.1 101") {
                let head = String::from_utf8_lossy(&inbox[..end.min(200)]).into_owned();
                self.end(key, None, format!("upgrade refused: {head:?}"), now);
                return false;
            }
            at = end;
            self.on_upgraded(key, now);
        }
        while inbox.len() - at >= 2 {
            let (b0, b1) = (inbox[at], inbox[at + 1]);
            let (len, head) = match b1 & 0x7f {
                126 if inbox.len() - at >= 4 => {
                    (u16::from_be_bytes([inbox[at + 2], inbox[at + 3]]) as usize, 4)
                }
                127 if inbox.len() - at >= 10 => {
                    (u64::from_be_bytes(inbox[at + 2..at + 10].try_into().unwrap()) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if inbox.len() - at < head + len {
                break;
            }
            let payload = &inbox[at + head..at + head + len];
            at += head + len;
            match b0 & 0x0f {
                1 => {
                    self.on_text(key, payload, now);
                    if !self.clients.contains(key) {
                        return false;
                    }
                }
                8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    self.end(key, code, "Close".into(), now);
                    return false;
                }
                9 => {
                    let c = &mut self.clients[key];
                    if c.phase != Phase::Cut {
                        frame(0xA, payload, &mut c.outbox);
                        self.mark_dirty(key);
                    }
                }
                0xA => self.clients[key].pongs += 1,
                op => {
                    let name = self.clients[key].name.clone();
                    self.t.problem(format!("{name}: unexpected frame opcode {op}"));
                }
            }
        }
        inbox.drain(..at);
        self.clients[key].inbox = inbox;
        true
    }

    fn on_upgraded(&mut self, key: usize, now: Instant) {
        let password = self.o.password.clone();
        let c = &mut self.clients[key];
        c.phase = Phase::LoggingIn;
        match c.kind {
            Kind::WrongPassword => c.send_text(&format!("{password}-wrong")),
            Kind::NoName => c.send_text(&password),
            Kind::FloodFirst => {
                for _ in 0..FLOOD_PINGS_LOGIN {
                    frame(9, &[b'p'; 125], &mut c.outbox);
                }
                c.pings = FLOOD_PINGS_LOGIN;
                c.stalled = true;
                c.resume_at = Some(now + FLOOD_PAUSE);
            }
            _ if c.resuming.is_some() => {
                let resume = serde_json::json!({
                    "msgType": "Resume",
                    "name": c.name,
                    "token": c.token,
                    "epoch": c.epoch,
                    "seq": c.max_seq.unwrap_or(0),
                });
                c.resume_seq = c.max_seq;
                c.phase = Phase::Resuming;
                if self.trace {
                    eprintln!("trace {} sends {resume}", c.name);
                }
                c.send_text(&password);
                c.send_text(&resume.to_string());
            }
            _ if c.resumable => {
                let login = serde_json::json!({"msgType": "Login", "name": c.name});
                c.send_text(&password);
                c.send_text(&login.to_string());
            }
            _ => {
                let name = c.name.clone();
                c.send_text(&password);
                c.send_text(&name);
            }
        }
        self.mark_dirty(key);
    }

    fn on_logged_in(&mut self, key: usize, now: Instant) {
        let max = self.s.max_message_bytes;
        let c = &mut self.clients[key];
        c.phase = Phase::Chatting;
        c.chatting_since = Some(now);
        match c.kind {
            Kind::Reference | Kind::Normal => {
                self.t.joins += 1;
                // Half of the users publish a key, as the web page does.
                if self.rng.chance(0.5) {
                    let c = &mut self.clients[key];
                    // The documented e2e2 format, both points 0x04 and zeros
                    // (the server does not check the curve; no peer here
                    // encrypts to it).
                    let point = format!("B{}=", "A".repeat(86));
                    let message =
                        format!(r#"{{"msgType":"PublicKey","key":"e2e2:{point}:{point}"}}"#);
                    if c.take_token(now, message.len()) {
                        c.send_text(&message);
                    }
                }
                if self.stage >= Stage::Leaving && self.clients[key].kind != Kind::Reference {
                    self.leave(key);
                }
            }
            Kind::Slow => c.stalled = true,
            Kind::Oversize => {
                let payload = vec![b'x'; max + 1];
                frame(1, &payload, &mut c.outbox);
            }
            Kind::PingFlood => {
                for _ in 0..FLOOD_PINGS_CHATTING {
                    frame(9, b"flood", &mut c.outbox);
                }
                c.pings = FLOOD_PINGS_CHATTING;
                c.stalled = true;
                c.resume_at = Some(now + FLOOD_PAUSE);
            }
            Kind::BadUtf8 => {
                frame(1, b"{\"msgType\":\"Broadcast\",\"text\":\"\xff\xfe\"}", &mut c.outbox)
            }
            Kind::Unmasked => {
                // A text frame without the mask bit: clients must mask.
                let text = br#"{"msgType":"Broadcast","text":"unmasked"}"#;
                c.outbox.extend([0x81, text.len() as u8]);
                c.outbox.extend(text);
            }
            _ => {}
        }
        self.mark_dirty(key);
    }

    fn on_text(&mut self, key: usize, payload: &[u8], now: Instant) {
        let msg: Incoming = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                let name = &self.clients[key].name;
                let text = String::from_utf8_lossy(&payload[..payload.len().min(80)]);
                let what = format!("{name}: a frame that is not JSON ({e}): {text:?}");
                self.t.problem(what);
                return;
            }
        };
        let kind = msg.kind.as_deref().unwrap_or("");
        if self.trace && self.clients[key].phase == Phase::Resuming {
            let c = &self.clients[key];
            let text = String::from_utf8_lossy(&payload[..payload.len().min(100)]);
            eprintln!("trace {} (highest seq {:?}) gets {text}", c.name, c.max_seq);
        }
        if self.check_seq(key, kind, &msg, payload) {
            return; // a repeat, dropped as the protocol says
        }
        let phase = self.clients[key].phase;
        if phase == Phase::LoggingIn {
            match kind {
                "" if msg.server_name.is_some() => self.on_welcome(key, &msg),
                "OnlineUsers" => {
                    self.check_list(key, &msg);
                    self.on_logged_in(key, now);
                }
                "Error" => {
                    let code = msg.code.as_deref().unwrap_or("?").to_owned();
                    self.clients[key].errors.push(code);
                }
                _ => {}
            }
            return;
        }
        if phase == Phase::Resuming {
            match kind {
                "Resumed" => return self.on_resumed(key, &msg),
                // The snapshot after the missed messages (before `Resumed`
                // it is a live one, counted by check_seq).
                "OnlineUsers" if self.clients[key].replay.is_some() => {
                    self.check_list(key, &msg);
                    return self.on_back(key, now);
                }
                "Error" => {
                    let c = &mut self.clients[key];
                    let code = msg.code.as_deref().unwrap_or("?").to_owned();
                    let what = format!("{}: resume answered with Error {code}", c.name);
                    c.errors.push(code);
                    self.t.problem(what);
                    return;
                }
                // The missed messages, handled as live ones.
                _ => {}
            }
        }
        match kind {
            "Broadcast" => self.on_broadcast(key, &msg),
            "PrivateMessage" => self.on_private(key, &msg),
            "Error" => self.on_error(key, &msg),
            "UsersLeft" => self.on_users_left(key, &msg.users, now),
            "UsersJoined" => self.on_users_joined(key, &msg.users),
            "OnlineUsers" => self.check_list(key, &msg),
            _ => {}
        }
    }

    /// `seq` as docs/PROTOCOL.md "Resuming after a dropped connection" has
    /// it: on every room message to a resumable client, never to an old one;
    /// an event (`Broadcast`, `PrivateMessage`, `PublicKey`,
    /// `Announcement`) at or below the highest seen is a repeat (counted as
    /// duplicated, and dropped: true). Counts a replay's messages.
    fn check_seq(&mut self, key: usize, kind: &str, msg: &Incoming, payload: &[u8]) -> bool {
        let c = &mut self.clients[key];
        let event = matches!(kind, "Broadcast" | "PrivateMessage" | "PublicKey" | "Announcement");
        if !c.resumable {
            if msg.seq.is_some() || msg.resume.is_some() {
                let text = String::from_utf8_lossy(&payload[..payload.len().min(100)]);
                let what = format!("{} (old protocol): got {text:?}", c.name);
                self.t.seq_faults += 1;
                self.t.problem(what);
            }
            return false;
        }
        let Some(seq) = msg.seq else {
            let room = event || matches!(kind, "UsersJoined" | "UsersLeft");
            if room && !msg.history && c.phase != Phase::LoggingIn {
                let text = String::from_utf8_lossy(&payload[..payload.len().min(100)]);
                let what = format!("{}: a room message without seq: {text:?}", c.name);
                self.t.seq_faults += 1;
                self.t.problem(what);
            }
            return false;
        };
        if c.phase == Phase::Resuming && c.replay.is_none() && kind != "Resumed" {
            // Room traffic before `Resumed`, which must come first. A client
            // that followed the protocol (remember the highest seq of any
            // message, drop what is at or below it) would drop the missed
            // messages that follow: counted on its own, and kept out of
            // the highest seq so that the replay is still checked.
            let text = String::from_utf8_lossy(&payload[..payload.len().min(100)]);
            let what = format!(
                "{}: before Resumed (resuming from seq {:?}): {text:?}",
                c.name, c.resume_seq
            );
            self.t.before_resumed += 1;
            self.t.problem(what);
            return false;
        }
        if event {
            if let Some(max) = c.max_seq
                && seq <= max
            {
                let text = String::from_utf8_lossy(&payload[..payload.len().min(100)]);
                let what = format!("{}: seq {seq} after {max} ({:?}): {text:?}", c.name, c.phase);
                self.t.duplicated += 1;
                self.t.problem(what);
                return true;
            }
            if c.phase == Phase::Resuming
                && let Some((_, got)) = &mut c.replay
            {
                *got += 1;
            }
        }
        c.max_seq = Some(c.max_seq.map_or(seq, |m| m.max(seq)));
        false
    }

    /// The welcome: a resumable client keeps what it resumes with.
    fn on_welcome(&mut self, key: usize, msg: &Incoming) {
        let c = &mut self.clients[key];
        if !c.resumable {
            return;
        }
        match &msg.resume {
            Some(r) => {
                c.token = Some(r.token.clone().into_owned());
                c.epoch = Some(r.epoch.clone().into_owned());
                c.max_seq = Some(c.max_seq.map_or(r.seq, |m| m.max(r.seq)));
            }
            None => {
                let what = format!("{}: a welcome to Login without resume", c.name);
                self.t.seq_faults += 1;
                self.t.problem(what);
            }
        }
    }

    /// `Resumed`: exact (the missed messages follow) or a reset.
    fn on_resumed(&mut self, key: usize, msg: &Incoming) {
        let c = &mut self.clients[key];
        let name = c.name.clone();
        let Some(r) = &msg.resume else {
            self.t.seq_faults += 1;
            self.t.problem(format!("{name}: Resumed without resume"));
            return;
        };
        let away = c.away_since.map_or(0, |t| t.elapsed().as_millis());
        if msg.reset {
            self.t.resets += 1;
            let why = msg.why.as_deref().unwrap_or("");
            self.t.problem(format!(
                "{name}: reset on resume (seq {:?}, away {away} ms): {why:?}",
                c.resume_seq
            ));
            c.rejoined |= c.token.as_deref() != Some(&*r.token);
            c.token = Some(r.token.clone().into_owned());
            c.epoch = Some(r.epoch.clone().into_owned());
            c.max_seq = Some(r.seq);
            // Nothing is replayed: the snapshot comes next.
            c.replay = Some((0, 0));
            // What came before is checked as a stream that ended there; a
            // new one starts with the snapshot's history.
            let old = std::mem::take(&mut c.stream);
            self.cy.finished.push((format!("{name} before its reset"), old));
            return;
        }
        let mut wrong = Vec::new();
        if c.token.as_deref() != Some(&*r.token) {
            wrong.push("a different token".to_owned());
        }
        if c.epoch.as_deref() != Some(&*r.epoch) {
            wrong.push(format!("epoch {:?} for {:?}", r.epoch, c.epoch));
        }
        if c.resume_seq != Some(r.seq) {
            wrong.push(format!("seq {} for {:?}", r.seq, c.resume_seq));
        }
        let Some(missed) = msg.missed else {
            wrong.push("no missed".into());
            self.t.seq_faults += 1;
            self.t.problem(format!("{name}: Resumed with {}", wrong.join(", ")));
            return;
        };
        c.replay = Some((missed, 0));
        self.t.missed_replayed += missed;
        if !wrong.is_empty() {
            self.t.seq_faults += 1;
            self.t.problem(format!("{name}: Resumed with {}", wrong.join(", ")));
        }
    }

    /// The snapshot after a resume: the client is back.
    fn on_back(&mut self, key: usize, now: Instant) {
        let c = &mut self.clients[key];
        let name = c.name.clone();
        match c.replay.take() {
            Some((want, got)) if want != got => {
                self.t.seq_faults += 1;
                self.t.problem(format!(
                    "{name}: Resumed said missed {want}, {got} messages with a seq came before the snapshot"
                ));
            }
            Some(_) => {}
            None => {
                self.t.seq_faults += 1;
                self.t.problem(format!("{name}: OnlineUsers before Resumed"));
            }
        }
        let c = &mut self.clients[key];
        c.phase = Phase::Chatting;
        c.chatting_since = Some(now);
        c.away_since = None;
        if let Some(t) = c.resuming.take() {
            self.t.resume_ms.push(now.duration_since(t).as_secs_f64() * 1000.0);
        }
        self.t.resumes += 1;
        if self.stage >= Stage::Leaving && self.clients[key].kind != Kind::Reference {
            self.leave(key);
        }
    }

    /// A full `OnlineUsers` must name every user who is away.
    fn check_list(&mut self, key: usize, msg: &Incoming) {
        if msg.more || self.relay.is_none() {
            return;
        }
        let observer = &self.clients[key].name;
        let mut missing = Vec::new();
        for (_, c) in &self.clients {
            if c.away_since.is_some() && !msg.users.iter().any(|u| *u == c.name) {
                missing.push(c.name.clone());
            }
        }
        for name in missing {
            self.t.seen_leaving += 1;
            self.t.problem(format!("{observer}: OnlineUsers without {name}, who is away (cut)"));
        }
    }

    /// A `UsersJoined` must not name a user who was cut: it never left.
    /// (Judged by chat users only, who read as it comes: a slow reader
    /// reads the joins of long ago once it is cut off.)
    fn on_users_joined(&mut self, key: usize, users: &[Cow<str>]) {
        if !self.clients[key].kind.chats() {
            return;
        }
        for user in users {
            let Some(idx) = user.strip_prefix('u').and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(&k) = self.by_idx.get(&idx)
                && self.clients[k].cuts > 0
                && !self.clients[k].rejoined
            {
                let what = format!(
                    "{}: UsersJoined names {user}, cut {} times and never gone",
                    self.clients[key].name, self.clients[k].cuts
                );
                self.t.seen_joining += 1;
                self.t.problem(what);
            }
        }
    }

    fn on_broadcast(&mut self, key: usize, msg: &Incoming) {
        let Some(text) = msg.text.as_deref() else { return };
        let mut parts = text.split(':');
        if parts.next() != Some(self.cy.run.as_str()) || parts.next() != Some("b") {
            return; // another run's, from the history
        }
        let sender: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(u32::MAX);
        let seq: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(u32::MAX);
        let id = (u64::from(sender) << 32) | u64::from(seq);
        let c = &mut self.clients[key];
        if sender == c.idx && !msg.history {
            c.echoed = Some(c.echoed.map_or(seq, |e| e.max(seq)));
        }
        if msg.source.as_deref() != Some(&format!("u{sender}")) {
            let what = format!("{}: broadcast {sender}:{seq} from {:?}", c.name, msg.source);
            self.t.misattributed += 1;
            self.t.problem(what);
        }
        if msg.history {
            self.cy.history_seen = true;
            self.t.replays += 1;
        } else {
            self.t.deliveries += 1;
        }
        if let Some(s) = msg.seq
            && c.resumable
        {
            let first = *self.cy.seq_of.entry(id).or_insert(s);
            if first != s {
                let what =
                    format!("{}: broadcast {sender}:{seq} has seq {s}, others saw {first}", c.name);
                self.t.seq_faults += 1;
                self.t.problem(what);
            }
        }
        if c.kind == Kind::Reference && !msg.history {
            let next = self.cy.order.next_seq.entry(sender).or_insert(0);
            if seq > *next {
                let what = format!("reference: broadcasts {sender}:{}..{seq} missing", *next);
                self.t.lost += u64::from(seq - *next);
                self.t.problem(what);
            } else if seq < *next {
                self.t.reordered += 1;
                self.t.problem(format!("reference: broadcast {sender}:{seq} late or twice"));
            }
            *next = (*next).max(seq + 1);
            if self.cy.order.index.contains_key(&id) {
                return;
            }
            self.cy.order.index.insert(id, self.cy.order.ids.len());
            self.cy.order.ids.push(id);
            // The reference is a user like the others: its own stream is the order.
            c.stream.next = Some(self.cy.order.ids.len());
            return;
        }
        c.stream.pending.push_back((id, msg.history));
        let name = c.name.clone();
        advance(&mut c.stream, &self.cy.order, &mut self.t, &name, false);
    }

    fn on_private(&mut self, key: usize, msg: &Incoming) {
        let Some(text) = msg.text.as_deref() else { return };
        let mut parts = text.split(':');
        if parts.next() != Some(self.cy.run.as_str()) {
            return;
        }
        let kind = parts.next();
        let sender: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(u32::MAX);
        let c = &self.clients[key];
        let me = c.idx;
        let name = c.name.clone();
        if msg.source.as_deref() != Some(&format!("u{sender}")) {
            self.t.misattributed += 1;
            self.t.problem(format!(
                "{name}: private message from {:?}, sent by u{sender}",
                msg.source
            ));
        }
        if kind == Some("f") {
            self.t.feeds_delivered += 1;
            return;
        }
        let seq: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(u32::MAX);
        let pair = self.cy.pairs.entry((sender, me)).or_default();
        if seq == pair.next {
            pair.next += 1;
        } else if seq > pair.next {
            let what = format!("{name}: private messages u{sender}:{}..{seq} missing", pair.next);
            self.t.lost += u64::from(seq - pair.next);
            pair.next = seq + 1;
            self.t.problem(what);
        } else {
            self.t.reordered += 1;
            self.t.problem(format!("{name}: private message u{sender}:{seq} late or twice"));
        }
        pair.delivered += 1;
        self.t.privates_delivered += 1;
    }

    fn on_error(&mut self, key: usize, msg: &Incoming) {
        let code = msg.code.as_deref().unwrap_or("?");
        let target = msg.target.as_deref().unwrap_or("");
        let c = &mut self.clients[key];
        if code == "user_offline" && !target.starts_with("nobody-") {
            let Some(idx) = target.get(1..).and_then(|s| s.parse::<u32>().ok()) else {
                let what = format!("{}: user_offline for {target:?}", c.name);
                self.t.problem(what);
                return;
            };
            if target.starts_with('s') {
                self.t.feeds_offline += 1;
                return;
            }
            let me = c.idx;
            let name = c.name.clone();
            self.cy.pairs.entry((me, idx)).or_default().offline += 1;
            self.t.privates_offline += 1;
            // Refused while the target had not even asked to leave (or
            // was away after a cut, its name kept): wrong.
            if let Some(&k) = self.by_idx.get(&idx)
                && (self.clients[k].phase == Phase::Chatting
                    || self.clients[k].away_since.is_some())
            {
                self.t.offline_while_online += 1;
                self.t.problem(format!("{name}: user_offline for {target}, who is online"));
            }
            return;
        }
        match c.expect.front() {
            Some(&want) if want == code => {
                c.expect.pop_front();
                self.t.answer(want, true, String::new);
            }
            _ => c.errors.push(code.to_owned()),
        }
    }

    /// A `UsersLeft`: stalled slow readers named in it were cut off. A user
    /// who has not asked to leave must not be in it (with `--cuts`: one
    /// who is away, or was, never left).
    fn on_users_left(&mut self, observer: usize, users: &[Cow<str>], now: Instant) {
        for user in users {
            if let Some(idx) = user.strip_prefix('u').and_then(|s| s.parse::<u32>().ok())
                && let Some(&k) = self.by_idx.get(&idx)
                && matches!(
                    self.clients[k].phase,
                    Phase::Chatting | Phase::Cut | Phase::Away | Phase::Resuming
                )
            {
                let c = &self.clients[k];
                let what = format!(
                    "{}: UsersLeft names {user}, who is {:?} (cut {} times)",
                    self.clients[observer].name, c.phase, c.cuts
                );
                self.t.seen_leaving += 1;
                self.t.problem(what);
            }
            let Some(idx) = user.strip_prefix('s').and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(&key) = self.by_idx.get(&idx) else { continue };
            let c = &mut self.clients[key];
            if c.kind == Kind::Slow && c.stalled {
                c.stalled = false;
                c.cut_off = true;
                self.read(key, now);
            }
        }
    }

    /// The connection is over: was that what should have happened?
    fn end(&mut self, key: usize, close: Option<u16>, how: String, now: Instant) {
        if self.clients.get(key).is_some_and(|c| c.phase == Phase::Cut) && close.is_none() {
            self.go_away(key, now);
            return;
        }
        let Some(mut c) = self.clients.try_remove(key) else { return };
        let _ = self.poll.registry().deregister(&mut c.socket);
        self.by_idx.remove(&c.idx);
        let name = c.name.clone();
        let errors = std::mem::take(&mut c.errors);
        match c.kind {
            Kind::Reference | Kind::Normal => {
                let clean = c.phase == Phase::Leaving && close.is_some();
                if c.phase == Phase::Chatting || c.phase == Phase::Leaving {
                    self.t.left += 1;
                }
                if !clean {
                    self.t.dropped += 1;
                    self.t.problem(format!(
                        "{name}: disconnected while {:?}: {how}, close {close:?}, errors {errors:?}",
                        c.phase
                    ));
                } else if !errors.is_empty() {
                    self.t.problem(format!("{name}: unexpected errors {errors:?}"));
                }
                for code in c.expect.drain(..) {
                    self.t.answer(code, false, || format!("{name}: no answer {code}"));
                }
                c.stream.left_cleanly = clean;
            }
            Kind::Silent | Kind::HalfRequest => {
                // Closed by the server without a WebSocket ever opening.
                let ok = c.phase == Phase::Upgrading && close.is_none();
                let waited = now.duration_since(c.started).as_secs_f64();
                self.t.answer(c.kind.label(), ok, || {
                    format!("{name} ({}): {how} after {waited:.1} s", c.kind.label())
                });
            }
            kind => {
                let (code, close_code) = kind.expected_end().expect("a probe");
                let ok = errors.last().map(String::as_str) == code && close == Some(close_code);
                if kind == Kind::Slow {
                    self.t.slow_cut_off += u64::from(ok);
                }
                self.t.answer(kind.label(), ok, || {
                    format!(
                        "{name} ({}): expected {code:?} and close {close_code}, got errors {errors:?}, close {close:?} ({how})",
                        kind.label()
                    )
                });
            }
        }
        if c.kind != Kind::Reference {
            self.cy.finished.push((name, c.stream));
        }
    }

    /// A user leaves: its last broadcast, then Close.
    fn leave(&mut self, key: usize) {
        if self.clients[key].phase != Phase::Chatting {
            return;
        }
        // Its last words go out whatever its pace (it has half the
        // server's budgets to spare): the bytes are owed.
        let size = self.text_size();
        self.clients[key].bytes -= (size + 64) as f64;
        self.send_broadcast(key, size);
        let c = &mut self.clients[key];
        c.stream.bye = Some((u64::from(c.idx) << 32) | u64::from(c.sent - 1));
        frame(8, &1000u16.to_be_bytes(), &mut c.outbox);
        c.phase = Phase::Leaving;
        if c.kind == Kind::Normal {
            self.cy.leavers.push_back(c.idx);
            if self.cy.leavers.len() > 8 {
                self.cy.leavers.pop_front();
            }
        }
        self.mark_dirty(key);
    }

    /// `--cuts`: tells the relay to cut this user's connection.
    fn cut(&mut self, key: usize, now: Instant) {
        let Some(relay) = &self.relay else { return };
        let c = &mut self.clients[key];
        let Ok(local) = c.socket.local_addr() else { return };
        relay.cut(local.port());
        c.phase = Phase::Cut;
        c.cuts += 1;
        c.away_since = Some(now);
        self.t.cuts += 1;
    }

    /// The cut connection has ended: reconnect after a random delay.
    fn go_away(&mut self, key: usize, now: Instant) {
        let away = self.s.cut_away.as_millis() as usize;
        let delay = Duration::from_millis(self.rng.below(away + 1) as u64);
        let c = &mut self.clients[key];
        let _ = self.poll.registry().deregister(&mut c.socket);
        c.phase = Phase::Away;
        c.reconnect_at = Some(c.away_since.unwrap_or(now) + delay);
        // A frame cut in half is gone with the connection.
        c.inbox.clear();
        c.outbox.clear();
        c.tls = None;
        c.write_failed = false;
    }

    /// A new connection for a user who is away, to resume.
    fn reconnect(&mut self, key: usize, now: Instant) -> io::Result<()> {
        let Some(relay) = &self.relay else { return Ok(()) };
        let tls = match &self.o.tls {
            Some(config) => Some(Box::new(
                rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap())
                    .map_err(io::Error::other)?,
            )),
            None => None,
        };
        let mut socket = TcpStream::connect(relay.addr)?;
        self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let c = &mut self.clients[key];
        c.socket = socket;
        c.tls = tls;
        c.phase = Phase::Upgrading;
        c.reconnect_at = None;
        c.resuming = Some(now);
        c.started = now;
        c.outbox.extend(super::upgrade_request(self.o.addr).as_bytes());
        self.mark_dirty(key);
        Ok(())
    }

    /// May be cut now: online a while, nothing unsent, no answer owed.
    fn cuttable(&self, c: &Client, now: Instant) -> bool {
        c.resumable
            && c.phase == Phase::Chatting
            && c.token.is_some()
            && c.chatting_since.is_some_and(|t| now.duration_since(t) >= CUT_AFTER)
            && c.outbox.is_empty()
            && c.tls.as_ref().is_none_or(|t| !t.wants_write())
            && c.expect.is_empty()
            && !c.write_failed
            && c.answerable_mark.is_none_or(|m| c.echoed.is_some_and(|e| e >= m))
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.clients.get_mut(key)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    fn flush_dirty(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(c) = self.clients.get_mut(key) else { continue };
            c.dirty = false;
            if c.mute || c.write_failed {
                continue;
            }
            if let Err(e) = write_from(&mut c.socket, c.tls.as_deref_mut(), &mut c.outbox) {
                // Keep reading: the server's answer may be waiting.
                c.write_failed = true;
                c.outbox.clear();
                if matches!(c.kind, Kind::Normal | Kind::Reference)
                    && !matches!(c.phase, Phase::Leaving | Phase::Cut)
                {
                    let name = c.name.clone();
                    self.t.problem(format!("{name}: write failed: {e}"));
                }
            }
        }
    }

    // ---- sending -------------------------------------------------------

    fn text_size(&mut self) -> usize {
        let s = self.o.size.max(24);
        let cap = (self.s.max_message_bytes / 2).max(s);
        if self.rng.chance(0.05) {
            self.rng.range(1024, 16 * 1024).min(cap)
        } else {
            self.rng.range(s, 4 * s).min(cap)
        }
    }

    fn send_broadcast(&mut self, key: usize, size: usize) {
        let c = &mut self.clients[key];
        let mut text = format!("{}:b:{}:{}:", self.cy.run, c.idx, c.sent);
        pad(&mut text, size);
        c.send_text(&format!(r#"{{"msgType":"Broadcast","text":"{text}"}}"#));
        c.sent += 1;
        *self.cy.sent_by.entry(c.idx).or_default() += 1;
        self.t.broadcasts += 1;
        self.mark_dirty(key);
    }

    fn send_private(&mut self, key: usize, target: u32, size: usize) {
        let c = &mut self.clients[key];
        let pair = self.cy.pairs.entry((c.idx, target)).or_default();
        let mut text = format!("{}:p:{}:{}:", self.cy.run, c.idx, pair.sent);
        pair.sent += 1;
        pad(&mut text, size);
        c.send_text(&format!(
            r#"{{"msgType":"PrivateMessage","TgtUser":"u{target}","text":"{text}"}}"#
        ));
        c.answerable_mark = Some(c.sent);
        self.t.privates += 1;
        self.mark_dirty(key);
    }

    fn send_bad(&mut self, key: usize) {
        let (input, code) = BAD_INPUTS[self.bad_turn % BAD_INPUTS.len()];
        self.bad_turn += 1;
        let run = self.cy.run.clone();
        let c = &mut self.clients[key];
        match input {
            "BINARY" => frame(2, b"\x00\x01binary", &mut c.outbox),
            "KEY_TOO_LARGE" => {
                let key_text = "K".repeat(1100);
                c.send_text(&format!(r#"{{"msgType":"PublicKey","key":"{key_text}"}}"#));
            }
            "PM_TO_NOBODY" => c.send_text(&format!(
                r#"{{"msgType":"PrivateMessage","TgtUser":"nobody-{run}","text":"hello?"}}"#
            )),
            _ => c.send_text(input),
        }
        c.expect.push_back(code);
        c.answerable_mark = Some(c.sent);
        self.mark_dirty(key);
    }

    fn feed_size(&self) -> usize {
        FEED_BYTES.min(self.s.max_message_bytes / 2)
    }

    fn send_feed(&mut self, key: usize, target: &str) {
        let size = self.feed_size();
        let c = &mut self.clients[key];
        let mut text = format!("{}:f:{}:", self.cy.run, c.idx);
        pad(&mut text, size);
        c.send_text(&format!(
            r#"{{"msgType":"PrivateMessage","TgtUser":"{target}","text":"{text}"}}"#
        ));
        c.answerable_mark = Some(c.sent);
        self.t.feeds += 1;
        self.mark_dirty(key);
    }

    /// A random chatting user (not leaving) with a token, and `bytes` for a
    /// message of that size, to spend.
    fn pick_sender(&mut self, users: &[usize], now: Instant, bytes: usize) -> Option<usize> {
        for _ in 0..8 {
            let key = users[self.rng.below(users.len())];
            // (Cut earlier in this step: not chatting any more.)
            if self.clients[key].phase == Phase::Chatting
                && self.clients[key].take_token(now, bytes)
            {
                return Some(key);
            }
        }
        None
    }

    // ---- the schedule --------------------------------------------------

    fn step(&mut self, now: Instant) -> io::Result<()> {
        let dt = now.duration_since(self.last_step).as_secs_f64().min(0.25);
        self.last_step = now;
        let running = now.duration_since(self.start) < self.o.duration / CYCLES as u32;
        if self.stage == Stage::Running && !running {
            self.stage = Stage::Draining;
            if self.feeding {
                self.t.feeding_secs += now.duration_since(self.turn_since).as_secs_f64();
                self.feeding = false;
            }
            self.drain_deadline = Some(now + PROBE_DEADLINE);
            println!(
                "{:>6.1} s  stop sending; waiting for probes and slow readers",
                self.elapsed(now)
            );
        }
        let mut chatting = Vec::new();
        let (mut unauthenticated, mut joining, mut users, mut slow, mut half_open) =
            (0, 0, 0, 0, 0);
        let mut stalled = Vec::new();
        let mut probes = 0;
        // Private messages go to users online and to users away (kept for
        // their resume).
        let mut reachable = Vec::new();
        let mut away = 0;
        for (key, c) in &self.clients {
            if matches!(c.phase, Phase::Upgrading | Phase::LoggingIn | Phase::Resuming) {
                unauthenticated += 1;
                joining += usize::from(c.kind.chats() && c.resuming.is_none());
            }
            if c.kind.chats() {
                users += 1;
                if c.phase == Phase::Chatting {
                    chatting.push(key);
                    reachable.push(key);
                } else if c.away_since.is_some() {
                    reachable.push(key);
                    away += 1;
                }
            } else if c.kind == Kind::Slow {
                slow += 1;
                if c.stalled && !c.cut_off && c.phase == Phase::Chatting {
                    stalled.push(c.name.clone());
                }
            } else {
                probes += 1;
                half_open +=
                    usize::from(matches!(c.kind, Kind::Silent | Kind::HalfRequest | Kind::NoName));
            }
        }
        let online = self.clients.iter().filter(|(_, c)| c.phase == Phase::Chatting).count();
        self.t.peak_online = self.t.peak_online.max(online);
        // (Once in: a reference that was cut is still in the room.)
        let reference_ready = self
            .cy
            .reference
            .and_then(|r| self.by_idx.get(&r))
            .is_some_and(|&k| self.clients[k].chatting_since.is_some());
        if !reference_ready && self.stage == Stage::Running {
            return Ok(());
        }

        // Large private messages for the slow readers, until they are cut off.
        if !stalled.is_empty() && !chatting.is_empty() && self.stage < Stage::Leaving {
            self.due_feeds += FEED_RATE * stalled.len() as f64 * dt;
            while self.due_feeds >= 1.0 {
                self.due_feeds -= 1.0;
                let target = &stalled[self.rng.below(stalled.len())];
                let bytes = self.feed_size() + 128;
                if let Some(key) = self.pick_sender(&chatting, now, bytes) {
                    self.send_feed(key, target);
                }
            }
        }

        match self.stage {
            Stage::Running => {
                // Churn: some users leave...
                let eligible: Vec<usize> = chatting
                    .iter()
                    .copied()
                    .filter(|&k| {
                        let c = &self.clients[k];
                        c.kind != Kind::Reference
                            && c.chatting_since
                                .is_some_and(|t| now.duration_since(t).as_secs() >= 1)
                    })
                    .collect();
                self.due_leaves += self.o.users as f64 * CHURN * dt;
                while self.due_leaves >= 1.0 {
                    self.due_leaves -= 1.0;
                    if eligible.is_empty() {
                        break;
                    }
                    let key = eligible[self.rng.below(eligible.len())];
                    self.leave(key);
                }
                // ...and new ones join, to keep about N online.
                let mut users = users - self.leaving_count();
                while users < self.o.users
                    && joining < JOINS_IN_FLIGHT
                    && unauthenticated < UNAUTHENTICATED_MAX
                {
                    self.spawn(Kind::Normal, now)?;
                    users += 1;
                    joining += 1;
                    unauthenticated += 1;
                }
                let chatting: Vec<usize> = chatting
                    .into_iter()
                    .filter(|&k| self.clients.get(k).is_some_and(|c| c.phase == Phase::Chatting))
                    .collect();
                if chatting.len() >= 2 {
                    self.due_broadcasts += self.s.rate * dt;
                    while self.due_broadcasts >= 1.0 {
                        self.due_broadcasts -= 1.0;
                        let size = self.text_size();
                        if let Some(key) = self.pick_sender(&chatting, now, size + 64) {
                            self.send_broadcast(key, size);
                        }
                    }
                    self.due_privates += self.s.private_rate * dt;
                    while self.due_privates >= 1.0 {
                        self.due_privates -= 1.0;
                        let size = self.text_size();
                        let Some(key) = self.pick_sender(&chatting, now, size + 128) else {
                            continue;
                        };
                        // Some to a user who is leaving or has just left:
                        // delivered or refused, never both, never neither.
                        let target = if self.rng.chance(LATE_PRIVATE) && !self.cy.leavers.is_empty()
                        {
                            self.cy.leavers[self.rng.below(self.cy.leavers.len())]
                        } else {
                            let mut target = key;
                            while target == key {
                                target = reachable[self.rng.below(reachable.len())];
                            }
                            self.clients[target].idx
                        };
                        self.send_private(key, target, size);
                    }
                    // Cuts: one user, or a few at once.
                    if self.relay.is_some() && !self.feeding {
                        self.due_cuts += self.s.cuts * dt;
                        while self.due_cuts >= 1.0 {
                            self.due_cuts -= 1.0;
                            let group =
                                if self.rng.chance(CUT_GROUP) { self.rng.range(2, 5) } else { 1 };
                            let candidates: Vec<usize> = chatting
                                .iter()
                                .copied()
                                .filter(|&k| self.cuttable(&self.clients[k], now))
                                .collect();
                            let mut chosen = Vec::new();
                            for _ in 0..group.min(candidates.len()) {
                                let k = candidates[self.rng.below(candidates.len())];
                                if !chosen.contains(&k) {
                                    chosen.push(k);
                                }
                            }
                            for k in chosen {
                                self.cut(k, now);
                                away += 1;
                            }
                        }
                    }
                    self.due_bad += BAD_RATE * dt;
                    while self.due_bad >= 1.0 {
                        self.due_bad -= 1.0;
                        // (The largest bad input is an oversize key of 1100 bytes.)
                        if let Some(key) = self.pick_sender(&chatting, now, 1200) {
                            self.send_bad(key);
                        }
                    }
                }
                // With --cuts: whose turn (before any spawn, so that one just
                // started counts).
                if self.relay.is_some() {
                    if self.feeding && self.slow_this_turn >= self.s.slow && slow == 0 {
                        self.feeding = false;
                        self.t.feeding_secs += now.duration_since(self.turn_since).as_secs_f64();
                        self.turn_since = now;
                    } else if !self.feeding
                        && self.s.slow > 0
                        && now.duration_since(self.turn_since)
                            >= CUT_TURN.min(self.o.duration / (2 * CYCLES as u32))
                    {
                        self.feeding = true;
                        self.slow_this_turn = 0;
                        self.turn_since = now;
                    }
                }
                // Slow readers, a few at a time (with --cuts, in their turn).
                let slow_turn = match self.relay {
                    None => true,
                    Some(_) => self.feeding && self.slow_this_turn < self.s.slow && away == 0,
                };
                if slow < self.s.slow
                    && slow_turn
                    && now >= self.next_slow
                    && unauthenticated < UNAUTHENTICATED_MAX
                {
                    self.spawn(Kind::Slow, now)?;
                    self.slow_this_turn += 1;
                    unauthenticated += 1;
                    self.next_slow = now + Duration::from_millis(500);
                }
                // Bad inputs on their own connections.
                if now >= self.next_probe && unauthenticated < UNAUTHENTICATED_MAX {
                    self.next_probe = now + PROBE_EVERY;
                    for _ in 0..PROBES.len() {
                        let kind = PROBES[self.probe_turn % PROBES.len()];
                        self.probe_turn += 1;
                        let possible = match kind {
                            Kind::WrongPassword => {
                                !self.o.password.is_empty()
                                    && self.last_wrong_password.is_none_or(|t| {
                                        now.duration_since(t) >= WRONG_PASSWORD_EVERY
                                    })
                            }
                            Kind::Silent | Kind::HalfRequest | Kind::NoName => {
                                half_open < HALF_OPEN_MAX
                            }
                            _ => true,
                        };
                        if possible {
                            if kind == Kind::WrongPassword {
                                self.last_wrong_password = Some(now);
                            }
                            self.spawn(kind, now)?;
                            break;
                        }
                    }
                }
            }
            Stage::Draining => {
                let deadline = self.drain_deadline.is_some_and(|t| now >= t);
                if (slow == 0 && probes == 0) || deadline {
                    if deadline {
                        self.t.problem(format!(
                            "{} slow readers and {probes} probes still open at the deadline",
                            slow
                        ));
                    }
                    self.stage = Stage::Leaving;
                    println!("{:>6.1} s  everyone leaves", self.elapsed(now));
                    let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        let c = &self.clients[key];
                        if !c.kind.chats() {
                            self.end(key, None, "given up".into(), now);
                        } else if c.kind != Kind::Reference {
                            self.leave(key);
                        }
                    }
                }
            }
            Stage::Leaving => {
                let others = self.clients.iter().filter(|(_, c)| c.kind != Kind::Reference).count();
                if others == 0
                    && let Some(&key) = self.cy.reference.and_then(|r| self.by_idx.get(&r))
                {
                    self.leave(key);
                }
                if self.clients.is_empty() {
                    self.stage = Stage::Quiet;
                    self.quiet_since = Some(now);
                    println!(
                        "{:>6.1} s  everyone has left; {} s of quiet",
                        self.elapsed(now),
                        QUIET.as_secs()
                    );
                }
            }
            Stage::Quiet => {}
        }
        Ok(())
    }

    fn leaving_count(&self) -> usize {
        self.clients.iter().filter(|(_, c)| c.kind.chats() && c.phase == Phase::Leaving).count()
    }

    /// Flooding probes read again; deadlines.
    fn timers(&mut self, now: Instant) {
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            let c = &mut self.clients[key];
            if c.resume_at.is_some_and(|t| now >= t) {
                c.resume_at = None;
                c.stalled = false;
                self.read(key, now);
                continue;
            }
            if c.phase == Phase::Away && c.reconnect_at.is_some_and(|t| now >= t) {
                let unauthenticated = self
                    .clients
                    .iter()
                    .filter(|(_, c)| {
                        matches!(c.phase, Phase::Upgrading | Phase::LoggingIn | Phase::Resuming)
                    })
                    .count();
                if unauthenticated < UNAUTHENTICATED_MAX
                    && let Err(e) = self.reconnect(key, now)
                {
                    let name = self.clients[key].name.clone();
                    self.t.problem(format!("{name}: cannot reconnect: {e}"));
                    self.clients[key].phase = Phase::Chatting;
                    self.end(key, None, "no reconnection".into(), now);
                }
                continue;
            }
            let c = &self.clients[key];
            if c.phase == Phase::Cut
                && c.away_since.is_some_and(|t| now.duration_since(t) > CUT_DEADLINE)
            {
                let name = c.name.clone();
                self.t.problem(format!("{name}: the relay did not cut it within 10 s"));
                self.go_away(key, now);
                continue;
            }
            let age = now.duration_since(c.started);
            let late = if c.kind.chats() {
                matches!(c.phase, Phase::Upgrading | Phase::LoggingIn | Phase::Resuming)
                    && age > LOGIN_DEADLINE
            } else {
                age > PROBE_DEADLINE
            };
            if late {
                self.end(key, None, format!("nothing happened for {} s", age.as_secs()), now);
            }
        }
    }

    fn check_streams(&mut self) {
        for (_, c) in &mut self.clients {
            if !c.stream.pending.is_empty() {
                advance(&mut c.stream, &self.cy.order, &mut self.t, &c.name, false);
            }
        }
    }

    fn elapsed(&self, now: Instant) -> f64 {
        now.duration_since(self.lifetime).as_secs_f64()
    }

    fn sample(&mut self, now: Instant) {
        if now.duration_since(self.last_sample) < Duration::from_secs(1) {
            return;
        }
        self.last_sample = now;
        let r = resources(self.o.pid);
        if let Some(r) = r {
            self.peak.rss_kib = self.peak.rss_kib.max(r.rss_kib);
            self.peak.fds = self.peak.fds.max(r.fds);
        }
        if now.duration_since(self.last_report) >= self.report_every {
            self.last_report = now;
            let online = self.clients.iter().filter(|(_, c)| c.phase == Phase::Chatting).count();
            let (ok, bad) = self.t.answered();
            let server =
                r.map_or(String::new(), |r| format!("  RSS {} KiB  fds {}", r.rss_kib, r.fds));
            println!(
                "{:>6.1} s  online {online:>4}  joins {:>5}  broadcasts {:>6}  private {:>5}  slow cut off {:>3}  bad inputs {ok}/{}  lost {}  reordered {}{server}",
                self.elapsed(now),
                self.t.joins,
                self.t.broadcasts,
                self.t.privates,
                self.t.slow_cut_off,
                ok + bad,
                self.t.lost,
                self.t.reordered,
            );
        }
    }

    // ---- the verdict ---------------------------------------------------

    /// Everyone has left and it has been quiet: the server's figures, and
    /// the checks that needed the cycle's whole order.
    fn end_cycle(&mut self, now: Instant) {
        let after = resources(self.o.pid);
        self.after.push(after);
        if let Some(a) = after {
            println!(
                "{:>6.1} s  cycle {} over: server RSS {} KiB, {} open fds",
                self.elapsed(now),
                self.cycle,
                a.rss_kib,
                a.fds
            );
        }
        // The order is complete: compare what is left.
        let finished = std::mem::take(&mut self.cy.finished);
        for (name, mut stream) in finished {
            advance(&mut stream, &self.cy.order, &mut self.t, &name, true);
            if let Some(k) = stream.joined_live_at
                && k > 0
                && self.cy.history_seen
            {
                self.t.join_gaps += 1;
                self.t.problem(format!(
                    "{name}: no history, and its first broadcast was #{k} of the order"
                ));
            }
            if stream.left_cleanly
                && let Some(&k) = stream.bye.and_then(|id| self.cy.order.index.get(&id))
                && stream.next.unwrap_or(0) <= k
            {
                let next = stream.next.unwrap_or(0);
                self.t.tail_gaps += 1;
                self.t.lost += (k + 1 - next) as u64;
                self.t.problem(format!(
                    "{name}: left after its own broadcast #{k} of the order; #{next}..=#{k} never arrived"
                ));
            }
        }
        // Every broadcast sent reached the reference.
        for (&sender, &sent) in &self.cy.sent_by {
            let got = self.cy.order.next_seq.get(&sender).copied().unwrap_or(0);
            if got < sent {
                self.t.lost += u64::from(sent - got);
                self.t
                    .problem(format!("u{sender}: sent {sent} broadcasts, the reference got {got}"));
            }
        }
        // Private messages: delivered or refused, each one.
        let mut pair_problems = Vec::new();
        for (&(from, to), pair) in &self.cy.pairs {
            let accounted = pair.delivered + pair.offline;
            if accounted < pair.sent {
                pair_problems.push((
                    u64::from(pair.sent - accounted),
                    format!(
                        "u{from} -> u{to}: sent {}, delivered {}, refused {}",
                        pair.sent, pair.delivered, pair.offline
                    ),
                ));
            } else if accounted > pair.sent {
                pair_problems.push((
                    0,
                    format!(
                        "u{from} -> u{to}: sent {}, delivered {} and refused {}",
                        pair.sent, pair.delivered, pair.offline
                    ),
                ));
            }
        }
        for (lost, what) in pair_problems {
            self.t.lost += lost;
            self.t.problem(what);
        }
    }

    fn report(&mut self) -> io::Result<()> {
        let peak_rss = sample(self.o.pid).map_or(self.peak.rss_kib, |s| s.peak_kib);
        let first = self.after.first().copied().flatten();
        let after = self.after.last().copied().flatten();
        let t = &self.t;
        let (ok, bad) = t.answered();
        let secs = self.o.duration.as_secs_f64();
        let mut failures: Vec<String> = Vec::new();
        if t.lost > 0 || t.reordered > 0 || t.unmatched > 0 {
            failures.push(format!(
                "{} lost, {} reordered, {} unmatched",
                t.lost, t.reordered, t.unmatched
            ));
        }
        if t.duplicated > 0
            || t.resets > 0
            || t.seen_leaving > 0
            || t.seen_joining > 0
            || t.before_resumed > 0
        {
            failures.push(format!(
                "{} duplicated, {} resets, {} seen leaving, {} seen joining again, {} room messages before Resumed",
                t.duplicated, t.resets, t.seen_leaving, t.seen_joining, t.before_resumed
            ));
        }
        let relay = self.relay.as_ref().map(|r| {
            let c = &r.counters;
            let get =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            (
                get(&c.cuts),
                get(&c.unknown),
                get(&c.dropped_to_client),
                get(&c.dropped_to_server),
                get(&c.errors),
            )
        });
        if let Some((done, unknown, _, to_server, _)) = relay
            && (done != t.cuts || unknown > 0 || to_server > 0)
        {
            failures.push(format!(
                "the relay made {done} of {} cuts ({unknown} unknown), dropped {to_server} bytes on the way to the server",
                t.cuts
            ));
        }
        if t.problems > 0 {
            failures.push(format!("{} problems (see above)", t.problems));
        }
        let limit = first.map(|f| f.rss_kib + f.rss_kib * RSS_SLACK_PERCENT / 100 + RSS_SLACK_KIB);
        match (self.baseline, after, limit) {
            (Some(b), Some(a), Some(limit)) => {
                for (i, r) in self.after.iter().enumerate() {
                    match r {
                        Some(r) if r.fds != b.fds => failures.push(format!(
                            "{} open fds after cycle {}, {} at the start",
                            r.fds,
                            i + 1,
                            b.fds
                        )),
                        Some(_) => {}
                        None => failures.push(format!("no sample after cycle {}", i + 1)),
                    }
                }
                if a.rss_kib > limit {
                    failures.push(format!(
                        "RSS after the last cycle {} KiB is over the first's + {RSS_SLACK_PERCENT} % + {RSS_SLACK_KIB} KiB = {limit} KiB",
                        a.rss_kib
                    ));
                }
            }
            _ if self.o.pid.is_some() => {
                failures.push("the server process could not be sampled".into())
            }
            _ => {}
        }
        println!();
        println!(
            "soak            {secs:.0} s of traffic in {CYCLES} cycles, {:.0} s in all",
            self.lifetime.elapsed().as_secs_f64()
        );
        println!(
            "users           {} joins, {} left, peak {} online (of -n {})",
            t.joins, t.left, t.peak_online, self.o.users
        );
        println!(
            "broadcasts      {} sent, {} deliveries + {} history replays checked",
            t.broadcasts, t.deliveries, t.replays
        );
        println!(
            "private         {} sent, {} delivered, {} refused as user_offline (target had left)",
            t.privates, t.privates_delivered, t.privates_offline
        );
        println!(
            "slow readers    {} started, {} cut off with slow_reader + 1008 ({} large private messages sent to them, {} read, {} refused after the cut-off)",
            t.slow_started, t.slow_cut_off, t.feeds, t.feeds_delivered, t.feeds_offline
        );
        println!("bad inputs      {ok} answered as expected, {bad} not");
        for (what, (good, wrong)) in &t.answers {
            println!("  {what:<28} {good:>6} ok {wrong:>4} wrong");
        }
        println!(
            "lost/reordered  {} / {}  (unmatched {}, misattributed {}, join gaps {}, tail gaps {}, refused while online {}, users dropped {})",
            t.lost,
            t.reordered,
            t.unmatched,
            t.misattributed,
            t.join_gaps,
            t.tail_gaps,
            t.offline_while_online,
            t.dropped
        );
        let mut resume_ms = t.resume_ms.clone();
        resume_ms.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if resume_ms.is_empty() {
                0.0
            } else {
                resume_ms[((resume_ms.len() - 1) as f64 * p).round() as usize]
            }
        };
        let (p50, p99, max) = (pct(0.5), pct(0.99), resume_ms.last().copied().unwrap_or(0.0));
        if let Some((done, _, to_client, _, errors)) = relay {
            println!(
                "cuts            {} cuts ({done} made by the relay, {to_client} bytes from the server lost in them, {errors} relay errors), {} resumes, {} missed messages replayed; {:.0} s of the run were the slow readers' turns, without cuts",
                t.cuts, t.resumes, t.missed_replayed, t.feeding_secs
            );
            println!(
                "resume          p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (new connection to the snapshot after the missed messages)"
            );
            println!(
                "across cuts     lost {}, duplicated {}, resets {}, seen leaving {}, seen joining again {}, room messages before Resumed {}, other seq faults {}",
                t.lost,
                t.duplicated,
                t.resets,
                t.seen_leaving,
                t.seen_joining,
                t.before_resumed,
                t.seq_faults
            );
        }
        if let (Some(b), Some(a)) = (self.baseline, after) {
            let each = |f: fn(&Resources) -> u64| {
                let v: Vec<String> = self
                    .after
                    .iter()
                    .map(|r| r.map_or("?".into(), |r| f(&r).to_string()))
                    .collect();
                v.join(", ")
            };
            println!(
                "server RSS      {} KiB at the start, peak {peak_rss} KiB; after each cycle {} KiB (limit {} KiB: the first + {RSS_SLACK_PERCENT} % + {RSS_SLACK_KIB} KiB)",
                b.rss_kib,
                each(|r| r.rss_kib),
                limit.unwrap_or(0)
            );
            println!(
                "server fds      {} at the start, peak {}; after each cycle {}",
                b.fds,
                self.peak.fds,
                each(|r| r.fds)
            );
            if a.rss_kib > b.rss_kib + b.rss_kib * RSS_SLACK_PERCENT / 100 + RSS_SLACK_KIB {
                println!(
                    "                (RSS stays above the start: memory glibc keeps after frees, not in use; see soak.rs)"
                );
            }
        }
        for d in &t.details {
            println!("problem: {d}");
        }
        if t.problems > t.details.len() as u64 {
            println!("problem: ... and {} more", t.problems - t.details.len() as u64);
        }
        let verdict = if failures.is_empty() {
            "PASS".to_owned()
        } else {
            format!("FAIL: {}", failures.join("; "))
        };
        println!("seed            {} (--seed repeats the choices, not the timing)", self.seed);
        println!("verdict         {verdict}");
        let opt = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
        println!(
            "{{\"scenario\":\"soak\",\"ok\":{},\"seconds\":{secs},\"users\":{},\"joins\":{},\"left\":{},\"peak_online\":{},\"broadcasts\":{},\"deliveries\":{},\"replays\":{},\"privates\":{},\"privates_delivered\":{},\"privates_offline\":{},\"lost\":{},\"reordered\":{},\"unmatched\":{},\"problems\":{},\"slow_started\":{},\"slow_cut_off\":{},\"bad_inputs_ok\":{ok},\"bad_inputs_wrong\":{bad},\"bad_input_kinds\":{},\"rss_baseline_kib\":{},\"rss_peak_kib\":{},\"rss_first_cycle_kib\":{},\"rss_after_kib\":{},\"fds_baseline\":{},\"fds_peak\":{},\"fds_after\":{},\"cuts\":{},\"resumes\":{},\"missed_replayed\":{},\"duplicated\":{},\"resets\":{},\"seen_leaving\":{},\"seen_joining\":{},\"seq_faults\":{},\"before_resumed\":{},\"resume_p50_ms\":{p50:.1},\"resume_p99_ms\":{p99:.1},\"resume_max_ms\":{max:.1}}}",
            failures.is_empty(),
            self.o.users,
            t.joins,
            t.left,
            t.peak_online,
            t.broadcasts,
            t.deliveries,
            t.replays,
            t.privates,
            t.privates_delivered,
            t.privates_offline,
            t.lost,
            t.reordered,
            t.unmatched,
            t.problems,
            t.slow_started,
            t.slow_cut_off,
            t.answers.values().filter(|(good, _)| *good > 0).count(),
            opt(self.baseline.map(|b| b.rss_kib)),
            opt(self.baseline.map(|_| peak_rss)),
            opt(first.map(|a| a.rss_kib)),
            opt(after.map(|a| a.rss_kib)),
            opt(self.baseline.map(|b| b.fds)),
            opt(self.baseline.map(|_| self.peak.fds)),
            opt(after.map(|a| a.fds)),
            t.cuts,
            t.resumes,
            t.missed_replayed,
            t.duplicated,
            t.resets,
            t.seen_leaving,
            t.seen_joining,
            t.seq_faults,
            t.before_resumed,
        );
        if failures.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(format!("soak failed: {}", failures.join("; "))))
        }
    }
}

/// Compares a user's received broadcasts with the order, as far as the
/// reference has got; once the order is `complete`, a broadcast the
/// reference never got is counted as unmatched and passed over.
fn advance(stream: &mut Stream, order: &Order, t: &mut Tally, name: &str, complete: bool) {
    while let Some(&(id, history)) = stream.pending.front() {
        stream.pending.pop_front();
        let Some(&k) = order.index.get(&id) else {
            if !complete {
                stream.pending.push_front((id, history));
                break;
            }
            t.unmatched += 1;
            t.problem(format!(
                "{name}: got broadcast {}:{}, the reference never did",
                id >> 32,
                id as u32
            ));
            continue;
        };
        match stream.next {
            None => {
                if !history {
                    stream.joined_live_at = Some(k);
                }
                stream.next = Some(k + 1);
            }
            Some(next) if k == next => stream.next = Some(k + 1),
            Some(next) if k > next => {
                t.lost += (k - next) as u64;
                t.problem(format!("{name}: broadcasts #{next}..#{} of the order missing", k - 1));
                stream.next = Some(k + 1);
            }
            Some(next) => {
                t.reordered += 1;
                t.problem(format!("{name}: broadcast #{k} after #{}", next - 1));
            }
        }
    }
}

fn pad(text: &mut String, size: usize) {
    while text.len() < size {
        text.push('x');
    }
}

/// Reads all the socket has into `inbox` (plaintext, through TLS when on):
/// `Ok(true)` while open, `Ok(false)` at the end of the stream. Reads until
/// WouldBlock, so that an end of stream that came with the last bytes is
/// seen.
fn read_into(
    socket: &mut TcpStream,
    tls: Option<&mut rustls::ClientConnection>,
    inbox: &mut Vec<u8>,
    buf: &mut [u8],
) -> io::Result<bool> {
    let Some(tls) = tls else {
        loop {
            match socket.read(buf) {
                Ok(0) => return Ok(false),
                Ok(n) => inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    };
    loop {
        let (eof, blocked) = match tls.read_tls(socket) {
            Ok(0) => (true, false),
            Ok(_) => (false, false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => (false, true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        tls.process_new_packets().map_err(io::Error::other)?;
        loop {
            match tls.reader().read(buf) {
                Ok(0) => return Ok(false),
                Ok(n) => inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if eof {
            return Ok(false);
        }
        if blocked {
            return Ok(true);
        }
    }
}

/// Writes what the socket takes; the rest waits for the next writable event.
fn write_from(
    socket: &mut TcpStream,
    tls: Option<&mut rustls::ClientConnection>,
    outbox: &mut VecDeque<u8>,
) -> io::Result<()> {
    let Some(tls) = tls else {
        while !outbox.is_empty() {
            let (a, b) = outbox.as_slices();
            match socket.write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)]) {
                Ok(n) => {
                    outbox.drain(..n);
                }
                Err(e) if not_yet(&e) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    };
    loop {
        while !outbox.is_empty() {
            let (a, _) = outbox.as_slices();
            let n = tls.writer().write(a)?;
            if n == 0 {
                break;
            }
            outbox.drain(..n);
        }
        if !tls.wants_write() {
            return Ok(());
        }
        while tls.wants_write() {
            match tls.write_tls(socket) {
                Ok(_) => {}
                Err(e) if not_yet(&e) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Order, Stream, Tally, advance};

    fn order(ids: &[u64]) -> Order {
        let mut order = Order::default();
        for &id in ids {
            order.index.insert(id, order.ids.len());
            order.ids.push(id);
        }
        order
    }

    fn check(order: &Order, received: &[(u64, bool)]) -> (Stream, Tally) {
        let (mut stream, mut t) = (Stream::default(), Tally::default());
        stream.pending.extend(received);
        advance(&mut stream, order, &mut t, "u1", false);
        (stream, t)
    }

    #[test]
    fn an_unbroken_run_of_the_order_passes_from_wherever_it_starts() {
        let order = order(&[10, 11, 12, 13, 14]);
        let (stream, t) = check(&order, &[(11, true), (12, true), (13, false), (14, false)]);
        assert_eq!((t.lost, t.reordered, t.problems), (0, 0, 0));
        assert_eq!((stream.next, stream.joined_live_at), (Some(5), None));
        // A joiner without history whose first broadcast was not the first.
        let (stream, _) = check(&order, &[(13, false)]);
        assert_eq!(stream.joined_live_at, Some(3));
    }

    #[test]
    fn gaps_count_as_lost_and_going_back_as_reordered() {
        let order = order(&[1, 2, 3, 4, 5, 6]);
        let (stream, t) = check(&order, &[(1, false), (2, false), (5, false), (6, false)]);
        assert_eq!((t.lost, t.reordered, stream.next), (2, 0, Some(6)));
        let (_, t) = check(&order, &[(1, false), (3, false), (2, false), (4, false)]);
        assert_eq!((t.lost, t.reordered), (1, 1));
        let (_, t) = check(&order, &[(1, false), (2, false), (2, false), (3, false)]);
        assert_eq!((t.lost, t.reordered), (0, 1));
    }

    #[test]
    fn what_the_reference_has_not_had_yet_waits() {
        let mut partial = order(&[7, 8]);
        let (mut stream, mut t) =
            check(&partial, &[(7, false), (8, false), (9, false), (10, false)]);
        assert_eq!((stream.pending.len(), t.problems), (2, 0));
        for id in [9, 10] {
            partial.index.insert(id, partial.ids.len());
            partial.ids.push(id);
        }
        advance(&mut stream, &partial, &mut t, "u1", false);
        assert_eq!((stream.pending.len(), stream.next, t.problems), (0, Some(4), 0));
        // Once the order is complete, one the reference never got is passed over.
        stream.pending.extend([(99, false), (11, false)]);
        partial.index.insert(11, partial.ids.len());
        partial.ids.push(11);
        advance(&mut stream, &partial, &mut t, "u1", true);
        assert_eq!((t.unmatched, t.lost, stream.next), (1, 0, Some(5)));
    }
}
