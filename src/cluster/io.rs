//! The cluster as the server holds it: the link's state machine plus its
//! two non-blocking Redis connections (commands, subscription) on the
//! server's `mio::Poll`. It pumps them, feeds the link, applies its `Out`s.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use mio::Registry;

use super::event::{LocalUser, Origin, Proposed};
use super::link::{ClusterStats, Link, LinkError, Note, Out};
use crate::config;
use crate::redis::{Command, Conn, RedisUrl};
use crate::tokens::{REDIS_COMMANDS, REDIS_SUBSCRIPTION};

/// The two connections of a link that is joining or up.
struct Conns {
    cmd: Conn,
    sub: Conn,
}

pub struct Cluster {
    link: Link,
    url: RedisUrl,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `Some` from `Out::Connect` to `Out::Disconnect`.
    conns: Option<Conns>,
    /// The link's counters, as of the last call.
    pub stats: ClusterStats,
}

impl Cluster {
    /// `addr`: `config.redis` resolved (by the startup check).
    /// `history`: most broadcasts a joiner is sent, and most bytes of them.
    pub fn new(
        config: &config::Cluster,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        history: (usize, usize),
        now: Instant,
    ) -> Cluster {
        Cluster {
            link: Link::new(&config.redis, &config.name, history, now),
            url: config.redis.clone(),
            addr,
            tls,
            conns: None,
            stats: ClusterStats::default(),
        }
    }

    pub fn node(&self) -> &Rc<str> {
        self.link.node()
    }

    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// A reload changed the history's bounds: see `Link::set_history`.
    pub fn set_history(&mut self, history: (usize, usize)) {
        self.link.set_history(history);
    }

    /// What happened since the last call, in order.
    pub fn take_notes(&mut self) -> VecDeque<Note> {
        self.link.take_notes()
    }

    /// Readiness of one of the link's sockets.
    pub fn on_ready(&mut self, registry: &Registry, now: Instant) {
        self.pump(registry, now);
    }

    /// Timers: reconnecting, the lease, retried claims, and Redis not
    /// answering.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        if self.link.is_up() {
            // Replies already here count: read them before judging.
            self.pump(registry, now);
        }
        self.count_backlog();
        self.link.tick(now);
        self.apply(registry, now);
        self.pump(registry, now);
    }

    /// After a round: writes what was queued.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        if let Some(c) = &self.conns
            && (c.cmd.queued() > 0 || c.sub.queued() > 0)
        {
            self.pump(registry, now);
        }
    }

    /// Waiting to send the node's users: the server answers with `sync`.
    pub fn wants_sync(&self) -> bool {
        self.link.wants_sync()
    }

    /// Registers this node's users and asks for the room as it is.
    pub fn sync(&mut self, users: &[LocalUser], now: Instant) {
        self.link.sync(users, now);
        self.queue();
    }

    /// Asks for `name` for `origin`: `Event::Join` when it is ours,
    /// `Note::Refused` when not.
    pub fn claim(
        &mut self,
        origin: Origin,
        key: &str,
        name: &str,
        token: Option<String>,
        now: Instant,
    ) {
        self.count_backlog();
        self.link.claim(origin, key, name, token, now);
        self.queue();
    }

    /// Asks for the session under a name (see `Link::resume`).
    pub fn resume(
        &mut self,
        origin: Origin,
        key_and_name: (&str, &str),
        token_hash: &str,
        new_token: (Option<&str>, bool),
        now: Instant,
    ) {
        self.count_backlog();
        self.link.resume(origin, key_and_name, token_hash, new_token, now);
        self.queue();
    }

    /// A local user left: the name is free (see `Link::leave`).
    pub fn leave(&mut self, key: &str, now: Instant) {
        self.link.leave(key, now);
        self.queue();
    }

    /// Publishes what a local user asked (see `Link::propose`).
    pub fn propose(&mut self, origin: Origin, what: Proposed, now: Instant) {
        self.count_backlog();
        self.link.propose(origin, what, now);
        self.queue();
    }

    /// Tells the link what waits on the command connection.
    fn count_backlog(&mut self) {
        let queued = self.conns.as_ref().map_or(0, |c| c.cmd.queued());
        self.link.set_backlog(queued);
    }

    /// Writes, reads, and feeds the link every reply and message that came.
    fn pump(&mut self, registry: &Registry, now: Instant) {
        let Some(c) = &mut self.conns else { return };
        let pumped = c.cmd.pump().map_err(LinkError::Commands);
        if let Err(why) = pumped.and_then(|()| c.sub.pump().map_err(LinkError::Subscription)) {
            self.link.broken(why, now);
            return self.apply(registry, now);
        }
        // Replies first: a resync's reply and the events after it may
        // arrive together.
        while let Some(c) = &mut self.conns {
            if let Some(reply) = c.cmd.next() {
                self.link.on_reply(reply, now);
            } else if let Some(message) = c.sub.next() {
                self.link.on_message(message, now);
            } else {
                break;
            }
            self.apply(registry, now);
        }
        // What the replies queued (a resync's commands) goes out now.
        if let Some(c) = &mut self.conns
            && let Err(e) = c.cmd.pump()
        {
            self.link.broken(LinkError::Commands(e), now);
            self.apply(registry, now);
        }
    }

    /// Does what the link asked, in order.
    fn apply(&mut self, registry: &Registry, now: Instant) {
        while let Some(out) = self.link.output().pop_front() {
            match out {
                Out::Connect => self.connect(registry, now),
                Out::Disconnect => {
                    if let Some(mut c) = self.conns.take() {
                        c.cmd.deregister(registry);
                        c.sub.deregister(registry);
                    }
                }
                Out::Command(command) => self.send(&command, false),
                Out::Subscription(command) => self.send(&command, true),
            }
        }
        self.stats.clone_from(self.link.stats());
    }

    /// Queues the commands the link asked for (the server's calls ask for
    /// nothing else; anything else waits for `apply`).
    fn queue(&mut self) {
        while let Some(Out::Command(_) | Out::Subscription(_)) = self.link.output().front() {
            match self.link.output().pop_front() {
                Some(Out::Command(command)) => self.send(&command, false),
                Some(Out::Subscription(command)) => self.send(&command, true),
                _ => {}
            }
        }
        self.stats.clone_from(self.link.stats());
    }

    fn send(&mut self, command: &Command, subscription: bool) {
        if let Some(c) = &mut self.conns {
            if subscription { c.sub.send(command) } else { c.cmd.send(command) }
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        let open = |token| Conn::connect(self.addr, &self.url, self.tls.clone(), registry, token);
        match (open(REDIS_COMMANDS), open(REDIS_SUBSCRIPTION)) {
            (Ok(cmd), Ok(sub)) => {
                self.conns = Some(Conns { cmd, sub });
                self.link.connected(now);
            }
            (cmd, sub) => {
                for mut conn in [cmd, sub].into_iter().flatten() {
                    conn.deregister(registry);
                }
                self.link.broken(LinkError::NoSocket, now);
            }
        }
    }
}
