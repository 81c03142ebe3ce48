//! The event loop: one thread, one `mio::Poll`. It accepts connections into a
//! slab (within the per-address limits), hands readiness to them and their
//! messages to their sessions, delivers what the room returns (each message
//! framed once, queued to every recipient), flushes every connection with
//! output once per round, streams joiners their snapshot, runs timers, and
//! shuts down on a signal.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::ServerConfig;
use slab::Slab;

use crate::addresses::{Addresses, Refused};
use crate::config::{Config, Limits, TlsFiles};
use crate::connection::{Connection, Flush, Input};
use crate::http::HttpPolicy;
use crate::outbox::{self, SharedFrame};
use crate::ratelimit::LogBudget;
use crate::room::{ConnId, Outbound, Room, To};
use crate::session::{self, Action, Session};
use crate::tls;
use crate::transport::{Socket, Transport};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Timers (handshake, login and idle timeouts, pings) are checked this often.
const TICK: Duration = Duration::from_secs(1);
/// Messages read from one connection before giving the others a turn.
const MAX_STEPS_PER_EVENT: usize = 64;
/// Writes between two looks at new input during a round's flush pass.
const FLUSHES_PER_POLL: usize = 32;
/// How long shutdown waits for Close frames to be flushed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Most bytes gathered from a connection's queue into one write.
const WRITE_GATHER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    Idle,
    /// The listener has connections waiting (edge-triggered: take them all).
    Ready,
    /// Accepting failed (typically out of file descriptors): retry at the
    /// next tick.
    Retry,
}

enum Phase {
    /// `None`: a server fed connections by hand (tests, fuzzing).
    Running {
        listener: Option<TcpListener>,
    },
    Stopping {
        deadline: Instant,
    },
}

/// A connection and the chat session on it.
struct Client<S> {
    conn: Connection<S>,
    session: Session,
}

pub struct Server<S = TcpStream> {
    poll: Poll,
    phase: Phase,
    local_addr: Option<SocketAddr>,
    tls: Option<Arc<ServerConfig>>,
    /// Where the certificate and key are read from again on SIGHUP.
    tls_files: Option<TlsFiles>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    clients: Slab<Client<S>>,
    room: Room,
    limits: Limits,
    http: HttpPolicy,
    addresses: Addresses,
    /// What the room asked to send, not yet delivered.
    out: Vec<Outbound>,
    /// Connections with output queued this round.
    to_flush: Vec<ConnId>,
    /// The pass being flushed (`to_flush` as it was when the pass began);
    /// kept between passes so that its memory is reused.
    flushing: Vec<ConnId>,
    /// Connections that still had input when their turn ended.
    again: Vec<ConnId>,
    /// Where queued frames are gathered for one write (capacity `WRITE_GATHER`).
    scratch: Vec<u8>,
    /// What the listener needs.
    accept: Accept,
    /// Connections refused at accept, logged within a budget.
    refused_log: LogBudget,
    /// Handshakes that timed out, logged within a budget.
    timeout_log: LogBudget,
}

impl Server<TcpStream> {
    /// Binds the listening socket. TLS is on when `tls` is given.
    pub fn bind(config: &Config, tls: Option<Arc<ServerConfig>>) -> io::Result<Self> {
        let addr = (config.server_ip.as_str(), config.server_port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
        let mut listener = TcpListener::bind(addr)?;
        let mut server = Server::detached(config, tls)?;
        server.poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        server.local_addr = Some(listener.local_addr()?);
        server.phase = Phase::Running { listener: Some(listener) };
        Ok(server)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        match self.local_addr {
            Some(addr) => format!("{scheme}://{addr}"),
            None => format!("{scheme}://(not listening)"),
        }
    }

    /// Shut down gracefully on SIGINT and SIGTERM; reload the certificate
    /// and key on SIGHUP.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        self.poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs until shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = if self.again.is_empty() && self.accept != Accept::Ready {
                next_tick.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            self.poll_and_dispatch(&mut events, timeout)?;
            let now = Instant::now();
            if self.accept == Accept::Ready {
                self.accept(now);
            }
            self.read_again(now);
            if now >= next_tick {
                if self.accept == Accept::Retry {
                    self.accept(now);
                }
                self.tick(now);
                next_tick = now + TICK;
            }
            self.finish_round(&mut events)?;
            if let Phase::Stopping { deadline } = self.phase {
                if self.clients.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if now >= deadline {
                    warn!("shutdown: {} connections did not close in time", self.clients.len());
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        self.accept = Accept::Idle;
        loop {
            let Phase::Running { listener: Some(listener) } = &self.phase else {
                return;
            };
            let (mut socket, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("accept failed: {e}");
                    self.accept = Accept::Retry;
                    return;
                }
            };
            if let Err(why) = self.admit(peer, now) {
                if self.tls.is_none() {
                    let body = format!("{why}\n");
                    let response = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write(response.as_bytes());
                }
                continue;
            }
            let _ = socket.set_nodelay(true);
            if let Err(e) = self.add(socket, peer, now) {
                warn!("{peer}: {e}");
            }
        }
    }
}

impl<S: Socket + Source> Server<S> {
    /// A server that listens nowhere: connections are handed to it with
    /// `add` (tests and fuzzing drive it over memory pipes).
    pub fn detached(config: &Config, tls: Option<Arc<ServerConfig>>) -> io::Result<Self> {
        let limits = config.limits.clone();
        Ok(Server {
            poll: Poll::new()?,
            local_addr: None,
            phase: Phase::Running { listener: None },
            tls,
            tls_files: config.tls.clone(),
            signals: None,
            clients: Slab::new(),
            room: Room::new(
                &config.server_name,
                &config.server_password,
                config.history_size,
                limits.max_outbound_bytes,
            ),
            addresses: Addresses::new(&limits),
            http: HttpPolicy { allowed_origins: config.allowed_origins.clone() },
            limits,
            out: Vec::new(),
            to_flush: Vec::new(),
            flushing: Vec::new(),
            again: Vec::new(),
            scratch: Vec::with_capacity(WRITE_GATHER),
            accept: Accept::Idle,
            refused_log: LogBudget::default(),
            timeout_log: LogBudget::default(),
        })
    }

