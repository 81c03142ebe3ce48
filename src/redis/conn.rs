//! One non-blocking Redis connection on the server's poll loop: a `mio`
//! socket, rustls driven by hand for `rediss://` (never `StreamOwned`), the
//! AUTH / SELECT handshake, commands out and replies decoded as they come.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::RedisUrl;
use super::resp::{Command, DecodeError, Decoder, MAX_FRAME_BYTES, Value, encode_command};
use crate::drain;

// Where they were before `startup` was split off: src/main.rs and
// tests/redis_conn.rs name them here.
pub use super::startup::{check, tls_config};

/// What one `read` asks of the socket or of rustls.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// Plaintext handed to rustls at a time (it is sealed into records at once).
const TLS_CHUNK: usize = 64 * 1024;

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

impl From<DecodeError> for ConnError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Protocol(what) => ConnError::Protocol(what),
            DecodeError::TooLarge => ConnError::TooLarge,
        }
    }
}

/// An I/O error without the " (os error N)" that std adds.
pub(super) fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

/// The commands that open a connection, each with the name its refusal is
/// reported under.
pub(super) fn handshake_commands(url: &RedisUrl, out: &mut Vec<u8>) -> VecDeque<&'static str> {
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

    /// Queues one `Command`, as `command` does.
    pub fn send(&mut self, command: &Command) {
        command.encode(&mut self.out);
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
        drain::buffer(&mut self.socket, &self.out, &mut self.written)?;
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
            let mut counting = Counting { inner: &mut self.socket, written: 0 };
            let sent = drain::tls(&mut tls.conn, &mut counting);
            tls.in_flight = tls.in_flight.saturating_sub(counting.written);
            progress |= counting.written > 0;
            sent?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_one_line() {
        let e = ConnError::Io(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(e.to_string(), "Connection refused");
        assert_eq!(ConnError::TooLarge.to_string(), "a redis reply exceeds 64 MiB");
        let e = ConnError::from(DecodeError::Protocol("x".into()));
        assert_eq!(e.to_string(), "redis protocol error: x");
    }
}
