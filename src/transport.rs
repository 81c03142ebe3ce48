//! The byte stream under a connection: a plain socket or rustls over one.
//! rustls is driven by hand (`read_tls` / `process_new_packets` /
//! `write_tls`), never through `StreamOwned`, so nothing here ever blocks.
//! Generic over the socket so that tests and fuzzing can use memory pipes.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::drain::{self, Drained};
use crate::outbox::Outbox;

/// Plaintext rustls may hold for sending, on top of our own queue.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// What a connection needs of its socket: a non-blocking byte stream whose
/// writing side can be shut.
pub trait Socket: Read + Write {
    fn shutdown_write(&mut self);
    /// Reads without consuming (what `recv` with `MSG_PEEK` does).
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Socket for TcpStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }

    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf)
    }
}

pub enum Transport<S> {
    /// `drained`: the last read came back short, so the kernel buffer is
    /// empty and another read would only say WouldBlock; the next readiness
    /// event clears it. `hung_up`: the poller saw the peer's end of stream,
    /// so reads go on until they see it too (a FIN that came in the same
    /// segment as the last data brings no event of its own).
    /// `received`: bytes read so far.
    Plain {
        socket: S,
        drained: bool,
        hung_up: bool,
        received: u64,
    },
    Tls(Box<TlsStream<S>>),
}

pub struct TlsStream<S> {
    socket: S,
    tls: ServerConnection,
    /// What the client sent first, once known.
    opening: Opening,
    /// Plaintext bytes read.
    received: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Unknown,
    Tls,
    /// Plain HTTP to the TLS port: answered in plain HTTP, then closed.
    PlainHttp,
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued reached the kernel.
    All,
    /// The socket is full; wait for it to become writable.
    Blocked,
}

impl<S: Socket> Transport<S> {
    pub fn new(socket: S, tls: Option<&Arc<ServerConfig>>) -> io::Result<Self> {
        Ok(match tls {
            None => Transport::Plain { socket, drained: false, hung_up: false, received: 0 },
            Some(config) => {
                let mut tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
                tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
                let opening = Opening::Unknown;
                Transport::Tls(Box::new(TlsStream { socket, tls, opening, received: 0 }))
            }
        })
    }

    pub fn socket(&mut self) -> &mut S {
        match self {
            Transport::Plain { socket, .. } => socket,
            Transport::Tls(t) => &mut t.socket,
        }
    }

    /// The socket reported readable (`hung_up`: and the peer's end of
    /// stream): there may be new data.
    pub fn on_readable(&mut self, hung_up: bool) {
        if let Transport::Plain { drained, hung_up: seen, .. } = self {
            *drained = false;
            *seen |= hung_up;
        }
    }