    /// Checks the global and per-address limits for a new connection and
    /// charges it to its address.
    fn admit(&mut self, peer: SocketAddr, now: Instant) -> Result<(), &'static str> {
        let why = if self.clients.len() >= self.limits.max_connections {
            "server full"
        } else {
            match self.addresses.open(peer.ip()) {
                Ok(()) => return Ok(()),
                Err(Refused::TooManyConnections) => "too many connections from your address",
                Err(Refused::TooManyHandshakes) => "too many unfinished logins from your address",
            }
        };
        if self.refused_log.allow(now) {
            warn!("{peer}: connection refused: {why}");
        }
        Err(why)
    }

    /// Takes a new connection (already charged to its address).
    pub fn add(&mut self, mut socket: S, peer: SocketAddr, now: Instant) -> io::Result<ConnId> {
        let charged = |server: &mut Self| server.addresses.close(peer.ip(), now);
        let key = self.clients.vacant_key();
        if let Err(e) = self.poll.registry().register(&mut socket, Token(key), Interest::READABLE) {
            charged(self);
            return Err(e);
        }
        let transport = match Transport::new(socket, self.tls.as_ref()) {
            Ok(t) => t,
            Err(e) => {
                charged(self);
                return Err(e);
            }
        };
        debug!("{peer}: connected ({} connections)", self.clients.len() + 1);
        let conn = Connection::new(transport, peer, self.limits.max_outbound_bytes, now);
        let session = Session::new();
        self.clients.insert(Client { conn, session });
        Ok(key)
    }

