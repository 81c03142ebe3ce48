//! The event loop: one thread, one `mio::Poll`. It accepts connections into a
//! slab, hands readiness to them, delivers what the room returns (each
//! message framed once, queued to every recipient), flushes every connection
//! with output once per round, runs timers, and shuts down on a signal.

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use rustls::ServerConfig;
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;

use crate::config::{Config, Limits};
use crate::connection::{Connection, Cx, Step};
use crate::outbox::{self, SharedFrame};
use crate::room::{ConnId, Outbound, Room, To};
use crate::transport::Transport;

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Timers (handshake and idle timeouts, pings) are checked this often.
const TICK: Duration = Duration::from_secs(1);
/// Messages read from one connection before giving the others a turn.
const MAX_STEPS_PER_EVENT: usize = 64;
/// Writes between two looks at new input during a round's flush pass.
const FLUSHES_PER_POLL: usize = 32;
/// How long shutdown waits for Close frames to be flushed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// tungstenite's read buffer per connection (its default is 128 KiB). It is
/// allocated for every connection: 1 KiB keeps an idle user near 1.5 KiB of
/// RSS (4 KiB gave 4.5 KiB), at the price of more reads for large messages.
const WS_READ_BUFFER: usize = 1024;
/// Most bytes gathered from a connection's queue into one write.
const WRITE_GATHER: usize = 64 * 1024;

enum Phase {
    Running { listener: TcpListener },
    Stopping { deadline: Instant },
}

pub struct Server {
    poll: Poll,
    phase: Phase,
    local_addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    conns: Slab<Connection>,
    room: Room,
    limits: Limits,
    ws_config: WebSocketConfig,
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
    /// Accepting failed (out of file descriptors): retry on the next tick.
    accept_pending: bool,
}

