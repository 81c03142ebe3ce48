//! One non-blocking Redis connection driven by the server's poll loop: a
//! `mio` socket, rustls driven by hand (`read_tls` / `process_new_packets` /
//! `write_tls`, never `StreamOwned`) for `rediss://`, commands encoded as
//! RESP2 arrays of bulk strings and replies decoded as they arrive.
//!
//! The decoder is written here rather than taken from `redis-protocol`: that
//! crate's decoder recurses once per nesting level with no limit (400 KB of
//! `*1\r\n` overflows the stack and aborts the process) and starts again from
//! the first byte on every call (quadratic for a large array that arrives in
//! many reads). This one keeps the arrays it is filling on a stack of its
//! own, bounded in depth, and drops each byte from its buffer once it has
//! been decoded, so a reply split across any number of reads costs one pass.
//!
//! `check` is the blocking probe used once at startup, before the loop.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::RedisUrl;

/// Bytes of one reply (or pushed message) held before it is complete.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Arrays inside arrays: Redis sends a few levels; more is an attack.
const MAX_DEPTH: usize = 64;
/// What an element of an unfinished array is counted for on top of its
/// bytes: about what it costs in memory once decoded.
const ELEMENT_COST: usize = 64;
/// A `+`, `-`, `:`, `$` or `*` line, up to its CRLF.
const MAX_LINE: usize = 64 * 1024;
/// What one `read` asks of the socket or of rustls.
const READ_CHUNK: usize = 64 * 1024;
/// Plaintext handed to rustls at a time (it is sealed into records at once).
const TLS_CHUNK: usize = 64 * 1024;
/// The system's trusted CAs, for `rediss://` without `redis_ca_file`.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A RESP2 reply or a pushed pub/sub message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    /// A bulk or simple string.
    Bytes(Vec<u8>),
    Error(String),
    Array(Vec<Value>),
}

#[derive(Debug)]
pub enum ConnError {
    Io(io::Error),
    /// Redis closed the connection.
    Closed,
    /// Redis sent something that is not RESP2.
    Protocol(String),
    Tls(rustls::Error),
    /// AUTH or SELECT refused: which one, then Redis's text.
    Auth(String),
    /// A reply grew past `MAX_FRAME_BYTES` without being complete.
    TooLarge,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{}", io_text(e)),
            ConnError::Closed => write!(f, "redis closed the connection"),
            ConnError::Protocol(what) => write!(f, "redis protocol error: {what}"),
            ConnError::Tls(e) => write!(f, "TLS: {e}"),
            ConnError::Auth(text) => write!(f, "{text}"),
            ConnError::TooLarge => {
                write!(f, "a redis reply exceeds {} MiB", MAX_FRAME_BYTES / (1024 * 1024))
            }
        }
    }
}

impl std::error::Error for ConnError {}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

/// An I/O error without the " (os error N)" that std adds.
fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

/// Appends `args` as a RESP array of bulk strings.
fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The commands that open a connection, each with the name its refusal is
/// reported under.
fn handshake_commands(url: &RedisUrl, out: &mut Vec<u8>) -> VecDeque<&'static str> {
    let mut names = VecDeque::new();
    if let Some(password) = &url.password {
        match &url.user {
            Some(user) => encode_command(out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
            None => encode_command(out, &[b"AUTH", password.as_bytes()]),
        }
        names.push_back("AUTH");
    }
    if url.db != 0 {
        encode_command(out, &[b"SELECT", url.db.to_string().as_bytes()]);
        names.push_back("SELECT");
    }
    names
}

