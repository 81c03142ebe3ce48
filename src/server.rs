//! The event loop: one thread, one `mio::Poll`. It accepts connections into a
//! slab (within the per-address limits), hands readiness to them and their
//! messages to their sessions, delivers what the room returns (each message
//! framed once, queued to every recipient), flushes every connection with
//! output once per round, streams joiners their snapshot, runs timers, and
//! shuts down on a signal.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, warn};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::ServerConfig;
use slab::Slab;

mod node;

mod apply;
mod command;
mod reload;
pub use reload::Reloaded;

use crate::addresses::{Addresses, Peer};
use crate::admins::Admins;
use crate::cluster::Cluster;
use crate::config::{Config, Limits, TlsFiles};
use crate::connection::{Connection, Flush, Input};
use crate::effect::{ConnId, Effects, Ending};
use crate::history::History;
use crate::http::HttpPolicy;
use crate::metrics::{self, Stats};
use crate::moderation::Rules;
use crate::outbox;
use crate::peerlog::{Abuse, Class, PeerLog};
use crate::protocol::{ErrorCode, Rejection};
use crate::ratelimit::LogBudget;
use crate::room::Room;
use crate::session::{Cx, Session};
use crate::tls;
use crate::tokens::{
    CONTROL, CONTROL_REQUESTS, LISTENER, METRICS, METRICS_REQUESTS, SIGNALS, Target,
};
use crate::transport::{Socket, Transport};

/// Bytes a connection may have queued above `max_outbound_bytes` for control
/// frames and last words.
pub const OUTPUT_RESERVE: usize = outbox::RESERVE;

/// Timers (handshake, login and idle timeouts, pings) are checked this often.
const TICK: Duration = Duration::from_secs(1);
/// Messages read from one connection before giving the others a turn.
const MAX_STEPS_PER_EVENT: usize = 64;
/// Writes between two looks at new input during a round's flush pass.
const FLUSHES_PER_POLL: usize = 32;
/// How long shutdown waits for Close frames to be flushed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often freed heap is given back to the system (`trim_heap`).
const TRIM_INTERVAL: Duration = Duration::from_secs(60);
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

/// A connection, the chat session on it, and the address it is charged
/// to for the per-address limits.
struct Client<S> {
    conn: Connection<S>,
    session: Session,
    /// The address charged: `conn.peer.ip` as it was then (`None` only for
    /// a trusted proxy that has not named its client yet). Kept, so that
    /// what is released is what was charged even if a reload changed
    /// `trusted_proxies` meanwhile.
    charged: Option<IpAddr>,
    /// Tells this connection from a later one under the same slab key.
    serial: u64,
    /// When its user logged in (for `ctl who`): set as `Effect::LoggedIn`
    /// is carried out, and room traffic reaches it only from then on (what
    /// was decided before its login, in the same round, is not for it).
    joined: Option<SystemTime>,
}

pub struct Server<S = TcpStream> {
    poll: Poll,
    phase: Phase,
    local_addr: Option<SocketAddr>,
    tls: Option<Arc<ServerConfig>>,
    /// Where the certificate and key are read from again on SIGHUP.
    tls_files: Option<TlsFiles>,
    /// The config in force (keys that need a restart at their start values).
    config: Config,
    /// Where `reload_config` reads it again (`set_config_path`).
    config_path: Option<PathBuf>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    clients: Slab<Client<S>>,
    room: Room,
    limits: Limits,
    http: HttpPolicy,
    addresses: Addresses,
    /// What the sessions, the room and the cluster's notes decided, not
    /// yet carried out (`settle`).
    effects: Effects,
    /// The batch being carried out (kept between batches for its memory).
    applying: Effects,
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
    /// Connections refused because the server is full, logged within a
    /// budget.
    refused_log: LogBudget,
    /// The log's budget per address (every line a peer can cause).
    peer_log: PeerLog,
    /// What the metrics show.
    stats: Stats,
    started: Instant,
    /// When freed heap was last given back to the system.
    trimmed: Instant,
    /// A connection was opened since then (the heap may have grown).
    grown_since_trim: bool,
    /// When the certificate in use expires (Unix seconds).
    cert_not_after: Option<u64>,
    /// The health and metrics listener, when `metrics_addr` is set.
    metrics: Option<metrics::Endpoint>,
    /// The link to the other nodes, when `redis_url` is set.
    cluster: Option<Cluster>,
    /// The owner's rules (bans, mutes, the lock), and where bans are kept.
    rules: Rules,
    state_file: Option<PathBuf>,
    /// Failures to write `state_file`, logged once a minute.
    unsaved_log: LogBudget,
    /// Bans changed since `state_file` was last written (at the next tick).
    rules_unsaved: bool,
    /// The moderators in the room (`admins`).
    admins: Admins,
    /// The control socket of `ragnarok ctl`, when `control_socket` is set.
    control: Option<command::Endpoint>,
    next_serial: u64,
    /// The next `ctl` request proposed to the cluster.
    next_ticket: u64,
    /// The Autobahn echo endpoint (feature `testing`): every session echoes.
    #[cfg(feature = "testing")]
    echo: bool,
}