impl Server {
    /// Binds the listening socket. TLS is on when `tls` is given.
    pub fn bind(config: &Config, tls: Option<Arc<ServerConfig>>) -> io::Result<Server> {
        let addr = (config.server_ip.as_str(), config.server_port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
        let mut listener = TcpListener::bind(addr)?;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let limits = config.limits.clone();
        let max = limits.max_message_bytes;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(64 * 1024)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        Ok(Server {
            poll,
            local_addr: listener.local_addr()?,
            phase: Phase::Running { listener },
            tls,
            signals: None,
            conns: Slab::new(),
            // Half the output limit: a joiner's replay never counts as a slow reader.
            room: Room::new(
                &config.server_name,
                &config.server_password,
                config.history_size,
                config.limits.max_outbound_bytes / 2,
            ),
            limits,
            ws_config,
            out: Vec::new(),
            to_flush: Vec::new(),
            flushing: Vec::new(),
            again: Vec::new(),
            scratch: Vec::with_capacity(WRITE_GATHER),
            accept_pending: false,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Shut down gracefully on SIGINT and SIGTERM.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM])?;
        self.poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs until shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = if self.again.is_empty() {
                next_tick.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            self.poll_and_dispatch(&mut events, timeout)?;
            let now = Instant::now();
            for key in std::mem::take(&mut self.again) {
                self.read(key, now);
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            self.finish_round(&mut events)?;
            if let Phase::Stopping { deadline } = self.phase {
                if self.conns.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if now >= deadline {
                    warn!("shutdown: {} connections did not close in time", self.conns.len());
                    return Ok(());
                }
            }
        }
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
                LISTENER => self.accept(now),
                SIGNALS => self.on_signal(now),
                Token(key) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.on_readable();
                        }
                        self.read(key, now);
                    }
                    if event.is_writable() {
                        self.schedule_flush(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, now: Instant) {
        let Phase::Running { listener } = &self.phase else {
            return;
        };
        self.accept_pending = false;
        loop {
            let (mut socket, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Typically out of file descriptors: try again on the next tick.
                    warn!("accept failed: {e}");
                    self.accept_pending = true;
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections {
                warn!("{peer}: refused, max_connections ({}) reached", self.limits.max_connections);
                if self.tls.is_none() {
                    let _ = socket.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\nConnection: close\r\n\r\nserver full\n",
                    );
                }
                continue;
            }
            let _ = socket.set_nodelay(true);
            let mut transport = match Transport::new(socket, self.tls.as_ref()) {
                Ok(t) => t,
                Err(e) => {
                    warn!("{peer}: {e}");
                    continue;
                }
            };
            let count = self.conns.len() + 1;
            let entry = self.conns.vacant_entry();
            let token = Token(entry.key());
            if let Err(e) =
                self.poll.registry().register(transport.socket(), token, Interest::READABLE)
            {
                warn!("{peer}: cannot register: {e}");
                continue;
            }
            info!("{peer}: connected ({count} connections)");
            entry.insert(Connection::new(transport, peer, self.limits.max_outbound_bytes, now));
        }
    }

    fn on_signal(&mut self, now: Instant) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        if signals.pending().next().is_none() {
            return;
        }
        if let Phase::Running { listener } = &mut self.phase {
            let _ = self.poll.registry().deregister(listener);
            info!("shutting down: closing {} connections", self.conns.len());
            self.phase = Phase::Stopping { deadline: now + SHUTDOWN_GRACE };
            self.for_each_conn(now, Connection::shut_down);
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.accept_pending {
            self.accept(now);
        }
        self.for_each_conn(now, Connection::tick);
    }

    /// Runs `f` on every connection; flushes or removes them as it says.
    fn for_each_conn(&mut self, now: Instant, f: fn(&mut Connection, ConnId, &mut Cx) -> Step) {
        let mut finished = Vec::new();
        let mut cx = Cx {
            room: &mut self.room,
            out: &mut self.out,
            limits: &self.limits,
            ws_config: self.ws_config,
            now,
        };
        for (key, conn) in self.conns.iter_mut() {
            match f(conn, key, &mut cx) {
                Step::Progress => schedule(&mut self.to_flush, conn, key),
                Step::Idle => {}
                Step::Finished => finished.push(key),
            }
        }
        for key in finished {
            self.remove(key);
        }
    }

    /// Handles input on one connection, delivering after every message so
    /// that everything goes out in the order the server accepted it.
    fn read(&mut self, key: ConnId, now: Instant) {
        for _ in 0..MAX_STEPS_PER_EVENT {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let mut cx = Cx {
                room: &mut self.room,
                out: &mut self.out,
                limits: &self.limits,
                ws_config: self.ws_config,
                now,
            };
            let step = conn.read_step(key, &mut cx);
            // A TLS handshake may want to answer even when no message came.
            schedule(&mut self.to_flush, conn, key);
            self.deliver(now);
            match step {
                Step::Progress => {}
                Step::Idle => return,
                Step::Finished => return self.remove(key),
            }
        }
        self.again.push(key);
    }

    /// Frames each outbound message once and queues it to its recipients;
    /// readers over their limit are cut off.
    fn deliver(&mut self, now: Instant) {
        let mut slow = Vec::new();
        for Outbound { to, json } in self.out.drain(..) {
            let frame = outbox::text_frame(&json);
            let conns = &mut self.conns;
            let mut send = |id: ConnId| enqueue(conns, &mut self.to_flush, &mut slow, id, &frame);
            match to {
                To::One(id) => send(id),
                To::Many(ids) => ids.into_iter().for_each(send),
                To::Everyone => self.room.members().iter().copied().for_each(send),
            }
        }
        for id in slow {
            if let Some(conn) = self.conns.get_mut(id) {
                let mut cx = Cx {
                    room: &mut self.room,
                    out: &mut self.out,
                    limits: &self.limits,
                    ws_config: self.ws_config,
                    now,
                };
                conn.cut_off(id, &mut cx);
            }
        }
    }

    /// End of a round: announce presence changes and write every connection
    /// that has output, all of a round's frames in one write. Every
    /// `FLUSHES_PER_POLL` writes it takes in what arrived meanwhile, so that
    /// the connections not yet written carry the new messages in the same
    /// write: fuller writes, and new messages start out sooner.
    fn finish_round(&mut self, events: &mut Events) -> io::Result<()> {
        loop {
            self.room.flush_presence(&mut self.out);
            self.deliver(Instant::now());
            if self.to_flush.is_empty() {
                return Ok(());
            }
            let mut batch = std::mem::take(&mut self.flushing);
            std::mem::swap(&mut batch, &mut self.to_flush);
            for (i, &key) in batch.iter().enumerate() {
                let alive = self
                    .conns
                    .get_mut(key)
                    .is_none_or(|c| c.flush(self.poll.registry(), Token(key), &mut self.scratch));
                if !alive {
                    self.remove(key);
                }
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

    fn schedule_flush(&mut self, key: ConnId) {
        if let Some(conn) = self.conns.get_mut(key) {
            schedule(&mut self.to_flush, conn, key);
        }
    }

    fn remove(&mut self, key: ConnId) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Some(name) = self.room.leave(key) {
            info!("{}: {name:?} disconnected ({} online)", conn.peer(), self.room.len());
        }
        let _ = self.poll.registry().deregister(conn.socket());
    }
}

fn schedule(to_flush: &mut Vec<ConnId>, conn: &mut Connection, key: ConnId) {
    if !conn.flush_scheduled {
        conn.flush_scheduled = true;
        to_flush.push(key);
    }
}

fn enqueue(
    conns: &mut Slab<Connection>,
    to_flush: &mut Vec<ConnId>,
    slow: &mut Vec<ConnId>,
    id: ConnId,
    frame: &SharedFrame,
) {
    let Some(conn) = conns.get_mut(id) else {
        return;
    };
    if conn.send(frame).is_err() {
        slow.push(id);
    }
    schedule(to_flush, conn, id);
}