/// A resumable RESP2 decoder: feed it bytes as they come, take values out
/// as they complete.
#[derive(Default)]
pub struct Decoder {
    /// Bytes not decoded yet start at `buf[pos]`.
    buf: Vec<u8>,
    pos: usize,
    /// Arrays being filled, innermost last: elements so far, elements missing.
    stack: Vec<(Vec<Value>, usize)>,
    /// Bytes already decoded into `stack`, plus `ELEMENT_COST` for each of
    /// its elements (they count toward the limit).
    partial: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for at least `n` more bytes at the end of the buffer: after
    /// writing into it, call `filled` with how many were written.
    fn spare(&mut self, n: usize) -> &mut [u8] {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + n, 0);
        &mut self.buf[len..]
    }

    /// `n` bytes of what `spare` returned were written; the rest goes.
    fn filled(&mut self, spare: usize, n: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - spare + n);
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held for the value in progress.
    pub fn pending(&self) -> usize {
        self.partial + self.buf.len() - self.pos
    }

    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// The next complete value, `Ok(None)` until more bytes come.
    pub fn next_value(&mut self) -> Result<Option<Value>, ConnError> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some(&kind) = rest.first() else { break };
            let window = &rest[..rest.len().min(MAX_LINE + 2)];
            // The line starts after the type byte (which may itself be '\r').
            let eol = window.get(1..).and_then(|w| w.windows(2).position(|w| w == b"\r\n"));
            let Some(eol) = eol.map(|i| i + 1) else {
                if rest.len() > MAX_LINE {
                    return Err(ConnError::Protocol("a line longer than 64 KiB".into()));
                }
                break;
            };
            let line = &rest[1..eol];
            let after = eol + 2;
            let (value, used) = match kind {
                b'+' => (Value::Bytes(line.to_vec()), after),
                b'-' => (Value::Error(String::from_utf8_lossy(line).into_owned()), after),
                b':' => (Value::Int(parse_int(line)?), after),
                b'$' => match parse_int(line)? {
                    -1 => (Value::Nil, after),
                    n if n < 0 => return Err(bad_length(n)),
                    n if n as u64 > MAX_FRAME_BYTES as u64 => return Err(ConnError::TooLarge),
                    n => {
                        let n = n as usize;
                        let end = after + n;
                        if rest.len() < end + 2 {
                            break;
                        }
                        if &rest[end..end + 2] != b"\r\n" {
                            return Err(ConnError::Protocol("a bulk string without CRLF".into()));
                        }
                        (Value::Bytes(rest[after..end].to_vec()), end + 2)
                    }
                },
                b'*' => match parse_int(line)? {
                    -1 => (Value::Nil, after),
                    0 => (Value::Array(Vec::new()), after),
                    n if n < 0 => return Err(bad_length(n)),
                    n => {
                        if self.stack.len() >= MAX_DEPTH {
                            return Err(ConnError::Protocol(format!(
                                "arrays nested more than {MAX_DEPTH} deep"
                            )));
                        }
                        let n = usize::try_from(n).map_err(|_| bad_length(n))?;
                        self.pos += after;
                        self.partial += after;
                        self.stack.push((Vec::with_capacity(n.min(1024)), n));
                        continue;
                    }
                },
                other => {
                    return Err(ConnError::Protocol(format!("unexpected byte 0x{other:02x}")));
                }
            };
            self.pos += used;
            self.partial += used;
            let mut value = value;
            loop {
                let Some((items, missing)) = self.stack.last_mut() else {
                    self.partial = 0;
                    self.compact();
                    return Ok(Some(value));
                };
                items.push(value);
                self.partial += ELEMENT_COST;
                *missing -= 1;
                if *missing > 0 {
                    break;
                }
                let Some((items, _)) = self.stack.pop() else { unreachable!() };
                value = Value::Array(items);
            }
        }
        self.compact();
        if self.pending() > MAX_FRAME_BYTES {
            return Err(ConnError::TooLarge);
        }
        Ok(None)
    }
}

fn parse_int(line: &[u8]) -> Result<i64, ConnError> {
    std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        ConnError::Protocol(format!("{:?} is not a number", String::from_utf8_lossy(line)))
    })
}

fn bad_length(n: i64) -> ConnError {
    ConnError::Protocol(format!("length {n}"))
}

/// A writer that counts what went through it (TLS records sent).
struct Counting<'a, W> {
    inner: &'a mut W,
    written: usize,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Tls {
    conn: ClientConnection,
    /// Plaintext handed to rustls whose records have not all been sent
    /// (counted down by the record bytes sent: an estimate that errs high).
    in_flight: usize,
}

pub struct Conn {
    socket: TcpStream,
    tls: Option<Box<Tls>>,
    /// The TCP connect has completed.
    connected: bool,
    /// Encoded commands; `out[written..]` is still to go.
    out: Vec<u8>,
    written: usize,
    decoder: Decoder,
    replies: VecDeque<Value>,
    /// AUTH / SELECT whose replies are still to come.
    handshake: VecDeque<&'static str>,
    /// `pump` has failed: the connection is of no more use.
    dead: bool,
}