impl Server<TcpStream> {
    /// Binds the listening socket. TLS is on when `tls` is given.
    pub fn bind(config: &Config, tls: Option<Arc<ServerConfig>>) -> io::Result<Self> {
        let addr = (config.server_ip.as_str(), config.server_port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
        let mut listener = crate::listen::listen(addr, config.reuse_port)?;
        large_buffers_unmapped();
        let mut server = Server::detached(config, tls)?;
        server.poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        server.local_addr = Some(listener.local_addr()?);
        if let Some(addr) = &config.metrics_addr {
            let addr = addr
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no address"))?;
            let bound = mio::net::TcpListener::bind(addr)
                .and_then(|l| metrics::Endpoint::new(l, server.poll.registry(), METRICS));
            let endpoint =
                bound.map_err(|e| io::Error::new(e.kind(), format!("metrics_addr {addr}: {e}")))?;
            let addr = endpoint.listener().local_addr()?;
            info!("health and metrics on http://{addr}/healthz and /metrics");
            server.metrics = Some(endpoint);
        }
        server.phase = Phase::Running { listener: Some(listener) };
        Ok(server)
    }

    /// Makes this server the Autobahn testsuite's echo endpoint (feature
    /// `testing`, never the chat server): no login, every text or binary
    /// message goes back to its sender as one frame; pings, closes, limits
    /// and protocol errors are handled exactly as in the chat.
    #[cfg(feature = "testing")]
    pub fn echo_mode(&mut self) {
        self.echo = true;
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        match self.local_addr {
            Some(addr) => format!("{scheme}://{addr}"),
            None => format!("{scheme}://(not listening)"),
        }
    }

    /// Opens the control socket of `ragnarok ctl` (`control_socket`), once
    /// the server is otherwise ready: a server that cannot start never
    /// leaves one behind, and its log says where it listens first.
    /// Where it listens, if it does.
    pub fn open_control<'a>(&mut self, config: &'a Config) -> Option<&'a std::path::Path> {
        let path = config.control_socket.as_deref()?;
        self.control = command::open(path, self.poll.registry(), CONTROL);
        self.control.as_ref().map(|_| path)
    }

    /// Shut down gracefully on SIGINT and SIGTERM; reload the config, the
    /// certificate and the key on SIGHUP.
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
                if self.clients.is_empty() || now >= deadline {
                    self.write_rules();
                }
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
            let charged = match self.admit(Peer::direct(peer), now) {
                Ok(charged) => charged,
                Err(why) => {
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
            };
            let _ = socket.set_nodelay(true);
            if let Err(e) = self.add(socket, Peer::direct(peer), charged, now) {
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
            config: config.clone(),
            config_path: None,
            signals: None,
            clients: Slab::new(),
            room: Room::new(
                &config.server_name,
                &config.server_password,
                History::new(config.history_size, config.history_max_bytes),
                limits.max_outbound_bytes,
            )
            .encrypted(config.e2e_room)
            .resumable(max_away(&limits)),
            addresses: Addresses::new(&limits),
            http: HttpPolicy {
                allowed_origins: config.allowed_origins.clone(),
                trusted_proxies: config.trusted_proxies.clone(),
                max_message_bytes: config.limits.max_message_bytes,
                e2e_room: config.e2e_room,
                rate_limit: (config.limits.rate_limit_per_sec, config.limits.rate_limit_burst),
                room_name: config.server_name.clone(),
            },
            limits,
            effects: Vec::new(),
            applying: Vec::new(),
            to_flush: Vec::new(),
            flushing: Vec::new(),
            again: Vec::new(),
            scratch: Vec::with_capacity(WRITE_GATHER),
            accept: Accept::Idle,
            refused_log: LogBudget::default(),
            peer_log: PeerLog::default(),
            stats: Stats::default(),
            started: Instant::now(),
            trimmed: Instant::now(),
            grown_since_trim: false,
            cert_not_after: config.tls.as_ref().and_then(|files| tls::not_after(&files.cert)),
            metrics: None,
            rules: Rules::new(config.room_logins_per_sec),
            state_file: config.state_file.clone(),
            unsaved_log: LogBudget::default(),
            rules_unsaved: false,
            admins: Admins::new(&config.admins),
            control: None,
            cluster: None,
            next_serial: 0,
            next_ticket: 0,
            #[cfg(feature = "testing")]
            echo: false,
        })
    }

    /// Checks the global and per-address limits for a new connection and
    /// charges it to its address (a trusted proxy is charged nothing yet:
    /// `opened` charges the client it names, or the proxy itself when it
    /// names none). `Ok`: the address charged.
    fn admit(&mut self, peer: Peer, now: Instant) -> Result<Option<IpAddr>, String> {
        let (why, reason) = if self.clients.len() >= self.limits.max_connections {
            ("server full".to_owned(), "server_full")
        } else if self.http.trusts(peer.ip) {
            return Ok(None);
        } else {
            match self.addresses.open(peer.ip, now) {
                Ok(()) => return Ok(Some(peer.ip)),
                Err(refused) => {
                    Stats::count(&mut self.stats.connections_refused, refused.reason(), 1);
                    self.peer_log.abuse(Abuse::of(&refused), peer.ip, now);
                    return Err(refused.to_string());
                }
            }
        };
        Stats::count(&mut self.stats.connections_refused, reason, 1);
        if self.refused_log.allow(now) {
            warn!("{peer}: connection refused: {why}");
        }
        Err(why)
    }

    /// Takes a new connection that `admit` let in.
    fn add(
        &mut self,
        mut socket: S,
        peer: Peer,
        charged: Option<IpAddr>,
        now: Instant,
    ) -> io::Result<ConnId> {
        let key = self.clients.vacant_key();
        self.grown_since_trim = true;
        let registered = self.poll.registry().register(&mut socket, Token(key), Interest::READABLE);
        let transport = registered.and_then(|()| Transport::new(socket, self.tls.as_ref()));
        let transport = match transport {
            Ok(t) => t,
            Err(e) => {
                if let Some(ip) = charged {
                    self.addresses.close(ip, now);
                }
                return Err(e);
            }
        };
        debug!("{peer}: connected ({} connections)", self.clients.len() + 1);
        self.stats.connections_accepted += 1;
        let conn = Connection::new(transport, peer, self.limits.max_outbound_bytes, now);
        self.next_serial += 1;
        let serial = self.next_serial;
        let client = Client { conn, session: Session::new(), charged, serial, joined: None };
        self.clients.insert(client);
        Ok(key)
    }

    /// Adopts a connection over a socket made elsewhere (tests and
    /// fuzzing), under the same limits as an accepted one.
    pub fn adopt(&mut self, socket: S, addr: SocketAddr, now: Instant) -> io::Result<ConnId> {
        let peer = Peer::direct(addr);
        let charged = self
            .admit(peer, now)
            .map_err(|why| io::Error::new(io::ErrorKind::ConnectionRefused, why))?;
        self.add(socket, peer, charged, now)
    }

    /// The WebSocket opened: the login clock starts, and a connection from a
    /// trusted proxy (not charged at accept) is charged now: to the client
    /// it named, or to the proxy's own address when it named none, so that
    /// no connection is counted nowhere.
    fn opened(&mut self, key: ConnId, now: Instant) {
        #[cfg(feature = "testing")]
        if self.echo {
            return self.with_session(key, now, |session, cx| session.echo(cx));
        }
        let Some(client) = self.clients.get_mut(key) else { return };
        client.session.opened(now, &self.limits);
        let peer = client.conn.peer;
        if client.charged.is_some() {
            return;
        }
        match self.addresses.open(peer.ip, now) {
            Ok(()) => client.charged = Some(peer.ip),
            Err(refused) => {
                self.peer_log.abuse(Abuse::of(&refused), peer.ip, now);
                Stats::count(&mut self.stats.connections_refused, refused.reason(), 1);
                let why = Rejection::new(ErrorCode::TooManyConnections, refused.to_string());
                self.end(key, Ending::policy("too many connections", why), now);
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
            match Target::of(event.token()) {
                Target::Listener => self.accept = Accept::Ready,
                Target::Signals => self.on_signal(now),
                Target::Metrics => {
                    if let Some(endpoint) = &mut self.metrics {
                        endpoint.accept(self.poll.registry(), METRICS_REQUESTS, now);
                    }
                }
                Target::Redis => {
                    if let Some(cluster) = &mut self.cluster {
                        cluster.on_ready(self.poll.registry(), now);
                    }
                    self.settle(now);
                }
                Target::MetricsRequest(key) => self.answer_metrics(key),
                Target::Control => {
                    if let Some(endpoint) = &mut self.control {
                        endpoint.accept(self.poll.registry(), CONTROL_REQUESTS, now);
                    }
                }
                Target::ControlRequest(key) => self.answer_control(key, now),
                Target::Connection(key) => self.on_ready(
                    key,
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_read_closed() || event.is_error(),
                    event.is_writable(),
                    now,
                ),
            }
        }
        // What this round asked of the cluster goes out now, not after
        // the flush pass (a round's proposals share one write to Redis).
        if let Some(cluster) = &mut self.cluster {
            cluster.flush(self.poll.registry(), now);
        }
        self.settle(now);
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
            // The config first: a new `SSL_Cert` or `SSL_Key` is read now.
            match self.reload_config(now) {
                Ok(reloaded) => info!("SIGHUP: reloaded config: {reloaded}"),
                Err(e) => error!("SIGHUP: kept the old config: {e}"),
            }
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
                match self.clients.get(key) {
                    Some(client) if client.conn.is_handshaking() => self.remove(key, now),
                    Some(_) => self.end(key, Ending::ShutDown, now),
                    None => {}
                }
            }
            self.settle(now);
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
                self.cert_not_after = tls::not_after(&files.cert);
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
    /// Sessions away past `resume_grace_secs` leave (announced at the end
    /// of the round; in a cluster their names are released).
    fn expire_away(&mut self, now: Instant) {
        let gone = self.room.expire(now, &mut self.effects);
        if gone.is_empty() {
            return;
        }
        let (gone, online) = (gone.len(), self.room.online());
        info!("{gone} sessions away past resume_grace_secs left ({online} online)");
        self.settle(now);
    }

    pub fn tick(&mut self, now: Instant) {
        // Once a minute, and as soon as everyone has gone: an empty server
        // should look empty to `ps` (the tick bounds it to once a second).
        let emptied = self.grown_since_trim && self.clients.is_empty();
        if emptied || now.saturating_duration_since(self.trimmed) >= TRIM_INTERVAL {
            self.trimmed = now;
            self.grown_since_trim = false;
            trim_heap();
        }
        if let Some(n) = self.refused_log.unlogged(now) {
            warn!("refused {n} more connections in the last minute (server full)");
        }
        if let Some(n) = self.unsaved_log.unlogged(now) {
            error!("bans not saved {n} more times in the last minute");
        }
        self.peer_log.tick(now);
        self.addresses.sweep(now);
        if let Some(cluster) = &mut self.cluster {
            cluster.tick(self.poll.registry(), now);
        }
        if let Some(endpoint) = &mut self.metrics {
            endpoint.expire(self.poll.registry(), now);
        }
        if let Some(endpoint) = &mut self.control {
            endpoint.expire(self.poll.registry(), now);
        }
        self.expire_rules();
        self.expire_away(now);
        let keys: Vec<ConnId> = self.clients.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(client) = self.clients.get_mut(key) else { continue };
            if client.conn.expired(now, self.limits.handshake_timeout) {
                if client.conn.is_handshaking() {
                    self.stats.handshake_failures += 1;
                    let peer = client.conn.peer;
                    if self.peer_log.allow(Class::Refusals, peer.ip, now) {
                        info!("{peer}: handshake timeout");
                    }
                }
                self.remove(key, now);
                continue;
            }
            let (last_heard, unfinished) =
                (client.conn.last_heard(), client.conn.unfinished_since(now));
            self.with_session(key, now, |session, cx| session.tick(last_heard, unfinished, cx));
        }
        self.settle(now);
    }

    /// Handles input on one connection, carrying out what each message
    /// decides before reading the next, so that everything goes out in the
    /// order the server accepted it.
    fn read(&mut self, key: ConnId, now: Instant) {
        for _ in 0..MAX_STEPS_PER_EVENT {
            let Some(client) = self.clients.get_mut(key) else {
                return;
            };
            let input = client.conn.read(now, &self.http);
            let fragments = client.conn.take_fragments();
            let handshaking = client.conn.is_handshaking();
            // A TLS handshake may want to answer even when no message came.
            schedule(&mut self.to_flush, client, key);
            if let Input::Opened = input {
                // First: frames that came with the request are charged too.
                self.opened(key, now);
            }
            if fragments > 0 {
                self.with_session(key, now, |session, cx| session.on_fragments(fragments, cx));
            }
            match input {
                Input::Opened => {}
                Input::Message(message) => {
                    self.with_session(key, now, |session, cx| session.on_message(message, cx));
                }
                Input::Progress => {}
                Input::Idle => return,
                Input::Ended { why, refused, dropped } => {
                    if let Some(code) = refused {
                        self.stats.refused(code);
                    }
                    self.end(key, Ending::Lost { why, dropped }, now);
                }
                Input::Finished => {
                    if handshaking {
                        self.stats.handshake_failures += 1;
                    }
                    self.remove(key, now);
                    return self.settle(now);
                }
            }
            self.settle(now);
        }
        self.again.push(key);
    }

    /// Runs `f` on a session with what it may touch; what it decides waits
    /// in `effects` for `settle`.
    fn with_session(&mut self, id: ConnId, now: Instant, f: impl FnOnce(&mut Session, &mut Cx)) {
        let Some(Client { conn, session, charged, .. }) = self.clients.get_mut(id) else { return };
        let mut cx = Cx {
            room: &mut self.room,
            out: &mut self.effects,
            addresses: &mut self.addresses,
            log: &mut self.peer_log,
            limits: &self.limits,
            id,
            peer: conn.peer,
            charged: *charged,
            now,
            rules: &mut self.rules,
            wall: SystemTime::now(),
            admins: &mut self.admins,
        };
        f(session, &mut cx);
    }

    /// End of a round: announce presence changes, feed snapshots, and write
    /// every connection that has output, all of a round's frames in one
    /// write. Every `FLUSHES_PER_POLL` writes it takes in what arrived
    /// meanwhile, so that the connections not yet written carry the new
    /// messages in the same write: fuller writes, and new messages start
    /// out sooner.
    pub fn finish_round(&mut self, events: &mut Events) -> io::Result<()> {
        if let Some(cluster) = &mut self.cluster {
            cluster.flush(self.poll.registry(), Instant::now());
        }
        loop {
            let now = Instant::now();
            self.room.flush_presence(&mut self.effects);
            self.settle(now);
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

    /// The socket is done with: the session ends (if it had not), the
    /// address's count drops, the slab slot is freed.
    fn remove(&mut self, key: ConnId, now: Instant) {
        self.end(key, Ending::Lost { why: "connection closed".into(), dropped: true }, now);
        let Some(mut client) = self.clients.try_remove(key) else {
            return;
        };
        if let Some(ip) = client.charged {
            self.addresses.close(ip, now);
        }
        let (received, sent) = client.conn.traffic();
        self.stats.bytes_in += received;
        self.stats.bytes_out += sent;
        let _ = self.poll.registry().deregister(client.conn.socket());
    }

    /// The Prometheus text for a scrape.
    fn metrics_text(&self) -> String {
        let mut phases = [("handshaking", 0), ("logging_in", 0), ("chatting", 0), ("closing", 0)];
        let (mut bytes_in, mut bytes_out) = (0, 0);
        for (_, client) in &self.clients {
            let phase =
                if client.conn.is_closing() { "closing" } else { client.session.phase_name() };
            if let Some(entry) = phases.iter_mut().find(|(name, _)| *name == phase) {
                entry.1 += 1;
            }
            let (received, sent) = client.conn.traffic();
            bytes_in += received;
            bytes_out += sent;
        }
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let snapshot = metrics::Snapshot {
            users_online: self.room.online(),
            sessions_away: self.room.away(),
            phases,
            bytes_in,
            bytes_out,
            uptime_seconds: self.started.elapsed().as_secs(),
            certificate_expiry: self.cert_not_after.map(|t| t as i64 - unix_now as i64),
            shutting_down: matches!(self.phase, Phase::Stopping { .. }),
            cluster: self.cluster.as_ref().map(|c| metrics::ClusterView {
                up: c.is_up(),
                stats: c.stats.clone(),
                local_users: self.room.local_members().len(),
            }),
        };
        metrics::encode(&self.stats, &snapshot)
    }

    /// Reads a request on the metrics listener and answers it.
    fn answer_metrics(&mut self, key: usize) {
        let shutting_down = matches!(self.phase, Phase::Stopping { .. });
        // Taken out while it is served, so that the scrape can read the rest.
        let Some(mut endpoint) = self.metrics.take() else { return };
        let registry = self.poll.registry();
        let mut text = Some(|| self.metrics_text());
        endpoint.serve(key, registry, METRICS_REQUESTS, |received| {
            metrics::respond(received, shutting_down, || {
                text.take().map_or_else(String::new, |f| f())
            })
        });
        self.metrics = Some(endpoint);
    }

    /// The most bytes queued for any open WebSocket (for tests and
    /// fuzzing: it never passes `max_outbound_bytes` + `OUTPUT_RESERVE`).
    pub fn max_queued(&self) -> usize {
        let open = self.clients.iter().filter(|(_, c)| c.conn.is_open());
        open.map(|(_, c)| c.conn.queued()).max().unwrap_or(0)
    }

    /// The most broadcasts and bytes of history a joiner is sent.
    pub fn history_limits(&self) -> (usize, usize) {
        self.room.history().limits()
    }

    pub fn users_online(&self) -> usize {
        self.room.online()
    }
}

/// glibc keeps the heap that freed memory leaves (it gives back only from
/// the top, which a few late allocations hold): after a crowd leaves, RSS
/// would stay near its peak. `malloc_trim` returns the free pages; it takes
/// about a millisecond for tens of MB, once a minute.
/// Buffers of this size and more get pages of their own, returned to the
/// system as soon as they are freed: a client's large message costs memory
/// only while it is handled.
const MMAP_THRESHOLD: i32 = 32 * 1024;

/// Large buffers (a large message, a reader's buffer for it) are mapped
/// and unmapped, not carved from the heap: glibc would keep their pages
/// after they are freed (and raise its threshold, so that the next ones
/// stay too), until `trim_heap`.
fn large_buffers_unmapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before any
    // connection exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn schedule<S>(to_flush: &mut Vec<ConnId>, client: &mut Client<S>, key: ConnId) {
    if !client.conn.flush_scheduled {
        client.conn.flush_scheduled = true;
        to_flush.push(key);
    }
}

/// Most sessions away at once: one per connection the server takes (none
/// when resuming is off).
pub(crate) fn max_away(limits: &crate::config::Limits) -> usize {
    match limits.resume_grace.is_zero() {
        true => 0,
        false => limits.max_connections.max(1),
    }
}
