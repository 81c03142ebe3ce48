//! Load generator for Ragnarok (and anything speaking its protocol). One mio
//! loop drives every client; received frames are scanned for the few bytes
//! a scenario needs instead of being parsed into JSON trees, so it costs far
//! less per message than the server it measures.
//!
//! Scenarios: fanout (closed loop, or open loop with `--rate`: `openloop.rs`),
//! joinstorm, idle, private; soak, a long mixed run that checks every
//! delivery and answer (`soak.rs`); and floor against relay, the kernel's
//! cost without any server logic (`floor.rs`). See `--help`.

mod cut;
mod floor;
mod openloop;
mod soak;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const HELP: &str = "\
Usage: ragnarok-load SCENARIO [options]

Scenarios:
  fanout     N users; C of them send closed-loop Broadcasts for T seconds
             (with --rate R: open loop, each sends R/s on its own schedule)
  joinstorm  N users connect and log in as fast as possible
  idle       N users logged in and held for T seconds (sample memory)
  private    K pairs exchange PrivateMessages closed-loop for T seconds
  relay      serve as a bare relay: bytes from connection 2i go to 2i+1 and back
  floor      K pairs bounce S-byte messages through a relay (the kernel's floor)
  soak       for T seconds (two cycles) about N users come and go, broadcast,
             send private messages and bad inputs, a few read slowly; checks
             every delivery and answer, and with --pid the server's open fds
             and RSS after each cycle; exits non-zero on any fault

Options:
  --addr HOST:PORT   server address (default 127.0.0.1:12345); fanout, idle and
                     joinstorm take it several times (a cluster's nodes): user i
                     connects to the (i mod n)-th
  --password P       room password (default empty)
  -n N               users (default 1000; soak 200)
  -c C               senders in fanout (default 10)
  -k K               pairs in private (default 50)
  -t SECS            duration (default 10)
  -s BYTES           message text size (default 60)
  --rate R           fanout open loop: each sender sends R messages/s whatever
                     comes back (C x R offered in all, phases spread evenly)
  --sealed           fanout: every Broadcast text in an e2e_room's sealed form,
                     e2er1:1:<index>:<base64>, at least S long (the base64 a
                     multiple of 4, at least 124), random after the counters
  --tls CA_PEM       use wss, trusting this certificate (name: localhost)
  --pid PID          sample this server process's CPU time and memory; several
                     times: each process (a cluster's nodes, redis-server) and
                     their total
  --concurrency M    handshakes in flight at once (default 1024, the server's listen backlog)
  --prefix P         fanout, idle, joinstorm: users are named P0, P1, ... (default u);
                     two load generators in one room need different prefixes
  --resume           fanout, idle, joinstorm: users log in with
                     {\"msgType\":\"Login\",\"name\":...}, as clients that can
                     resume (a resume token at login, a seq on every room message)

Soak options:
  --rate R               broadcasts per second, all users together (default 50)
  --private-rate P       private messages per second (default 20)
  --slow K               slow readers at a time (default 3)
  --max-message-bytes B  the server's max_message_bytes (default 16384)
  --seed S               random seed (default: from the clock)
  --cuts R               R cuts a second: chat users connect through a relay in
                         the load generator that drops the TCP connections of
                         random users (one, sometimes several) without a Close;
                         they reconnect and resume ({\"msgType\":\"Resume\"}); a
                         quarter of the users log in the old way and are never
                         cut (default 0: no relay, every user logs in the old way)
  --cut-away MS          a cut user reconnects after 0 to MS ms (default 2000)";

struct Options {
    scenario: String,
    /// The first of `addrs` (the only one outside fanout, idle, joinstorm).
    addr: SocketAddr,
    /// Every `--addr`, in order: user i connects to `addrs[i % n]`.
    addrs: Vec<SocketAddr>,
    password: String,
    users: usize,
    senders: usize,
    pairs: usize,
    duration: Duration,
    size: usize,
    /// The first of `pids` (for the scenarios that sample one process).
    pid: Option<u32>,
    /// Every `--pid`, in order: sampled each, reported each and in total.
    pids: Vec<u32>,
    concurrency: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    soak: soak::Settings,
    /// fanout: messages per second per sender (open loop); None = closed loop.
    rate: Option<f64>,
    /// Users are named `{prefix}{i}`.
    prefix: String,
    /// fanout: Broadcasts in the sealed form an `e2e_room` relays.
    sealed: bool,
    /// Users log in with `{"msgType":"Login"}` (resumable sessions).
    resume: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        scenario: String::new(),
        addr: "127.0.0.1:12345".parse().unwrap(),
        addrs: Vec::new(),
        password: String::new(),
        users: 1000,
        senders: 10,
        pairs: 50,
        duration: Duration::from_secs(10),
        size: 60,
        pid: None,
        pids: Vec::new(),
        concurrency: 1024,
        tls: None,
        soak: soak::Settings::default(),
        rate: None,
        prefix: "u".into(),
        sealed: false,
        resume: false,
    };
    let mut users = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match arg.as_str() {
            "-h" | "--help" => return Err(HELP.into()),
            "--addr" => o.addrs.push(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--password" => o.password = value()?,
            "-n" => users = Some(number(value()?)?),
            "-c" => o.senders = number(value()?)?,
            "-k" => o.pairs = number(value()?)?,
            "-t" => o.duration = Duration::from_secs_f64(number(value()?)? as f64),
            "-s" => o.size = number(value()?)?,
            "--tls" => o.tls = Some(tls_config(&value()?)?),
            "--pid" => {
                let v = value()?;
                let pid = v.parse::<u32>().map_err(|e| format!("--pid {v}: {e}"))?;
                o.pids.push(pid);
            }
            "--concurrency" => o.concurrency = number(value()?)?.max(1),
            "--prefix" => o.prefix = value()?,
            "--sealed" => o.sealed = true,
            "--resume" => o.resume = true,
            // The soak's own options (its --rate too) follow its name.
            a if o.scenario == "soak" && soak::Settings::takes(a) => o.soak.set(a, &value()?)?,
            "--rate" => {
                let v = value()?;
                let rate = v.parse::<f64>().map_err(|e| format!("--rate {v}: {e}"))?;
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(format!("--rate {v}: messages per second per sender, above 0"));
                }
                o.rate = Some(rate);
            }
            a if soak::Settings::takes(a) => o.soak.set(a, &value()?)?,
            s if o.scenario.is_empty() && !s.starts_with('-') => o.scenario = s.to_owned(),
            _ => return Err(format!("unknown argument {arg:?}\n\n{HELP}")),
        }
    }
    o.users = users.unwrap_or(if o.scenario == "soak" { 200 } else { 1000 });
    match o.scenario.as_str() {
        "fanout" | "joinstorm" | "idle" | "soak" => {}
        "private" | "floor" => o.users = o.pairs * 2,
        "relay" => {}
        "" => return Err(HELP.into()),
        s => return Err(format!("unknown scenario {s:?}\n\n{HELP}")),
    }
    if o.rate.is_some() && o.scenario != "fanout" {
        return Err("--rate is for fanout only".into());
    }
    if o.sealed && o.scenario != "fanout" {
        return Err("--sealed is for fanout only".into());
    }
    if o.addrs.len() > 1 && !matches!(o.scenario.as_str(), "fanout" | "idle" | "joinstorm") {
        return Err("several --addr are for fanout, idle and joinstorm only".into());
    }
    if o.pids.len() > 1 && !matches!(o.scenario.as_str(), "fanout" | "idle" | "joinstorm") {
        return Err("several --pid are for fanout, idle and joinstorm only".into());
    }
    if o.resume && !matches!(o.scenario.as_str(), "fanout" | "idle" | "joinstorm") {
        return Err("--resume is for fanout, idle and joinstorm only (the soak: --cuts)".into());
    }
    if o.prefix != "u" && !matches!(o.scenario.as_str(), "fanout" | "idle" | "joinstorm") {
        return Err("--prefix is for fanout, idle and joinstorm only".into());
    }
    if let Some(&first) = o.addrs.first() {
        o.addr = first;
    } else {
        o.addrs.push(o.addr);
    }
    o.pid = o.pids.first().copied();
    o.senders = o.senders.min(o.users);
    Ok(o)
}

/// The WebSocket upgrade every client opens with.
fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

fn tls_config(ca: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let cert = CertificateDer::from_pem_file(ca).map_err(|e| format!("{ca}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).map_err(|e| format!("{ca}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// CPU time and memory of the server process, from /proc.
#[derive(Clone, Copy, Default)]
struct ProcSample {
    cpu: Duration,
    /// The part of `cpu` spent in the kernel (system calls, TCP).
    sys: Duration,
    rss_kib: u64,
    peak_kib: u64,
}

fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let sys: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf takes a plain integer, touches no memory of ours and
    // has no preconditions; its -1 (unknown) is clamped to 1 below.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let time = |ticks: u64| Duration::from_micros(ticks * 1_000_000 / hz);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some(ProcSample {
        cpu: time(user + sys),
        sys: time(sys),
        rss_kib: kib("VmRSS:")?,
        peak_kib: kib("VmHWM:")?,
    })
}

/// Every `--pid` sampled at one moment, in the order given.
#[derive(Clone, Default)]
struct Procs {
    pids: Vec<u32>,
    each: Vec<ProcSample>,
}

impl Procs {
    /// The processes together (CPU times and memory added up).
    fn total(&self) -> ProcSample {
        self.each.iter().fold(ProcSample::default(), |t, p| ProcSample {
            cpu: t.cpu + p.cpu,
            sys: t.sys + p.sys,
            rss_kib: t.rss_kib + p.rss_kib,
            peak_kib: t.peak_kib + p.peak_kib,
        })
    }
}

/// Samples every process of `pids`; `None` if there are none or one of
/// them could not be read (it has exited).
fn sample_all(pids: &[u32]) -> Option<Procs> {
    if pids.is_empty() {
        return None;
    }
    let each = pids.iter().map(|&p| sample(Some(p))).collect::<Option<Vec<_>>>()?;
    Some(Procs { pids: pids.to_vec(), each })
}

/// Each process's share of a window, when several were sampled: its CPU
/// in % of one core over `wall` seconds and per delivery (of all the
/// room's deliveries), and its RSS at the end. One line each for the
/// human-readable report, and a JSON array (`,"procs":[...]`, empty with
/// one process so that its output stays as it was).
fn per_process(
    before: Option<&Procs>,
    after: Option<&Procs>,
    wall: f64,
    deliveries: u64,
) -> (Vec<String>, String) {
    let Some(after) = after.filter(|a| a.each.len() > 1) else {
        return (Vec::new(), String::new());
    };
    let (mut lines, mut json) = (Vec::new(), Vec::new());
    for (k, (&pid, a)) in after.pids.iter().zip(&after.each).enumerate() {
        let b = before.and_then(|b| b.each.get(k));
        let cpu = b.map(|b| a.cpu.saturating_sub(b.cpu).as_secs_f64());
        let sys = b.map(|b| a.sys.saturating_sub(b.sys).as_secs_f64());
        let pct = cpu.map(|c| c * 100.0 / wall.max(1e-9));
        let per = cpu.filter(|_| deliveries > 0).map(|c| c * 1e6 / deliveries as f64);
        let sys_per = sys.filter(|_| deliveries > 0).map(|c| c * 1e6 / deliveries as f64);
        let mut line = format!("  pid {pid:<8}  RSS {} KiB (peak {} KiB)", a.rss_kib, a.peak_kib);
        if let (Some(pct), Some(per), Some(k)) = (pct, per, sys_per) {
            line += &format!(
                "; CPU {pct:.1} % of one core = {per:.3} us per delivery ({k:.3} in the kernel)"
            );
        } else if let Some(pct) = pct {
            line += &format!("; CPU {pct:.1} % of one core");
        }
        lines.push(line);
        let opt = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.4}"));
        json.push(format!(
            "{{\"pid\":{pid},\"cpu_pct\":{},\"cpu_us_per_delivery\":{},\"sys_us_per_delivery\":{},\"rss_kib\":{},\"peak_rss_kib\":{}}}",
            opt(pct),
            opt(per),
            opt(sys_per),
            a.rss_kib,
            a.peak_kib
        ));
    }
    (lines, format!(",\"procs\":[{}]", json.join(",")))
}

/// The load generator's own CPU over a stretch of wall time. Near 100 % of
/// its core, the figures show the load generator's ceiling, not the server's.
struct OwnCpu {
    wall: Instant,
    cpu: Option<Duration>,
}

impl OwnCpu {
    fn start() -> Self {
        OwnCpu { wall: Instant::now(), cpu: sample(Some(std::process::id())).map(|s| s.cpu) }
    }

    /// Percent of one core used since `start`.
    fn percent(&self) -> Option<f64> {
        let used = sample(Some(std::process::id()))?.cpu.saturating_sub(self.cpu?);
        Some(used.as_secs_f64() * 100.0 / self.wall.elapsed().as_secs_f64().max(1e-9))
    }
}

#[derive(PartialEq)]
enum Phase {
    Connecting,
    Upgrading,
    LoggingIn,
    Ready,
    Dead,
}

struct Client {
    socket: TcpStream,
    tls: Option<rustls::ClientConnection>,
    phase: Phase,
    inbox: Vec<u8>,
    outbox: VecDeque<u8>,
    name: String,
    /// fanout: next sequence number to send (senders only).
    seq: u64,
    /// fanout: last sequence seen from each sender.
    last_seen: Vec<u64>,
}

/// The socket as rustls reads it, noting a short read: the kernel had no
/// more, so the next read would only say WouldBlock (see `read_plain`).
struct ShortRead<'a> {
    socket: &'a mut TcpStream,
    short: bool,
}

impl Read for ShortRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// A masked client text frame (mask key 0: valid, and free to apply).
fn frame(opcode: u8, payload: &[u8], out: &mut VecDeque<u8>) {
    out.push_back(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push_back(0x80 | len as u8);
    } else if len < 65536 {
        out.push_back(0x80 | 126);
        out.extend((len as u16).to_be_bytes());
    } else {
        out.push_back(0x80 | 127);
        out.extend((len as u64).to_be_bytes());
    }
    out.extend([0, 0, 0, 0]);
    out.extend(payload);
}

/// The index just past the first `key` in `hay` (e.g. where the text after
/// `"text":"` starts). Compares only where the key's first byte occurs (a
/// `"` a dozen times per message, instead of at every byte).
fn find(hay: &[u8], key: &[u8]) -> Option<usize> {
    let (&first, rest) = key.split_first()?;
    let mut from = 0;
    while let Some(p) = index_of(hay.get(from..)?, first) {
        let at = from + p + 1;
        if hay[at..].starts_with(rest) {
            return Some(at + rest.len());
        }
        from = at;
    }
    None
}

/// The first `byte` in `hay`, looking at eight bytes per step (a zero byte
/// of `word ^ pattern` is a match; the lowest flagged byte is the first).
fn index_of(hay: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let pattern = u64::from_le_bytes([byte; 8]);
    let mut chunks = hay.chunks_exact(8);
    for (n, chunk) in (&mut chunks).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap()) ^ pattern;
        let zero = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero != 0 {
            return Some(n * 8 + zero.trailing_zeros() as usize / 8);
        }
    }
    let tail = hay.len() - chunks.remainder().len();
    chunks.remainder().iter().position(|&b| b == byte).map(|p| tail + p)
}

/// A message's text (up to its closing quote: ours hold none) and whether
/// it is flagged `"history":true`, found in one pass over its quotes, the
/// fields in any order.
fn text_of(payload: &[u8]) -> Option<(&[u8], bool)> {
    let (mut text, mut history) = (None, false);
    let mut rest = payload;
    while let Some(p) = index_of(rest, b'"') {
        rest = &rest[p + 1..];
        if let Some(value) = rest.strip_prefix(b"text\":\"") {
            let end = index_of(value, b'"').unwrap_or(value.len());
            text = Some(&value[..end]);
            rest = value.get(end + 1..).unwrap_or_default();
        } else if rest.starts_with(b"history\":true") {
            history = true;
        }
    }
    text.map(|t| (t, history))
}

/// `--sealed`: a room message as an `e2e_room` relays it (docs/PROTOCOL.md,
/// "The end-to-end encrypted room"), `e2er1:1:<index>:<base64>`: the index
/// 10 digits wide and the base64 a multiple of 4 long, so that every text of
/// a run is the same length (at least `size`, the base64 at least the
/// server's 124); the base64 opens with `sender+seq+stamp+` (`+` is a
/// base64 character; `numbers` reads it as the plain form's `:`) and is
/// random after. The server checks the form only, so this is the load a
/// real client's ciphertext puts on it.
fn sealed_text(sender: usize, seq: u64, stamp: u64, size: usize, rng: &mut u64) -> String {
    const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = format!("e2er1:1:{}:", 1_000_000_000 + seq);
    let body = (size.saturating_sub(text.len()).max(124)).next_multiple_of(4);
    let start = text.len();
    text += &format!("{sender}+{seq}+{stamp}+");
    while text.len() - start < body {
        // xorshift64: ten base64 characters per step.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let bits = *rng;
        let take = (body - (text.len() - start)).min(10);
        text.extend((0..take).map(|k| char::from(BASE64[(bits >> (6 * k)) as usize & 63])));
    }
    text
}

/// The part of a Broadcast text that `numbers` reads: all of a plain one,
/// the base64 of a sealed one (`sealed_text`).
fn counters(text: &[u8]) -> &[u8] {
    match text.strip_prefix(b"e2er1:") {
        Some(rest) => rest.splitn(3, |&b| b == b':').nth(2).unwrap_or_default(),
        None => text,
    }
}

fn numbers(s: &[u8]) -> [u64; 3] {
    let mut out = [0u64; 3];
    let mut i = 0;
    for &b in s {
        match b {
            b'0'..=b'9' => out[i] = out[i] * 10 + u64::from(b - b'0'),
            b':' | b'+' if i < 2 => i += 1,
            _ => break,
        }
    }
    out
}

#[derive(Default)]
struct Stats {
    deliveries: u64,
    sent: u64,
    lost: u64,
    reordered: u64,
    latencies_us: Vec<u32>,
    logged_in: usize,
    dead: usize,
    bytes_in: u64,
}

struct Load {
    o: Options,
    poll: Poll,
    clients: Vec<Client>,
    start: Instant,
    stats: Stats,
    /// Senders stop sending after this.
    sending_until: Option<Instant>,
    measuring: bool,
    next_to_connect: usize,
    handshaking: usize,
    /// When the event being handled was read: one clock read per event,
    /// not per frame, and the receive time of every frame that came with it.
    /// A run ends once this is 300 ms old (the room has gone quiet).
    last_activity: Instant,
    /// One read buffer for all clients (allocated once, never cleared).
    buf: Vec<u8>,
    /// fanout --rate: the senders' schedule.
    open: Option<openloop::OpenLoop>,
    /// `--sealed`: the random state of `sealed_text` (xorshift64, never 0).
    rng: u64,
}

impl Load {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// When the frames being handled arrived, in µs since start.
    fn received_us(&self) -> u64 {
        self.last_activity.duration_since(self.start).as_micros() as u64
    }

    fn connect_more(&mut self) -> io::Result<()> {
        while self.next_to_connect < self.clients.len() && self.handshaking < self.o.concurrency {
            let i = self.next_to_connect;
            let c = &mut self.clients[i];
            self.poll.registry().register(
                &mut c.socket,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let addr = self.o.addrs[i % self.o.addrs.len()];
            c.outbox.extend(upgrade_request(addr).as_bytes());
            c.phase = Phase::Upgrading;
            self.next_to_connect += 1;
            self.handshaking += 1;
        }
        Ok(())
    }

    fn send_broadcast(&mut self, i: usize) {
        let now = self.now_us();
        let c = &mut self.clients[i];
        let text = if self.o.sealed {
            sealed_text(i, c.seq, now, self.o.size, &mut self.rng)
        } else {
            let mut text = format!("{i}:{}:{now}:", c.seq);
            while text.len() < self.o.size {
                text.push('x');
            }
            text
        };
        c.seq += 1;
        self.stats.sent += 1;
        let json = format!("{{\"msgType\":\"Broadcast\",\"text\":\"{text}\"}}");
        frame(1, json.as_bytes(), &mut c.outbox);
    }

    fn send_private(&mut self, i: usize, stamp: u64) {
        let peer = i ^ 1;
        let c = &mut self.clients[i];
        let mut text = format!("{i}:{stamp}:");
        while text.len() < self.o.size {
            text.push('x');
        }
        let json = format!(
            "{{\"msgType\":\"PrivateMessage\",\"TgtUser\":\"u{peer}\",\"text\":\"{text}\"}}"
        );
        frame(1, json.as_bytes(), &mut c.outbox);
    }

    fn on_logged_in(&mut self) {
        self.stats.logged_in += 1;
        self.handshaking -= 1;
        let _ = self.connect_more();
        if self.stats.logged_in == self.clients.len() {
            self.begin_measuring();
        }
    }

    /// Records the latency of a message stamped `stamp` (µs since start).
    fn record_latency(&mut self, stamp: u64) {
        let latency = self.received_us().saturating_sub(stamp);
        if self.stats.latencies_us.len() < 50_000_000 {
            self.stats.latencies_us.push(latency.min(u64::from(u32::MAX)) as u32);
        }
    }

    fn begin_measuring(&mut self) {
        self.measuring = true;
        let now = Instant::now();
        if matches!(self.o.scenario.as_str(), "fanout" | "private") {
            self.sending_until = Some(now + self.o.duration);
        }
    }

    fn kick_off(&mut self) {
        match self.o.scenario.as_str() {
            "fanout" if self.open.is_some() => {
                let start = self.sending_until.map_or_else(Instant::now, |t| t - self.o.duration);
                self.open_loop_begin(start);
            }
            "fanout" => {
                for i in 0..self.o.senders {
                    self.send_broadcast(i);
                }
            }
            "private" => {
                for i in (0..self.clients.len()).step_by(2) {
                    let now = self.now_us();
                    self.send_private(i, now);
                    self.stats.sent += 1;
                }
            }
            _ => {}
        }
    }

    /// Scans one text frame for what the scenario needs.
    fn on_text(&mut self, i: usize, payload: &[u8]) {
        // Servers may order fields differently: look for the type anywhere.
        let kind = match find(payload, b"\"msgType\":\"") {
            Some(at) => &payload[at..at + index_of(&payload[at..], b'"').unwrap_or(0)],
            None => &[][..],
        };
        let c = &mut self.clients[i];
        match c.phase {
            Phase::LoggingIn if kind == b"OnlineUsers" => {
                c.phase = Phase::Ready;
                self.on_logged_in();
                return;
            }
            Phase::Ready => {}
            _ => return,
        }
        if kind == b"Broadcast" && self.o.scenario == "fanout" {
            // Replays of the room's history (an earlier run's messages, when
            // the server was not restarted) are not part of this run.
            let Some((text, false)) = text_of(payload) else { return };
            let [sender, seq, stamp] = numbers(counters(text));
            let sender = sender as usize;
            if sender >= c.last_seen.len() {
                return;
            }
            // `last` is u64::MAX before the first message, so +1 wraps to 0.
            let last = &mut c.last_seen[sender];
            let expected = last.wrapping_add(1);
            if seq > expected {
                self.stats.lost += seq - expected;
            } else if seq < expected {
                self.stats.reordered += 1;
            }
            *last = seq;
            if self.measuring {
                self.stats.deliveries += 1;
                self.record_latency(stamp);
            }
            let closed_loop = self.open.is_none();
            if closed_loop
                && sender == i
                && self.sending_until.is_some_and(|t| self.last_activity < t)
            {
                self.send_broadcast(i);
            }
        } else if kind == b"PrivateMessage" && self.o.scenario == "private" {
            let Some((text, _)) = text_of(payload) else { return };
            let [origin, stamp, _] = numbers(text);
            let sending = self.sending_until.is_some_and(|t| self.last_activity < t);
            if origin as usize == i {
                // A round trip completed.
                self.stats.deliveries += 1;
                self.record_latency(stamp);
                if sending {
                    let now = self.now_us();
                    self.send_private(i, now);
                    self.stats.sent += 1;
                }
            } else {
                // Echo it back to its origin, keeping the stamp.
                let c = &mut self.clients[i];
                let json = format!(
                    "{{\"msgType\":\"PrivateMessage\",\"TgtUser\":\"u{origin}\",\"text\":\"{origin}:{stamp}:\"}}"
                );
                frame(1, json.as_bytes(), &mut c.outbox);
            }
        }
    }

    fn on_readable(&mut self, i: usize) {
        self.last_activity = Instant::now();
        let mut buf = std::mem::take(&mut self.buf);
        let alive = if self.clients[i].tls.is_some() {
            self.read_tls(i, &mut buf)
        } else {
            self.read_plain(i, &mut buf)
        };
        self.buf = buf;
        if !alive {
            self.kill(i);
        }
    }

    /// Reads TLS records and hands their plaintext on.
    fn read_tls(&mut self, i: usize, buf: &mut [u8]) -> bool {
        loop {
            let c = &mut self.clients[i];
            let Some(tls) = c.tls.as_mut() else { return false };
            let mut socket = ShortRead { socket: &mut c.socket, short: false };
            match tls.read_tls(&mut socket) {
                Ok(0) => return false,
                Ok(n) => self.stats.bytes_in += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
            let drained = socket.short;
            if tls.process_new_packets().is_err() {
                return false;
            }
            loop {
                let Some(tls) = self.clients[i].tls.as_mut() else { return false };
                match tls.reader().read(buf) {
                    Ok(0) => return false,
                    Ok(n) => {
                        if !self.take_in(i, &buf[..n]) {
                            return true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
            if drained {
                return true;
            }
        }
    }

    /// Reads until the socket is empty: a short read means it is (like the
    /// server, the next edge-triggered event brings any later data), which
    /// spares a read that would only say WouldBlock.
    fn read_plain(&mut self, i: usize, buf: &mut [u8]) -> bool {
        loop {
            match self.clients[i].socket.read(buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    if !self.take_in(i, &buf[..n]) || n < buf.len() {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Handles bytes that arrived: the upgrade response, then frames, read
    /// straight from `data` when nothing is left over from earlier reads.
    /// False once the client is dead.
    fn take_in(&mut self, i: usize, data: &[u8]) -> bool {
        let c = &mut self.clients[i];
        if c.phase == Phase::Ready && c.inbox.is_empty() {
            let used = self.frames(i, data);
            let c = &mut self.clients[i];
            c.inbox.extend_from_slice(&data[used..]);
            return c.phase != Phase::Dead;
        }
        c.inbox.extend_from_slice(data);
        if c.phase == Phase::Upgrading {
            let Some(end) = find(&c.inbox, b"\r\n\r\n") else { return true };
            if !c.inbox.starts_with(b"HTTP/1.1 101") {
                self.kill(i);
                return false;
            }
            c.inbox.drain(..end);
            c.phase = Phase::LoggingIn;
            let password = self.o.password.clone();
            let name = if self.o.resume {
                format!(r#"{{"msgType":"Login","name":"{}"}}"#, c.name)
            } else {
                c.name.clone()
            };
            frame(1, password.as_bytes(), &mut c.outbox);
            frame(1, name.as_bytes(), &mut c.outbox);
        }
        let inbox = std::mem::take(&mut self.clients[i].inbox);
        let used = self.frames(i, &inbox);
        let c = &mut self.clients[i];
        c.inbox = inbox;
        c.inbox.drain(..used);
        c.phase != Phase::Dead
    }

    /// Handles the whole frames at the start of `data`; returns how many
    /// bytes they took.
    fn frames(&mut self, i: usize, data: &[u8]) -> usize {
        let mut at = 0;
        while data.len() - at >= 2 {
            let (b0, b1) = (data[at], data[at + 1]);
            let (len, head): (usize, usize) = match b1 & 0x7f {
                126 if data.len() - at >= 4 => {
                    (u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize, 4)
                }
                127 if data.len() - at >= 10 => {
                    (u64::from_be_bytes(data[at + 2..at + 10].try_into().unwrap()) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if data.len() - at < head.saturating_add(len) {
                break;
            }
            let payload = &data[at + head..at + head + len];
            match b0 & 0x0f {
                1 => self.on_text(i, payload),
                8 => {
                    self.kill(i);
                    return data.len();
                }
                9 => frame(0xA, payload, &mut self.clients[i].outbox),
                _ => {}
            }
            at += head + len;
        }
        at
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if let Some(tls) = c.tls.as_mut() {
            if !c.outbox.is_empty() {
                let (a, b) = c.outbox.as_slices();
                if let Ok(n) =
                    tls.writer().write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
                {
                    c.outbox.drain(..n);
                }
            }
            while tls.wants_write() {
                match tls.write_tls(&mut c.socket) {
                    Ok(_) => {}
                    Err(e) if not_yet(&e) => return,
                    Err(_) => {
                        self.kill(i);
                        return;
                    }
                }
            }
            return;
        }
        while !c.outbox.is_empty() {
            let (a, b) = c.outbox.as_slices();
            match c.socket.write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)]) {
                Ok(n) => {
                    c.outbox.drain(..n);
                }
                Err(e) if not_yet(&e) => return,
                Err(_) => {
                    self.kill(i);
                    return;
                }
            }
        }
    }

    fn kill(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.phase != Phase::Dead {
            if c.phase != Phase::Ready {
                self.handshaking = self.handshaking.saturating_sub(1);
            }
            c.phase = Phase::Dead;
            self.stats.dead += 1;
            let _ = self.poll.registry().deregister(&mut c.socket);
        }
    }
}

/// The socket is full, or still connecting: try again on its next event.
fn not_yet(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(if message == HELP { 0 } else { 64 });
        }
    };
    let result = match o.scenario.as_str() {
        "relay" => floor::relay(o.addr),
        "floor" => floor::floor(&o),
        "soak" => soak::run(&o),
        _ => run(o),
    };
    if let Err(e) = result {
        eprintln!("ragnarok-load: {e}");
        std::process::exit(1);
    }
}

fn run(o: Options) -> io::Result<()> {
    let n = o.users;
    let senders = o.senders;
    let wanted = n as u64 + 64;
    let limit = ragnarok::fdlimit::raise(wanted);
    if limit < wanted {
        eprintln!("ragnarok-load: the open file limit is {limit}: not all {n} users can connect");
    }
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let tls = match &o.tls {
            Some(config) => Some(
                rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap())
                    .map_err(io::Error::other)?,
            ),
            None => None,
        };
        clients.push(Client {
            socket: TcpStream::connect(o.addrs[i % o.addrs.len()])?,
            tls,
            phase: Phase::Connecting,
            inbox: Vec::new(),
            outbox: VecDeque::new(),
            name: format!("{}{i}", o.prefix),
            seq: 0,
            last_seen: if o.scenario == "fanout" { vec![u64::MAX; senders] } else { Vec::new() },
        });
        if i % 256 == 255 && o.scenario != "joinstorm" {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let before = sample_all(&o.pids);
    let mut own = OwnCpu::start();
    let mut own_percent = None;
    let mut load = Load {
        poll: Poll::new()?,
        clients,
        start: Instant::now(),
        stats: Stats::default(),
        sending_until: None,
        measuring: false,
        next_to_connect: 0,
        handshaking: 0,
        last_activity: Instant::now(),
        buf: vec![0; 65536],
        open: None,
        rng: 0x9e37_79b9_7f4a_7c15,
        o,
    };
    if let Some(rate) = load.o.rate {
        let open = openloop::OpenLoop::new(load.poll.registry(), rate, senders, load.o.duration)?;
        load.open = Some(open);
    }
    load.connect_more()?;
    let mut events = Events::with_capacity(4096);
    let mut login_done: Option<Instant> = None;
    let mut measure_start: Option<(Instant, Option<Procs>)> = None;
    let deadline = Instant::now() + Duration::from_secs(120) + load.o.duration * 2;
    loop {
        load.poll_events(&mut events, Some(Duration::from_millis(50)))?;
        // Each client's answer leaves as soon as its event is handled, not
        // after the whole batch of events (up to a few milliseconds later,
        // which would count as the server's latency).
        for event in events.iter() {
            if event.token() == openloop::TIMER {
                load.on_timer();
                continue;
            }
            let i = event.token().0;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                load.on_readable(i);
            }
            load.flush(i);
            load.send_if_due();
        }
        // Output is queued only for the client whose event is being
        // handled (flushed just above), or by kick_off (flushes all) and
        // connect_more (its sockets' connect brings a writable event). As
        // a safety net, a poll that timed out looks at every client.
        if events.is_empty() {
            for i in 0..load.clients.len() {
                let c = &load.clients[i];
                if !c.outbox.is_empty() || c.tls.as_ref().is_some_and(|t| t.wants_write()) {
                    load.flush(i);
                }
            }
        }
        let now = Instant::now();
        if load.measuring && measure_start.is_none() && load.settled(now) {
            login_done = Some(now);
            // Let the join traffic settle before measuring the steady state.
            if load.o.scenario != "joinstorm" {
                std::thread::sleep(Duration::from_millis(300));
                load.stats = Stats { logged_in: load.stats.logged_in, ..Stats::default() };
                load.sending_until = Some(Instant::now() + load.o.duration);
            }
            measure_start = Some((Instant::now(), sample_all(&load.o.pids)));
            if load.o.scenario != "joinstorm" {
                own = OwnCpu::start();
            }
            load.kick_off();
            for i in 0..load.clients.len() {
                load.flush(i);
            }
        }
        let busy_until = match load.o.scenario.as_str() {
            "joinstorm" => login_done,
            _ => load.sending_until,
        };
        if own_percent.is_none() && busy_until.is_some_and(|t| now >= t) {
            own_percent = own.percent();
            load.end_of_sending();
        }
        let quiet = now.duration_since(load.last_activity) > Duration::from_millis(300);
        let done = match load.o.scenario.as_str() {
            "joinstorm" => login_done.is_some() && quiet,
            "idle" => measure_start
                .as_ref()
                .is_some_and(|(t, _)| now.duration_since(*t) >= load.o.duration),
            _ => load.sending_until.is_some_and(|t| now >= t + Duration::from_millis(500)) && quiet,
        };
        let done = load.open_loop_done(now).unwrap_or(done);
        if done || now > deadline || load.stats.dead == load.clients.len() {
            break;
        }
    }
    // Whatever a live receiver never got from a sender is lost.
    if load.o.scenario == "fanout" {
        let sent: Vec<u64> = load.clients[..senders].iter().map(|c| c.seq).collect();
        let mut missing = 0;
        for c in load.clients.iter().filter(|c| c.phase == Phase::Ready) {
            for (s, &count) in sent.iter().enumerate() {
                let got = if c.last_seen[s] == u64::MAX { 0 } else { c.last_seen[s] + 1 };
                missing += count.saturating_sub(got);
            }
        }
        // Open loop: unless the server still had a backlog when the run stopped.
        load.stats.lost += load.open.as_mut().map_or(missing, |open| open.missing(missing));
    }
    report(&load, before, measure_start, login_done, own_percent);
    Ok(())
}

fn report(
    load: &Load,
    before_all: Option<Procs>,
    measure_start: Option<(Instant, Option<Procs>)>,
    login_done: Option<Instant>,
    own_percent: Option<f64>,
) {
    if let Some(open) = &load.open {
        return openloop::report(load, open, measure_start, own_percent);
    }
    let o = &load.o;
    let after_all = sample_all(&o.pids);
    let after = after_all.as_ref().map(Procs::total);
    let before = before_all.as_ref().map(Procs::total);
    let s = &load.stats;
    let (t0, at_start_all) = measure_start.unwrap_or((Instant::now(), None));
    let at_start = at_start_all.as_ref().map(Procs::total);
    let elapsed = match o.scenario.as_str() {
        "joinstorm" => login_done.map_or(0.0, |t| t.duration_since(load.start).as_secs_f64()),
        "idle" => t0.elapsed().as_secs_f64(),
        _ => o.duration.as_secs_f64(),
    };
    let mut lat = s.latencies_us.clone();
    lat.sort_unstable();
    let rate = s.deliveries as f64 / elapsed.max(1e-9);
    let window = match (o.scenario.as_str(), before, at_start, after) {
        ("joinstorm", Some(b), _, Some(a)) => Some((b, a)),
        (_, _, Some(b), Some(a)) => Some((b, a)),
        _ => None,
    };
    let per_delivery = |part: fn(&ProcSample) -> Duration| {
        window.filter(|_| s.deliveries > 0).map(|(b, a)| {
            part(&a).saturating_sub(part(&b)).as_secs_f64() * 1e6 / s.deliveries as f64
        })
    };
    let cpu_per = per_delivery(|p| p.cpu);
    let sys_per = per_delivery(|p| p.sys);
    let window_start = if o.scenario == "joinstorm" { &before_all } else { &at_start_all };
    let (proc_lines, procs_json) =
        per_process(window_start.as_ref(), after_all.as_ref(), elapsed, s.deliveries);
    let kib_per_user = match (before, after) {
        (Some(b), Some(a)) if load.o.users > 0 => {
            Some((a.rss_kib as f64 - b.rss_kib as f64) / load.stats.logged_in.max(1) as f64)
        }
        _ => None,
    };
    println!("scenario        {}", o.scenario);
    println!("users           {} logged in of {} ({} dropped)", s.logged_in, o.users, s.dead);
    match o.scenario.as_str() {
        "joinstorm" => println!("all in + quiet  {elapsed:.3} s"),
        "idle" => {}
        _ => {
            println!("deliveries      {} in {elapsed:.1} s = {rate:.0}/s", s.deliveries);
            println!(
                "latency ms      p50 {:.2}  p99 {:.2}  max {:.2}",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                percentile(&lat, 1.0)
            );
            println!("lost/reordered  {} / {}", s.lost, s.reordered);
        }
    }
    if let (Some(c), Some(k)) = (cpu_per, sys_per) {
        println!("server CPU      {c:.3} us per delivery ({k:.3} of it in the kernel)");
    }
    if let Some(a) = after {
        println!("server RSS      {} KiB (peak {} KiB)", a.rss_kib, a.peak_kib);
    }
    for line in &proc_lines {
        println!("{line}");
    }
    if let Some(k) = kib_per_user {
        println!("RSS per user    {k:.2} KiB");
    }
    if let Some(p) = own_percent {
        println!(
            "load generator  {p:.0} % of its core (near 100 %: its ceiling, not the server's)"
        );
    }
    let opt = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.4}"));
    println!(
        "{{\"scenario\":\"{}\",\"users\":{},\"logged_in\":{},\"dropped\":{},\"seconds\":{elapsed:.4},\"deliveries\":{},\"per_sec\":{rate:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"lost\":{},\"reordered\":{},\"cpu_us_per_delivery\":{},\"sys_us_per_delivery\":{},\"rss_kib\":{},\"peak_rss_kib\":{},\"kib_per_user\":{},\"loadgen_cpu_pct\":{}{procs_json}}}",
        o.scenario,
        o.users,
        s.logged_in,
        s.dead,
        s.deliveries,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        s.lost,
        s.reordered,
        opt(cpu_per),
        opt(sys_per),
        after.map_or("null".into(), |a| a.rss_kib.to_string()),
        after.map_or("null".into(), |a| a.peak_kib.to_string()),
        opt(kib_per_user),
        opt(own_percent),
    );
}

#[cfg(test)]
mod tests {
    use super::{counters, find, index_of, numbers, sealed_text, text_of};

    #[test]
    fn index_of_and_find_agree_with_a_plain_search() {
        // Every position and length around the 8-byte steps, among bytes
        // one above and one below the target (where the trick's borrows are)
        // and one with the top bit flipped (a UTF-8 byte).
        for len in 0..40 {
            for target in 0..len {
                let mut hay: Vec<u8> = (0..len).map(|i| [b'!', b'#', 0xa3][i % 3]).collect();
                hay[target] = b'"';
                hay.extend_from_slice(b"\"");
                assert_eq!(index_of(&hay, b'"'), Some(target), "{hay:?}");
            }
            let plain: Vec<u8> = vec![b'!'; len];
            assert_eq!(index_of(&plain, b'"'), None);
        }
        let json = br#"{"msgType":"Broadcast","SrcUser":"u1","text":"1:2:3:xxxx","history":true}"#;
        assert_eq!(find(json, br#""text":""#), Some(46));
        assert_eq!(find(json, br#""history":true"#), Some(json.len() - 1));
        assert_eq!(find(json, br#""history":false"#), None);
        assert_eq!(find(b"ab", b"abc"), None);
    }

    #[test]
    fn text_of_finds_the_text_and_the_history_flag_in_any_order() {
        let live = br#"{"msgType":"Broadcast","SrcUser":"u1","text":"1:2:3:xxxx"}"#;
        assert_eq!(text_of(live), Some((&b"1:2:3:xxxx"[..], false)));
        let replay = br#"{"msgType":"Broadcast","SrcUser":"u1","text":"1:2:3:x","history":true}"#;
        assert_eq!(text_of(replay), Some((&b"1:2:3:x"[..], true)));
        let first = br#"{"history":true,"text":"7:8:9:","msgType":"Broadcast"}"#;
        assert_eq!(text_of(first), Some((&b"7:8:9:"[..], true)));
        // A text that mentions the flag is not the flag.
        let quoted = br#"{"msgType":"Broadcast","text":"history:true","history":false}"#;
        assert_eq!(text_of(quoted), Some((&b"history:true"[..], false)));
        let cut = br#"{"msgType":"Broadcast","text":"1:2:3"#;
        assert_eq!(text_of(cut), Some((&b"1:2:3"[..], false)));
        assert_eq!(text_of(br#"{"msgType":"OnlineUsers","users":["text"]}"#), None);
        assert_eq!(numbers(b"12:345:6789:xx"), [12, 345, 6789]);
    }

    #[test]
    fn sealed_texts_have_the_checked_form_one_length_and_the_counters() {
        let mut rng = 1;
        for (size, seq) in [(0, 0), (60, 7), (275, 12_345), (276, 99_999_999)] {
            let text = sealed_text(42, seq, 1_234_567, size, &mut rng);
            let rest = text.strip_prefix("e2er1:1:").unwrap();
            let (index, body) = rest.split_once(':').unwrap();
            assert_eq!(index, (1_000_000_000 + seq).to_string());
            assert!(body.len() >= 124 && body.len().is_multiple_of(4), "{text}");
            assert!(text.len() >= size && text.len() < size.max(143) + 4, "{text}");
            let base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
            assert!(body.chars().all(base64), "{text}");
            assert_eq!(numbers(counters(text.as_bytes())), [42, seq, 1_234_567]);
        }
        let a = sealed_text(1, 5, 9, 275, &mut rng);
        let b = sealed_text(1, 5, 9, 275, &mut rng);
        assert_eq!((a.len(), b.len()), (275, 275));
        assert_ne!(a, b, "random after the counters");
        assert_eq!(counters(b"1:2:3:xx"), b"1:2:3:xx");
    }
}