impl Conn {
    /// Starts a non-blocking TCP connect to `addr` (already resolved), TLS
    /// on top when `tls` is Some (server name = `url.host`), registers the
    /// socket with `registry` under `token` (readable and writable, once:
    /// readiness is tracked here), and queues AUTH and SELECT, whose
    /// replies it consumes itself.
    pub fn connect(
        addr: SocketAddr,
        url: &RedisUrl,
        tls: Option<Arc<ClientConfig>>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Conn> {
        let tls = match tls {
            None => None,
            Some(config) => {
                let name = ServerName::try_from(url.host.clone()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{:?} is not a valid TLS server name", url.host),
                    )
                })?;
                let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
                conn.set_buffer_limit(Some(TLS_CHUNK));
                Some(Box::new(Tls { conn, in_flight: 0 }))
            }
        };
        let mut socket = TcpStream::connect(addr)?;
        let _ = socket.set_nodelay(true);
        registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
        let mut out = Vec::new();
        let handshake = handshake_commands(url, &mut out);
        Ok(Conn {
            socket,
            tls,
            connected: false,
            out,
            written: 0,
            decoder: Decoder::new(),
            replies: VecDeque::new(),
            handshake,
            dead: false,
        })
    }

    /// Queues one command (a RESP array of bulk strings). Never blocks;
    /// replies come back in order through `next` after `pump`.
    pub fn command(&mut self, args: &[&[u8]]) {
        encode_command(&mut self.out, args);
    }

    /// Bytes queued and not yet written to the socket (TLS: plaintext not
    /// yet encrypted, plus an estimate of the encrypted bytes not yet sent).
    pub fn queued(&self) -> usize {
        self.out.len() - self.written + self.tls.as_ref().map_or(0, |t| t.in_flight)
    }

    /// To be called for every event of the connection's token and after
    /// queueing commands: writes what the socket takes, reads until it
    /// would block, decodes what is complete. An error means the
    /// connection is dead.
    pub fn pump(&mut self) -> Result<(), ConnError> {
        let result = self.pump_inner();
        self.dead |= result.is_err();
        result
    }

    fn pump_inner(&mut self) -> Result<(), ConnError> {
        if !self.connected {
            if let Some(e) = self.socket.take_error()? {
                return Err(ConnError::Io(e));
            }
            match self.socket.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e)
                    if e.kind() == io::ErrorKind::NotConnected
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    return Ok(());
                }
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        if self.tls.is_some() { self.pump_tls() } else { self.pump_plain() }
    }

    fn pump_plain(&mut self) -> Result<(), ConnError> {
        while self.written < self.out.len() {
            match self.socket.write(&self.out[self.written..]) {
                Ok(0) => return Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        self.compact_out();
        loop {
            let spare = self.decoder.spare(READ_CHUNK);
            let got = self.socket.read(spare);
            let n = *got.as_ref().unwrap_or(&0);
            self.decoder.filled(READ_CHUNK, n);
            match got {
                Ok(0) => return Err(ConnError::Closed),
                Ok(_) => self.decode()?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }

    fn pump_tls(&mut self) -> Result<(), ConnError> {
        loop {
            let Some(tls) = self.tls.as_mut() else { return Ok(()) };
            let mut progress = false;
            // Hand plaintext to rustls once the handshake is done and what
            // it sealed before has left, so that it never holds much.
            if !tls.conn.is_handshaking()
                && !tls.conn.wants_write()
                && self.written < self.out.len()
            {
                let end = self.out.len().min(self.written + TLS_CHUNK);
                let n = tls.conn.writer().write(&self.out[self.written..end])?;
                self.written += n;
                tls.in_flight = n;
            }
            while tls.conn.wants_write() {
                let mut counting = Counting { inner: &mut self.socket, written: 0 };
                let result = tls.conn.write_tls(&mut counting);
                tls.in_flight = tls.in_flight.saturating_sub(counting.written);
                match result {
                    Ok(0) => return Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ConnError::Io(e)),
                }
            }
            if !tls.conn.wants_write() {
                tls.in_flight = 0;
            }
            match tls.conn.read_tls(&mut self.socket) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(_) => {
                    progress = true;
                    if let Err(e) = tls.conn.process_new_packets() {
                        // Send the alert rustls queued, then give up.
                        let _ = tls.conn.write_tls(&mut self.socket);
                        return Err(ConnError::Tls(e));
                    }
                    loop {
                        let spare = self.decoder.spare(READ_CHUNK);
                        let got = tls.conn.reader().read(spare);
                        let n = *got.as_ref().unwrap_or(&0);
                        self.decoder.filled(READ_CHUNK, n);
                        match got {
                            // close_notify: Redis ended the session.
                            Ok(0) => return Err(ConnError::Closed),
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                return Err(ConnError::Closed);
                            }
                            Err(e) => return Err(ConnError::Io(e)),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(e) => return Err(ConnError::Io(e)),
            }
            self.decode()?;
            if !progress {
                self.compact_out();
                return Ok(());
            }
        }
    }

    fn compact_out(&mut self) {
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written >= 64 * 1024 && self.written * 2 >= self.out.len() {
            self.out.drain(..self.written);
            self.written = 0;
        }
    }

    /// Moves complete values to `replies`, answering the handshake first.
    fn decode(&mut self) -> Result<(), ConnError> {
        while let Some(value) = self.decoder.next_value()? {
            match self.handshake.pop_front() {
                None => self.replies.push_back(value),
                Some(name) => {
                    if let Value::Error(text) = value {
                        return Err(ConnError::Auth(format!("{name} refused: {text}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The next decoded reply or pushed message, in arrival order (the
    /// replies to AUTH and SELECT never show up here).
    #[allow(
        clippy::should_implement_trait,
        reason = "not an iterator: None only means nothing yet, more comes after the next pump"
    )]
    pub fn next(&mut self) -> Option<Value> {
        self.replies.pop_front()
    }

    /// Connected (TLS included) and AUTH / SELECT accepted.
    pub fn is_ready(&self) -> bool {
        self.connected
            && !self.dead
            && self.handshake.is_empty()
            && self.tls.as_ref().is_none_or(|t| !t.conn.is_handshaking())
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }
}

/// Blocking check used once at startup, before the loop: resolves `url`'s
/// host, connects within `timeout`, TLS for `rediss://`, AUTH, SELECT,
/// PING. Returns the address that answered, or one line saying what failed.
pub fn check(
    url: &RedisUrl,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    let fail = |what: String| format!("cannot connect to {url}: {what}");
    let addrs: Vec<SocketAddr> = url
        .address()
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve {:?}: {}", url.host, io_text(&e))))?
        .collect();
    let mut last = fail(format!("{:?} resolves to no address", url.host));
    for addr in addrs {
        let stream = match StdTcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => stream,
            Err(e) => {
                last = fail(timeout_text(&e, timeout));
                continue;
            }
        };
        return probe(url, tls, stream, timeout).map(|()| addr).map_err(fail);
    }
    Err(last)
}

fn timeout_text(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no answer within {timeout:?}")
        }
        _ => io_text(e),
    }
}

/// AUTH, SELECT and PING over a connected blocking stream.
fn probe(
    url: &RedisUrl,
    tls: Option<Arc<ClientConfig>>,
    stream: StdTcpStream,
    timeout: Duration,
) -> Result<(), String> {
    let io = |e: io::Error| timeout_text(&e, timeout);
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let _ = stream.set_nodelay(true);
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(stream),
        Some(config) => {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| format!("{:?} is not a valid TLS server name", url.host))?;
            let conn = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
            Box::new(rustls::StreamOwned::new(conn, stream))
        }
    };
    let mut out = Vec::new();
    let mut names = handshake_commands(url, &mut out);
    encode_command(&mut out, &[b"PING"]);
    names.push_back("PING");
    stream.write_all(&out).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut decoder = Decoder::new();
    while let Some(name) = names.front().copied() {
        match decoder.next_value().map_err(|e| e.to_string())? {
            Some(Value::Error(text)) => return Err(format!("{name} refused: {text}")),
            Some(reply) if name == "PING" && reply != Value::Bytes(b"PONG".to_vec()) => {
                return Err(format!("PING answered {reply:?}, not PONG: is this Redis?"));
            }
            Some(_) => {
                names.pop_front();
            }
            None => {
                let spare = decoder.spare(READ_CHUNK);
                let got = stream.read(spare);
                let n = *got.as_ref().unwrap_or(&0);
                decoder.filled(READ_CHUNK, n);
                match got {
                    Ok(0) => return Err(format!("connection closed before {name} was answered")),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
    }
    Ok(())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Client TLS configuration for `rediss://`: trusts the CA certificates in
/// the PEM file `ca_file` when given, else the system's.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_FILE));
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), io_text(&e)))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Value>, ConnError> {
        let mut d = Decoder::new();
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(v) = d.next_value()? {
            out.push(v);
        }
        Ok(out)
    }

    fn b(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    const SAMPLE: &[u8] = b"+OK\r\n-ERR no\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*0\r\n\
        *3\r\n$7\r\nmessage\r\n$2\r\nch\r\n*2\r\n:1\r\n$0\r\n\r\n:7\r\n";

    fn sample_values() -> Vec<Value> {
        vec![
            b("OK"),
            Value::Error("ERR no".into()),
            Value::Int(-42),
            b("he\r\no"),
            Value::Nil,
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![b("message"), b("ch"), Value::Array(vec![Value::Int(1), b("")])]),
            Value::Int(7),
        ]
    }

    #[test]
    fn decodes_every_kind() {
        assert_eq!(decode_all(SAMPLE).unwrap(), sample_values());
    }

    #[test]
    fn decodes_the_same_split_anywhere_and_byte_by_byte() {
        for split in 0..=SAMPLE.len() {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for part in [&SAMPLE[..split], &SAMPLE[split..]] {
                d.feed(part);
                while let Some(v) = d.next_value().unwrap() {
                    out.push(v);
                }
            }
            assert_eq!(out, sample_values(), "split at {split}");
            assert_eq!(d.pending(), 0);
        }
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for byte in SAMPLE {
            d.feed(&[*byte]);
            while let Some(v) = d.next_value().unwrap() {
                out.push(v);
            }
        }
        assert_eq!(out, sample_values());
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for bad in [
            &b"?x\r\n"[..],
            b"**3\r\n\r\n3**31\r", // found by fuzz/fuzz_targets/resp.rs
            b":12a\r\n",
            b"$-2\r\n",
            b"*-7\r\n",
            b"$3\r\nabcde\r\n",
            b":99999999999999999999\r\n",
            b"$\r\n",
        ] {
            assert!(matches!(decode_all(bad), Err(ConnError::Protocol(_))), "{bad:?}");
        }
        let mut deep = b"*1\r\n".repeat(100_000);
        deep.extend_from_slice(b":1\r\n");
        assert!(matches!(decode_all(&deep), Err(ConnError::Protocol(_))));
        let ok = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
        assert_eq!(decode_all(&ok).unwrap().len(), 1);
        assert!(matches!(decode_all(&[b'+'; MAX_LINE + 10]), Err(ConnError::Protocol(_))));
    }

    #[test]
    fn bounds_what_an_incomplete_reply_may_hold() {
        assert!(matches!(decode_all(b"$67108865\r\n"), Err(ConnError::TooLarge)));
        assert!(decode_all(b"$67108864\r\n").unwrap().is_empty());
        // Many small elements of one endless array.
        let mut d = Decoder::new();
        d.feed(b"*1000000000\r\n");
        let chunk = b":1\r\n".repeat(100_000);
        let mut fed = 0;
        let err = loop {
            d.feed(&chunk);
            fed += chunk.len();
            match d.next_value() {
                Ok(None) => assert!(fed * (ELEMENT_COST + 4) / 4 <= MAX_FRAME_BYTES),
                Ok(Some(v)) => panic!("{v:?}"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, ConnError::TooLarge));
        // A huge count allocates nothing up front.
        assert!(decode_all(b"*9223372036854775807\r\n").unwrap().is_empty());
    }

    #[test]
    fn encodes_commands_as_bulk_string_arrays() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
        assert_eq!(
            decode_all(&out).unwrap(),
            vec![Value::Array(vec![b("SET"), b("k"), b("a\r\nb")])]
        );
    }

    #[test]
    fn errors_read_as_one_line() {
        let e = ConnError::Io(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(e.to_string(), "Connection refused");
        assert_eq!(ConnError::TooLarge.to_string(), "a redis reply exceeds 64 MiB");
        let e = tls_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/ca.pem:"), "{e}");
    }
}
