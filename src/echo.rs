//! A WebSocket echo endpoint for the Autobahn testsuite (feature `testing`,
//! never part of the chat server): the server's own transport, connection
//! and outbox, driven by a small loop shaped like `server.rs`, that sends
//! every text or binary message back as one frame. Pings, pongs, closes and
//! protocol errors are handled by the connection exactly as in the server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::ServerConfig;
use slab::Slab;
use tungstenite::Message;

use crate::addresses::Peer;
use crate::connection::{Connection, Flush, Input};
use crate::http::HttpPolicy;
use crate::outbox;
use crate::protocol::close_code;
use crate::transport::Transport;

const LISTENER: Token = Token(usize::MAX);
const TICK: Duration = Duration::from_secs(1);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages read from one connection before giving the others a turn.
const MAX_STEPS_PER_EVENT: usize = 64;
const WRITE_GATHER: usize = 64 * 1024;

/// Listens on `addr` (`wss` when `tls` is given), prints the URL on stdout,
/// and echoes messages of up to `max_message_bytes` until killed.
pub fn serve(
    addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    max_message_bytes: usize,
) -> io::Result<()> {
    let mut listener = TcpListener::bind(addr)?;
    let mut echo = Echo {
        poll: Poll::new()?,
        tls,
        max_message_bytes,
        // Reads pause past the high-water mark, so one echoed message
        // (plus what was queued before it) always fits.
        outbound_limit: max_message_bytes + 64 * 1024,
        conns: Slab::new(),
        http: HttpPolicy::default(),
        to_flush: Vec::new(),
        again: Vec::new(),
        scratch: Vec::with_capacity(WRITE_GATHER),
    };
    echo.poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let scheme = if echo.tls.is_some() { "wss" } else { "ws" };
    println!("{scheme}://{}", listener.local_addr()?);
    echo.run(&listener)
}

struct Echo {
    poll: Poll,
    tls: Option<Arc<ServerConfig>>,
    max_message_bytes: usize,
    outbound_limit: usize,
    conns: Slab<Connection<TcpStream>>,
    http: HttpPolicy,
    to_flush: Vec<usize>,
    again: Vec<usize>,
    scratch: Vec<u8>,
}

impl Echo {
    fn run(&mut self, listener: &TcpListener) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = if self.again.is_empty() {
                next_tick.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(listener, now),
                    Token(key) => {
                        let hung_up = event.is_read_closed() || event.is_error();
                        if event.is_readable() || hung_up {
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.on_readable(hung_up);
                            }
                            self.read(key, now);
                        }
                        if event.is_writable() {
                            self.schedule(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.again) {
                self.read(key, now);
            }
            if now >= next_tick {
                next_tick = now + TICK;
                let expired: Vec<usize> = self
                    .conns
                    .iter_mut()
                    .filter_map(|(key, c)| c.expired(now, HANDSHAKE_TIMEOUT).then_some(key))
                    .collect();
                expired.into_iter().for_each(|key| self.remove(key));
            }
            for key in std::mem::take(&mut self.to_flush) {
                self.flush(key);
            }
        }
    }

    fn accept(&mut self, listener: &TcpListener, now: Instant) {
        loop {
            let (mut socket, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return eprintln!("accept failed: {e}"),
            };
            let _ = socket.set_nodelay(true);
            let key = self.conns.vacant_key();
            let registered =
                self.poll.registry().register(&mut socket, Token(key), Interest::READABLE);
            match registered.and_then(|()| Transport::new(socket, self.tls.as_ref())) {
                Ok(transport) => {
                    self.conns.insert(Connection::new(
                        transport,
                        Peer::direct(peer),
                        self.outbound_limit,
                        now,
                    ));
                }
                Err(e) => eprintln!("{peer}: {e}"),
            }
        }
    }

    /// Reads messages and queues each one back.
    fn read(&mut self, key: usize, now: Instant) {
        for _ in 0..MAX_STEPS_PER_EVENT {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let input = conn.read(now, &self.http);
            self.schedule(key);
            let Some(conn) = self.conns.get_mut(key) else { return };
            let frame = match input {
                Input::Opened => {
                    conn.allow_messages(self.max_message_bytes);
                    continue;
                }
                Input::Message(Message::Text(text)) => outbox::text_frame(text.as_str()),
                Input::Message(Message::Binary(data)) => outbox::binary_frame(&data),
                Input::Message(_) | Input::Progress | Input::Ended { .. } => continue,
                Input::Idle => return,
                Input::Finished => return self.remove(key),
            };
            if conn.send(&frame).is_err() {
                conn.close(close_code::POLICY, "too slow", None, now);
            }
        }
        self.again.push(key);
    }

    fn schedule(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.flush_scheduled
        {
            conn.flush_scheduled = true;
            self.to_flush.push(key);
        }
    }

    /// Writes one connection and keeps its poll registration in step.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.flush(&mut self.scratch) {
            Flush::Finished => return self.remove(key),
            Flush::Open { resume: true } => self.again.push(key),
            Flush::Open { resume: false } => {}
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.registered {
            if self.poll.registry().reregister(conn.socket(), Token(key), wanted).is_err() {
                return self.remove(key);
            }
            conn.registered = wanted;
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(conn.socket());
        }
    }
}