    /// Waits up to `timeout` for readiness and handles it.
    fn poll_and_dispatch(&mut self, events: &mut Events, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept = Accept::Ready,
                SIGNALS => self.on_signal(now),
                Token(key) => self.on_ready(
                    key,
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_read_closed() || event.is_error(),
                    event.is_writable(),
                    now,
                ),
            }
        }
        Ok(())
    }

    /// Readiness of one connection (also how tests and fuzzing drive it).
    pub fn on_ready(
        &mut self,
        key: ConnId,
        readable: bool,
        hung_up: bool,
        writable: bool,
        now: Instant,
    ) {
        if readable {
            if let Some(client) = self.clients.get_mut(key) {
                client.conn.on_readable(hung_up);
            }
            self.read(key, now);
        }
        if let (true, Some(client)) = (writable, self.clients.get_mut(key)) {
            schedule(&mut self.to_flush, client, key);
        }
    }

    /// Reads on from the connections whose turn ended with input left.
    pub fn read_again(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.again) {
            self.read(key, now);
        }
    }

    fn on_signal(&mut self, now: Instant) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let (mut reload, mut stop) = (false, false);
        for signal in signals.pending() {
            match signal {
                signal_hook::consts::SIGHUP => reload = true,
                _ => stop = true,
            }
        }
        if reload {
            self.reload_tls();
        }
        if !stop {
            return;
        }
        if let Phase::Running { listener } = &mut self.phase {
            if let Some(listener) = listener {
                let _ = self.poll.registry().deregister(listener);
            }
            info!("shutting down: closing {} connections", self.clients.len());
            self.phase = Phase::Stopping { deadline: now + SHUTDOWN_GRACE };
            let keys: Vec<ConnId> = self.clients.iter().map(|(key, _)| key).collect();
            for key in keys {
                let Some(client) = self.clients.get_mut(key) else { continue };
                if client.conn.shut_down(now) {
                    schedule(&mut self.to_flush, client, key);
                    self.end_session(key, "server shutting down");
                } else {
                    self.remove(key, now);
                }
            }
        }
    }

    /// SIGHUP: new connections get the certificate and key as they are now
    /// on disk; existing ones go on with theirs. A bad new pair is logged
    /// and the old one kept.
    fn reload_tls(&mut self) {
        let Some(files) = &self.tls_files else {
            info!("SIGHUP: TLS is off, nothing to reload");
            return;
        };
        match tls::load(files) {
            Ok(config) => {
                self.tls = Some(config);
                info!(
                    "SIGHUP: reloaded the certificate {} and key {}",
                    files.cert.display(),
                    files.key.display()
                );
            }
            Err(e) => error!("SIGHUP: kept the old certificate and key: {e}"),
        }
    }

    /// Timers, about once a second.
    pub fn tick(&mut self, now: Instant) {
        if let Some(n) = self.refused_log.unlogged(now) {
            warn!("refused {n} more connections in the last minute (limits reached)");
        }
        if let Some(n) = self.timeout_log.unlogged(now) {
            info!("{n} more handshakes timed out in the last minute");
        }
        self.addresses.sweep(now);
        let keys: Vec<ConnId> = self.clients.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(client) = self.clients.get_mut(key) else { continue };
            if client.conn.expired(now, self.limits.handshake_timeout) {
                if !client.conn.is_closing() && self.timeout_log.allow(now) {
                    info!("{}: handshake timeout", client.conn.peer);
                }
                self.remove(key, now);
                continue;
            }
            let Client { conn, session } = client;
            let action = session.tick(conn.last_heard(), conn.peer, &self.limits, now);
            self.apply(key, action, now);
        }
    }

    /// Handles input on one connection, delivering after every message so
    /// that everything goes out in the order the server accepted it.
    fn read(&mut self, key: ConnId, now: Instant) {
        for _ in 0..MAX_STEPS_PER_EVENT {
            let Some(client) = self.clients.get_mut(key) else {
                return;
            };
            let input = client.conn.read(now, &self.http);
            // A TLS handshake may want to answer even when no message came.
            schedule(&mut self.to_flush, client, key);
            match input {
                Input::Opened => client.session.opened(now),
                Input::Message(message) => {
                    let mut cx = session::Cx {
                        room: &mut self.room,
                        out: &mut self.out,
                        addresses: &mut self.addresses,
                        limits: &self.limits,
                        id: key,
                        peer: client.conn.peer,
                        now,
                    };
                    let action = client.session.on_message(message, &mut cx);
                    self.apply(key, action, now);
                    self.deliver(now);
                }
                Input::Progress => {}
                Input::Idle => return,
                Input::Ended(why) => self.end_session(key, &why),
                Input::Finished => return self.remove(key, now),
            }
        }
        self.again.push(key);
    }

    /// Does what a session asked of its connection.
    fn apply(&mut self, key: ConnId, action: Action, now: Instant) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let conn = &mut client.conn;
        match action {
            Action::Nothing => return,
            Action::Refuse(why) => conn.send_error(&why, now),
            Action::Ping => conn.send_control(outbox::ping_frame(), now),
            Action::LoggedIn => {
                conn.allow_messages(self.limits.max_message_bytes);
                self.addresses.handshake_done(conn.peer.ip());
            }
            Action::Close { code, reason, why } => {
                conn.close(code, reason, why.as_ref(), now);
                self.end_session(key, reason);
            }
        }
        if let Some(client) = self.clients.get_mut(key) {
            schedule(&mut self.to_flush, client, key);
        }
    }

    /// The one place a session ends: the user leaves the room (announced
    /// with the next presence flush) and the address's count is updated.
    fn end_session(&mut self, key: ConnId, why: &str) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let ip: IpAddr = client.conn.peer.ip();
        if client.session.end() {
            self.addresses.handshake_done(ip);
        }
        if let Some(name) = self.room.leave(key) {
            info!("{}: {name:?} left: {why} ({} online)", client.conn.peer, self.room.len());
        }
    }

    /// Frames each outbound message once and queues it to its recipients;
    /// readers over their limit are cut off.
    fn deliver(&mut self, now: Instant) {
        let mut slow = Vec::new();
        for Outbound { to, json } in self.out.drain(..) {
            let frame = outbox::text_frame(&json);
            let clients = &mut self.clients;
            let mut send = |id: ConnId| enqueue(clients, &mut self.to_flush, &mut slow, id, &frame);
            match to {
                To::One(id) => send(id),
                To::Many(ids) => ids.into_iter().for_each(send),
                To::Everyone => self.room.members().iter().copied().for_each(send),
            }
        }
        for id in slow {
            self.cut_off(id, now);
        }
    }

    fn cut_off(&mut self, id: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(id) else { return };
        if !client.session.is_chatting() {
            return;
        }
        warn!(
            "{}: slow reader over {} queued bytes, disconnecting",
            client.conn.peer,
            client.conn.queued()
        );
        client.conn.cut_off(now);
        self.end_session(id, "too slow");
    }

    /// Queues the next parts of joiners' snapshots while their queues are
    /// short, so a snapshot flows as fast as its reader takes it.
    fn feed_snapshots(&mut self, now: Instant) {
        if self.room.receiving().is_empty() {
            return;
        }
        let low_water = self.room.part_budget();
        for id in self.room.receiving().to_vec() {
            let Some(client) = self.clients.get_mut(id) else { continue };
            let mut fed = false;
            let mut overflow = false;
            while client.conn.queued() < low_water {
                let Some(json) = self.room.next_snapshot_part(id) else { break };
                fed = true;
                if client.conn.send(&outbox::text_frame(&json)).is_err() {
                    overflow = true;
                    break;
                }
            }
            if fed {
                schedule(&mut self.to_flush, client, id);
            }
            if overflow {
                self.cut_off(id, now);
            }
        }
    }

    /// End of a round: announce presence changes, feed snapshots, and write
    /// every connection that has output, all of a round's frames in one
    /// write. Every `FLUSHES_PER_POLL` writes it takes in what arrived
    /// meanwhile, so that the connections not yet written carry the new
    /// messages in the same write: fuller writes, and new messages start
    /// out sooner.
    pub fn finish_round(&mut self, events: &mut Events) -> io::Result<()> {
        loop {
            self.room.flush_presence(&mut self.out);
            let now = Instant::now();
            self.deliver(now);
            self.feed_snapshots(now);
            if self.to_flush.is_empty() {
                return Ok(());
            }
            let mut batch = std::mem::take(&mut self.flushing);
            std::mem::swap(&mut batch, &mut self.to_flush);
            for (i, &key) in batch.iter().enumerate() {
                self.flush(key, now);
                if i % FLUSHES_PER_POLL == FLUSHES_PER_POLL - 1 && i + 1 < batch.len() {
                    // (Presence waits for the end of the pass, to stay batched.)
                    self.poll_and_dispatch(events, Duration::ZERO)?;
                    self.deliver(Instant::now());
                }
            }
            batch.clear();
            self.flushing = batch;
        }
    }

    /// Writes one connection and keeps its poll registration in step.
    fn flush(&mut self, key: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(key) else { return };
        let conn = &mut client.conn;
        match conn.flush(&mut self.scratch) {
            Flush::Finished => return self.remove(key, now),
            Flush::Open { resume } => {
                if resume {
                    self.again.push(key);
                }
            }
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.registered {
            if self.poll.registry().reregister(conn.socket(), Token(key), wanted).is_err() {
                return self.remove(key, now);
            }
            conn.registered = wanted;
        }
    }

    fn remove(&mut self, key: ConnId, now: Instant) {
        self.end_session(key, "connection closed");
        let Some(mut client) = self.clients.try_remove(key) else {
            return;
        };
        self.addresses.close(client.conn.peer.ip(), now);
        let _ = self.poll.registry().deregister(client.conn.socket());
    }

    /// The most bytes queued for any connection (for tests and fuzzing).
    pub fn max_queued(&self) -> usize {
        self.clients.iter().map(|(_, c)| c.conn.queued()).max().unwrap_or(0)
    }
}

fn schedule<S>(to_flush: &mut Vec<ConnId>, client: &mut Client<S>, key: ConnId) {
    if !client.conn.flush_scheduled {
        client.conn.flush_scheduled = true;
        to_flush.push(key);
    }
}

fn enqueue<S: Socket>(
    clients: &mut Slab<Client<S>>,
    to_flush: &mut Vec<ConnId>,
    slow: &mut Vec<ConnId>,
    id: ConnId,
    frame: &SharedFrame,
) {
    let Some(client) = clients.get_mut(id) else {
        return;
    };
    // Frames for anyone not (or no longer) in the room are dropped.
    if !client.session.is_chatting() {
        return;
    }
    if client.conn.send(frame).is_err() {
        slow.push(id);
    }
    schedule(to_flush, client, id);
}