    /// Reads plaintext. `WouldBlock` when nothing more is available now,
    /// `Ok(0)` at the end of the stream.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain { drained: true, .. } => Err(io::ErrorKind::WouldBlock.into()),
            Transport::Plain { socket, drained, hung_up, received } => {
                let n = socket.read(buf)?;
                *drained = n > 0 && n < buf.len() && !*hung_up;
                *received += n as u64;
                Ok(n)
            }
            Transport::Tls(t) => {
                let n = t.read(buf)?;
                t.received += n as u64;
                Ok(n)
            }
        }
    }

    /// Writes as much of `outbox` as the socket takes. Several queued frames
    /// are first gathered into `scratch` (a buffer shared by all
    /// connections) so that they leave in one write (and one TLS record).
    pub fn flush(&mut self, outbox: &mut Outbox, scratch: &mut Vec<u8>) -> io::Result<Flushed> {
        match self {
            Transport::Plain { socket, .. } => write_plain(socket, outbox, scratch),
            Transport::Tls(t) if t.opening == Opening::PlainHttp => {
                write_plain(&mut t.socket, outbox, scratch)
            }
            Transport::Tls(t) => t.flush(outbox, scratch),
        }
    }

    /// Bytes read since the connection opened (plaintext).
    pub fn received(&self) -> u64 {
        match self {
            Transport::Plain { received, .. } => *received,
            Transport::Tls(t) => t.received,
        }
    }

    /// A client spoke plain HTTP to the TLS port (the read that found out
    /// failed with `InvalidData`): what is queued now goes out unencrypted.
    pub fn got_plain_http(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.opening == Opening::PlainHttp)
    }

    /// Ends our side of the stream (TLS close_notify, then TCP FIN) once
    /// everything queued has been flushed.
    pub fn close_write(&mut self) {
        if let Transport::Tls(t) = self
            && t.opening != Opening::PlainHttp
        {
            t.tls.send_close_notify();
            let _ = t.write_tls();
        }
        self.socket().shutdown_write();
    }

    /// Reads and throws away whatever the peer still sends while we close,
    /// counting it in `discarded` and stopping past `limit`. `Ok(true)`
    /// once the peer has closed its side.
    pub fn discard_input(&mut self, discarded: &mut usize, limit: usize) -> io::Result<bool> {
        let mut sink = [0u8; 4096];
        loop {
            match self.socket().read(&mut sink) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    *discarded += n;
                    if *discarded > limit {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes as much of `outbox` as the socket takes, as it is.
fn write_plain<S: Write>(
    socket: &mut S,
    outbox: &mut Outbox,
    scratch: &mut Vec<u8>,
) -> io::Result<Flushed> {
    let drained = drain::drain(|| {
        let written = (!outbox.is_empty()).then(|| socket.write(outbox.next_write(scratch)))?;
        Some(written.inspect(|n| outbox.consume(*n)))
    })?;
    Ok(drained.into())
}

impl<S: Socket> TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.opening == Opening::Unknown {
            // A TLS connection opens with a handshake record (0x16); an
            // HTTP request with a method name.
            let mut first = [0u8; 1];
            match self.socket.peek(&mut first) {
                Ok(0) => return Ok(0),
                Ok(_) if first[0].is_ascii_uppercase() => {
                    self.opening = Opening::PlainHttp;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "plain HTTP on the TLS port",
                    ));
                }
                Ok(_) => self.opening = Opening::Tls,
                Err(e) => return Err(e),
            }
        }
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The peer closed TCP without close_notify: an ordinary end here.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext buffered: pull more records off the socket.
            match self.tls.read_tls(&mut self.socket) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        // Send the alert rustls queued, then give up.
                        let _ = self.write_tls();
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self, outbox: &mut Outbox, scratch: &mut Vec<u8>) -> io::Result<Flushed> {
        loop {
            // Move plaintext into rustls (bounded by its buffer limit), which
            // seals it into records.
            if !outbox.is_empty() {
                let n = self.tls.writer().write(outbox.next_write(scratch))?;
                outbox.consume(n);
            }
            if !self.tls.wants_write() {
                return Ok(if outbox.is_empty() { Flushed::All } else { Flushed::Blocked });
            }
            if self.write_tls()? == Flushed::Blocked {
                return Ok(Flushed::Blocked);
            }
        }
    }

    fn write_tls(&mut self) -> io::Result<Flushed> {
        Ok(drain::tls(&mut self.tls, &mut OneRecord(&mut self.socket))?.into())
    }
}

impl From<Drained> for Flushed {
    fn from(drained: Drained) -> Flushed {
        match drained {
            Drained::All => Flushed::All,
            Drained::Blocked => Flushed::Blocked,
        }
    }
}

/// The socket as rustls's `write_tls` sees it: rustls offers its queued
/// records as a `writev`; this takes the first one with a plain `send`,
/// which costs the kernel ~0.4 µs less per write than a `writev` of the
/// same bytes (measured in BENCHMARKS.md). A write's frames are one record,
/// so only catching up after a full socket takes more than one call.
struct OneRecord<'a, S>(&'a mut S);

impl<S: Write> Write for OneRecord<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
