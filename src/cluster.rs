//! One room across processes: this node's link to the others through Redis.
//! It publishes what local users propose, turns the subscription back into
//! events in the room's one order, keeps this node's users registered, and
//! reconnects and resyncs after a break. The server applies the events.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use mio::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::config;
use crate::protocol::{ErrorCode, Rejection};
use crate::ratelimit::LogBudget;
use crate::redis::{Conn, RedisUrl, Value};
use crate::tokens::{REDIS_COMMANDS, REDIS_SUBSCRIPTION};

/// A node refreshes its lease this often...
const LEASE_EVERY: Duration = Duration::from_secs(2);
/// ...and is dead to the others once it has not for this long: its users
/// are announced as left within `LEASE_TTL + LEASE_EVERY` (12 s).
const LEASE_TTL: Duration = Duration::from_secs(10);
/// Redis not answering a command for this long means the link is down.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Connecting, subscribing and syncing must be done in this time.
const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// A proposal Redis runs later than this after it was sent is dropped by
/// the script: by then the node may have given up on the link (after
/// `REPLY_TIMEOUT`) and told the sender `cluster_unavailable`.
const PROPOSAL_DEADLINE: Duration = Duration::from_millis(2500);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most bytes queued to Redis before proposals are refused.
const MAX_QUEUED: usize = 16 << 20;
/// Largest event a user may publish: far below what Redis lets a
/// subscriber fall behind by (`client-output-buffer-limit pubsub`, 8 MB
/// for 60 s by default), so that one message cannot get every node cut off.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// A claim of a name this node holds for a connection that has gone is
/// asked again (once a second) this many times.
const CLAIM_RETRIES: u8 = 3;

/// The Lua scripts. Each changes the room's state on Redis, numbers the
/// change (`seq`) and publishes it in one atomic step, so that every node
/// sees every change once and in one order, and notices a gap.
mod scripts {
    /// A proposal's script (what a user asked: SAY, PUBLIC_KEY, PRIVATE)
    /// first checks its deadline, ARGV[2] in ms of Redis's clock: past it,
    /// it does nothing and answers -1.
    macro_rules! proposal {
        ($body:literal) => {
            concat!(
                r#"
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[2]) then
  return -1
end"#,
                $body
            )
        };
    }

    pub const CLAIM: &str = r#"
local p, node, key = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', p .. 'users', key)
if cur then
  local owner, name = string.match(cur, '^([^\n]*)\n(.*)$')
  if owner == node then
    return {name, 1}
  end
  if redis.call('EXISTS', p .. 'node:' .. owner) == 1 then
    return {name, 0}
  end
end
redis.call('HSET', p .. 'users', key, node .. '\n' .. ARGV[4])
redis.call('HDEL', p .. 'pubkeys', key)
local seq = redis.call('INCR', p .. 'seq')
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[5])
return 1
"#;
    pub const LEAVE: &str = r#"
local p, node, key = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', p .. 'users', key)
if cur and string.sub(cur, 1, #node + 1) == node .. '\n' then
  redis.call('HDEL', p .. 'users', key)
  redis.call('HDEL', p .. 'pubkeys', key)
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[4])
  return 1
end
return 0
"#;
    /// ARGV: prefix, deadline (ms, Redis's clock), history count, event.
    pub const SAY: &str = proposal!(
        r#"
local p = ARGV[1]
local n = tonumber(ARGV[3])
if n > 0 then
  redis.call('RPUSH', p .. 'history', ARGV[4])
  redis.call('LTRIM', p .. 'history', -n, -1)
else
  redis.call('DEL', p .. 'history')
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[4])
return 1
"#
    );
    /// ARGV: prefix, deadline, node, name key, public key, event.
    pub const PUBLIC_KEY: &str = proposal!(
        r#"
local p, node, key = ARGV[1], ARGV[3], ARGV[4]
local cur = redis.call('HGET', p .. 'users', key)
if cur and string.sub(cur, 1, #node + 1) == node .. '\n' then
  redis.call('HSET', p .. 'pubkeys', key, ARGV[5])
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[6])
  return 1
end
return 0
"#
    );
    /// ARGV: prefix, deadline, the target's name key, event.
    pub const PRIVATE: &str = proposal!(
        r#"
local p = ARGV[1]
if redis.call('HEXISTS', p .. 'users', ARGV[3]) == 0 then
  return 0
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[4])
return 1
"#
    );
    pub const LEASE: &str = r#"
local p, node = ARGV[1], ARGV[2]
redis.call('SET', p .. 'node:' .. node, '1', 'PX', ARGV[3])
local forgotten = redis.call('SADD', p .. 'nodes', node)
for _, other in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if other ~= node and redis.call('EXISTS', p .. 'node:' .. other) == 0 then
    local users = redis.call('HGETALL', p .. 'users')
    for i = 1, #users, 2 do
      if string.sub(users[i + 1], 1, #other + 1) == other .. '\n' then
        redis.call('HDEL', p .. 'users', users[i])
        redis.call('HDEL', p .. 'pubkeys', users[i])
      end
    end
    redis.call('SREM', p .. 'nodes', other)
    local seq = redis.call('INCR', p .. 'seq')
    redis.call('PUBLISH', p .. 'events', seq .. ' {"e":"dead","node":"' .. other .. '"}')
  end
end
return forgotten
"#;
    /// ARGV: prefix, node, lease ms, history count, history bytes, then
    /// (key, name, public key or '') for each user of the node.
    pub const SYNC: &str = r#"
local p, node = ARGV[1], ARGV[2]
redis.call('SET', p .. 'node:' .. node, '1', 'PX', ARGV[3])
redis.call('SADD', p .. 'nodes', node)
local mine = {}
for i = 6, #ARGV, 3 do mine[ARGV[i]] = true end
local all = redis.call('HGETALL', p .. 'users')
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #node + 1) == node .. '\n' and not mine[all[i]] then
    redis.call('HDEL', p .. 'users', all[i])
    redis.call('HDEL', p .. 'pubkeys', all[i])
  end
end
local conflicts, accepted = {}, {}
for i = 6, #ARGV, 3 do
  local key, name, pk = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('HGET', p .. 'users', key)
  local owner = cur and string.match(cur, '^([^\n]*)\n')
  if owner and owner ~= node and redis.call('EXISTS', p .. 'node:' .. owner) == 1 then
    table.insert(conflicts, key)
  else
    redis.call('HSET', p .. 'users', key, node .. '\n' .. name)
    if pk ~= '' then
      redis.call('HSET', p .. 'pubkeys', key, pk)
    else
      redis.call('HDEL', p .. 'pubkeys', key)
    end
    table.insert(accepted, {key, name, pk})
  end
end
local seq = redis.call('INCR', p .. 'seq')
local event = cjson.encode({e = 'node', node = node, users = accepted})
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. event)
-- The newest history entries that fit both the count and the byte budget.
local history, bytes = {}, 0
local count = tonumber(ARGV[4])
if count > 0 then
  local newest = redis.call('LRANGE', p .. 'history', -count, -1)
  for i = #newest, 1, -1 do
    bytes = bytes + #newest[i]
    if bytes > tonumber(ARGV[5]) then break end
    table.insert(history, 1, newest[i])
  end
end
local t = redis.call('TIME')
return {seq, conflicts, redis.call('HGETALL', p .. 'users'),
        redis.call('HGETALL', p .. 'pubkeys'), history,
        tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
"#;
}

#[derive(Debug, Clone, Copy)]
enum Script {
    Claim,
    Leave,
    Say,
    PublicKey,
    Private,
    Lease,
    Sync,
}

const SCRIPTS: [(Script, &str); 7] = [
    (Script::Claim, scripts::CLAIM),
    (Script::Leave, scripts::LEAVE),
    (Script::Say, scripts::SAY),
    (Script::PublicKey, scripts::PUBLIC_KEY),
    (Script::Private, scripts::PRIVATE),
    (Script::Lease, scripts::LEASE),
    (Script::Sync, scripts::SYNC),
];

/// What a local user asked that the whole room must see in one order: the
/// server publishes it, and it takes effect (`say`, `set_public_key`,
/// `deliver_private`) when it comes back from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposed {
    Say { name: Rc<str>, text: String },
    PublicKey { name_key: Rc<str>, key: String },
    Private { to_key: Rc<str>, to_name: Rc<str>, from: Rc<str>, text: String },
}

/// A user online on another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUser {
    pub node: Rc<str>,
    pub name: String,
    pub key: Option<String>,
}

/// A user of this node, as the cluster registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name_key: Rc<str>,
    pub name: Rc<str>,
    /// The public key, if published.
    pub key: Option<Box<str>>,
}

/// A local connection that asked something, by slab key and the serial
/// that tells it from a later connection under the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub id: usize,
    pub serial: u64,
}

/// An event of the room, as every node sees it, in one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "lowercase")]
pub enum Event {
    /// `node` gave `name` (comparison key `key`) to one of its connections
    /// (`conn`: "id.serial", meaningful to `node` only).
    Join {
        node: String,
        conn: String,
        key: String,
        name: String,
    },
    Leave {
        node: String,
        key: String,
    },
    Say {
        name: String,
        text: String,
    },
    #[serde(rename = "pubkey")]
    PublicKey {
        node: String,
        key: String,
        pk: String,
    },
    #[serde(rename = "pm")]
    Private {
        to: String,
        from: String,
        text: String,
    },
    /// `node` (re)registered: these are all its users now.
    Node {
        node: String,
        users: Json,
    },
    /// `node` stopped renewing its lease: its users are gone.
    Dead {
        node: String,
    },
}

impl Event {
    /// The users of a `Node` event: (key, name, public key).
    pub fn node_users(users: &Json) -> Vec<(String, String, Option<String>)> {
        let Some(list) = users.as_array() else { return Vec::new() }; // cjson: {} = []
        list.iter()
            .filter_map(|u| {
                let u = u.as_array()?;
                let s = |i: usize| u.get(i).and_then(Json::as_str).map(str::to_owned);
                Some((s(0)?, s(1)?, s(2).filter(|k| !k.is_empty())))
            })
            .collect()
    }
}

/// What the server must act on.
#[derive(Debug)]
pub enum Note {
    Event(Event),
    /// What `origin` asked was not done, and why (`name_taken` for a
    /// claim, `cluster_unavailable`, `user_offline`, `message_too_big`).
    Refused {
        origin: Origin,
        why: Rejection,
    },
    /// The link is up (again): the room as the cluster has it now.
    /// `conflicts`: comparison keys of local users whose names are
    /// another node's.
    Synced {
        users: Vec<RemoteUser>,
        history: Vec<(String, String)>,
        conflicts: Vec<String>,
    },
    /// The link broke; it is being mended. Events may have been missed.
    Down {
        why: String,
    },
}

/// What a command's reply answers.
#[derive(Debug)]
enum Pending {
    Load,
    Claim { origin: Origin, key: String, name: String, retries: u8 },
    Say(Origin),
    PublicKey(Origin),
    Private { origin: Origin, target: String },
    Leave,
    Lease,
    Sync,
}

impl Pending {
    /// The connection waiting for this reply, if any.
    fn origin(&self) -> Option<Origin> {
        match self {
            Pending::Claim { origin, .. }
            | Pending::Say(origin)
            | Pending::PublicKey(origin)
            | Pending::Private { origin, .. } => Some(*origin),
            _ => None,
        }
    }
}

/// The two connections of a link: commands, and the subscription.
struct Links {
    cmd: Conn,
    sub: Conn,
    /// One entry per command sent, in order, with when it was sent.
    pending: VecDeque<(Pending, Instant)>,
}

/// Where mending a link stands, after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joining {
    /// SUBSCRIBE sent, not confirmed yet.
    Subscribing,
    /// Subscribed: the server is to hand over its users (`sync`).
    Subscribed,
    /// SYNC sent; its reply makes the link `Up`.
    Syncing,
}

enum Link {
    Down {
        retry_at: Instant,
    },
    /// Connected or connecting: subscribing, then registering and reading
    /// the room (`sync`); events that arrive meanwhile wait in `early`,
    /// users who leave meanwhile in `left`.
    Joining {
        links: Links,
        since: Instant,
        step: Joining,
        early: Vec<(u64, Event)>,
        left: Vec<String>,
    },
    Up {
        links: Links,
        lease_due: Instant,
        /// The sequence number of this node's own sync, until it comes
        /// back on the subscription: the events before it are in the
        /// snapshot already (commands and subscription are two connections,
        /// so they may still arrive after the sync's reply).
        marker: Option<(u64, Instant)>,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct ClusterStats {
    pub events: u64,
    pub published: u64,
    pub unavailable: u64,
    pub link_downs: u64,
    pub syncs: u64,
    pub connect_attempts: u64,
    pub dead_nodes: u64,
}

pub struct Cluster {
    url: RedisUrl,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// This node's id: random, new at every start.
    node: Rc<str>,
    /// Key prefix on Redis: `ragnarok:<cluster_name>:`.
    prefix: String,
    history_size: usize,
    history_bytes: usize,
    link: Link,
    backoff: Duration,
    /// The last event applied.
    seq: u64,
    shas: Vec<String>,
    notes: VecDeque<Note>,
    failures: u32,
    /// Claims Redis granted whose `Join` has not come back yet: refused if
    /// the link breaks first.
    granted: Vec<Origin>,
    /// Claims to send again: the name was this node's, held for a
    /// connection that has gone (its release is on its way).
    retry: Vec<Pending>,
    /// Redis's clock minus ours, in ms (from the last sync).
    clock_offset: i64,
    /// Commands Redis refused, logged within a budget.
    refused_log: LogBudget,
    pub stats: ClusterStats,
}

impl Cluster {
    /// `addr`: `config.redis` resolved (by the startup check).
    /// `history_bytes`: most bytes of history a joiner may be sent.
    pub fn new(
        config: &config::Cluster,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        history: (usize, usize),
        now: Instant,
    ) -> Cluster {
        let shas = SCRIPTS.iter().map(|(_, text)| sha1_hex(text)).collect();
        Cluster {
            url: config.redis.clone(),
            addr,
            tls,
            node: Rc::from(node_id()),
            prefix: format!("ragnarok:{}:", config.name),
            history_size: history.0,
            history_bytes: history.1,
            link: Link::Down { retry_at: now },
            backoff: BACKOFF_MIN,
            seq: 0,
            shas,
            notes: VecDeque::new(),
            failures: 0,
            granted: Vec::new(),
            retry: Vec::new(),
            clock_offset: 0,
            refused_log: LogBudget::default(),
            stats: ClusterStats::default(),
        }
    }

    pub fn node(&self) -> &Rc<str> {
        &self.node
    }

    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// What happened since the last call, in order.
    pub fn take_notes(&mut self) -> VecDeque<Note> {
        std::mem::take(&mut self.notes)
    }

    /// Readiness of one of the link's sockets.
    pub fn on_ready(&mut self, registry: &Registry, now: Instant) {
        if let Err(why) = self.pump(now) {
            self.down(registry, why, now);
        }
    }

    /// Timers: reconnecting, the lease, retried claims, and Redis not
    /// answering.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        if let Some(n) = self.refused_log.unlogged(now) {
            warn!("cluster: Redis refused {n} more commands in the last minute");
        }
        match &mut self.link {
            Link::Down { retry_at } if now >= *retry_at => self.connect(registry, now),
            Link::Down { .. } => {}
            Link::Joining { since, .. }
                if now.saturating_duration_since(*since) >= LINK_TIMEOUT =>
            {
                let why = format!("Redis did not answer within {} s", LINK_TIMEOUT.as_secs());
                self.down(registry, why, now);
            }
            Link::Joining { .. } => {}
            Link::Up { .. } => {
                // Replies already here count: read them before judging.
                if let Err(why) = self.pump(now) {
                    return self.down(registry, why, now);
                }
                let Link::Up { links, lease_due, marker } = &mut self.link else { return };
                if let Some((_, since)) = marker
                    && now.saturating_duration_since(*since) >= LINK_TIMEOUT
                {
                    let why = "this node's registration did not come back on the subscription";
                    return self.down(registry, why.into(), now);
                }
                if let Some((_, sent)) = links.pending.front()
                    && now.saturating_duration_since(*sent) >= REPLY_TIMEOUT
                {
                    let why = format!("Redis did not answer for {} s", REPLY_TIMEOUT.as_secs());
                    return self.down(registry, why, now);
                }
                if now >= *lease_due {
                    *lease_due = now + LEASE_EVERY;
                    let (node, ttl) = (self.node.clone(), LEASE_TTL.as_millis().to_string());
                    let args = [node.as_bytes(), ttl.as_bytes()];
                    self.eval(Script::Lease, &args, Pending::Lease, now);
                }
                for claim in std::mem::take(&mut self.retry) {
                    if let Pending::Claim { origin, key, name, retries } = claim {
                        self.send_claim(origin, &key, &name, retries, now);
                    }
                }
            }
        }
        if let Err(why) = self.pump(now) {
            self.down(registry, why, now);
        }
    }

    /// After a round: writes what was queued.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        if let Link::Joining { links, .. } | Link::Up { links, .. } = &mut self.link
            && (links.cmd.queued() > 0 || links.sub.queued() > 0)
            && let Err(why) = self.pump(now)
        {
            self.down(registry, why, now);
        }
    }

    /// Waiting to send the node's users: the server answers with `sync`.
    pub fn wants_sync(&self) -> bool {
        matches!(&self.link, Link::Joining { step: Joining::Subscribed, .. })
    }

    /// Registers this node's users and asks for the room as it is.
    pub fn sync(&mut self, users: &[LocalUser], now: Instant) {
        let Link::Joining { step: step @ Joining::Subscribed, .. } = &mut self.link else {
            return;
        };
        *step = Joining::Syncing;
        let (node, ttl) = (self.node.clone(), LEASE_TTL.as_millis().to_string());
        let (count, bytes) = (self.history_size.to_string(), self.history_bytes.to_string());
        let mut args: Vec<&[u8]> =
            vec![node.as_bytes(), ttl.as_bytes(), count.as_bytes(), bytes.as_bytes()];
        for u in users {
            let key = u.key.as_deref().unwrap_or("");
            args.extend([u.name_key.as_bytes(), u.name.as_bytes(), key.as_bytes()]);
        }
        self.eval(Script::Sync, &args, Pending::Sync, now);
    }

    /// Asks for `name` for `origin`: `Event::Join` when it is ours,
    /// `Note::Refused` when not.
    pub fn claim(&mut self, origin: Origin, key: &str, name: &str, now: Instant) {
        self.send_claim(origin, key, name, 0, now);
    }

    fn send_claim(&mut self, origin: Origin, key: &str, name: &str, retries: u8, now: Instant) {
        if !self.can_send() {
            return self.refuse(origin, Rejection::cluster_unavailable());
        }
        let conn = format!("{}.{}", origin.id, origin.serial);
        let event =
            Event::Join { node: self.node.to_string(), conn, key: key.into(), name: name.into() };
        let json = to_json(&event);
        let node = self.node.clone();
        let args = [node.as_bytes(), key.as_bytes(), name.as_bytes(), json.as_bytes()];
        let pending = Pending::Claim { origin, key: key.into(), name: name.into(), retries };
        self.eval(Script::Claim, &args, pending, now);
    }

    /// A local user left (or a claim came back for a connection that is
    /// gone): the name is free. While the link is down there is nothing to
    /// do (the next `sync` leaves the user out); while it is being mended,
    /// the user is released once it is.
    pub fn leave(&mut self, key: &str, now: Instant) {
        match &mut self.link {
            Link::Up { .. } => {}
            Link::Joining { left, .. } => return left.push(key.into()),
            Link::Down { .. } => return,
        }
        let json = to_json(&Event::Leave { node: self.node.to_string(), key: key.into() });
        let node = self.node.clone();
        let args = [node.as_bytes(), key.as_bytes(), json.as_bytes()];
        self.eval(Script::Leave, &args, Pending::Leave, now);
    }

    /// Publishes what a local user asked; it takes effect on every node
    /// (this one too) when it comes back as an event. Redis drops it if it
    /// arrives after the moment this node would have given up on it (so a
    /// message refused with `cluster_unavailable` is never sent later).
    pub fn propose(&mut self, origin: Origin, what: Proposed, now: Instant) {
        if !self.can_send() {
            return self.refuse(origin, Rejection::cluster_unavailable());
        }
        let deadline =
            unix_millis() as i64 + self.clock_offset + PROPOSAL_DEADLINE.as_millis() as i64;
        let deadline = deadline.to_string();
        let node = self.node.clone();
        let (script, args, pending): (Script, Vec<Vec<u8>>, Pending) = match what {
            Proposed::Say { name, text } => {
                let json = to_json(&Event::Say { name: name.to_string(), text });
                let count = self.history_size.to_string();
                (Script::Say, vec![count.into(), json.into()], Pending::Say(origin))
            }
            Proposed::PublicKey { name_key, key } => {
                let event = Event::PublicKey {
                    node: node.to_string(),
                    key: name_key.to_string(),
                    pk: key.clone(),
                };
                let args = vec![
                    node.as_bytes().into(),
                    name_key.as_bytes().into(),
                    key.into(),
                    to_json(&event).into(),
                ];
                (Script::PublicKey, args, Pending::PublicKey(origin))
            }
            Proposed::Private { to_key, to_name, from, text } => {
                let event = Event::Private { to: to_key.to_string(), from: from.to_string(), text };
                let args = vec![to_key.as_bytes().into(), to_json(&event).into()];
                (Script::Private, args, Pending::Private { origin, target: to_name.to_string() })
            }
        };
        if args.last().map_or(0, Vec::len) > MAX_EVENT_BYTES {
            let text = format!(
                "in this room (several servers) a message may have at most {} KiB",
                MAX_EVENT_BYTES / 1024
            );
            return self.refuse(origin, Rejection::new(ErrorCode::MessageTooBig, text));
        }
        let mut all: Vec<&[u8]> = vec![deadline.as_bytes()];
        all.extend(args.iter().map(Vec::as_slice));
        self.eval(script, &all, pending, now);
        self.stats.published += 1;
    }

    fn can_send(&self) -> bool {
        match &self.link {
            Link::Up { links, .. } => links.cmd.queued() < MAX_QUEUED,
            _ => false,
        }
    }

    fn refuse(&mut self, origin: Origin, why: Rejection) {
        if why.code == ErrorCode::ClusterUnavailable {
            self.stats.unavailable += 1;
        }
        self.notes.push_back(Note::Refused { origin, why });
    }

    /// EVALSHA of `script` with the key prefix as the first argument.
    fn eval(&mut self, script: Script, args: &[&[u8]], pending: Pending, now: Instant) {
        let (Link::Joining { links, .. } | Link::Up { links, .. }) = &mut self.link else {
            return;
        };
        let sha = self.shas[script as usize].as_bytes();
        let mut command: Vec<&[u8]> = vec![b"EVALSHA", sha, b"0", self.prefix.as_bytes()];
        command.extend_from_slice(args);
        links.cmd.command(&command);
        links.pending.push_back((pending, now));
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        self.stats.connect_attempts += 1;
        let open = |token| Conn::connect(self.addr, &self.url, self.tls.clone(), registry, token);
        let (mut cmd, mut sub) = match (open(REDIS_COMMANDS), open(REDIS_SUBSCRIPTION)) {
            (Ok(cmd), Ok(sub)) => (cmd, sub),
            (cmd, sub) => {
                for mut conn in [cmd, sub].into_iter().flatten() {
                    conn.deregister(registry);
                }
                let why = "cannot open a socket to Redis".to_owned();
                return self.down(registry, why, now);
            }
        };
        let mut pending = VecDeque::new();
        for (_, text) in SCRIPTS {
            cmd.command(&[b"SCRIPT", b"LOAD", text.as_bytes()]);
            pending.push_back((Pending::Load, now));
        }
        let channel = format!("{}events", self.prefix);
        sub.command(&[b"SUBSCRIBE", channel.as_bytes()]);
        self.link = Link::Joining {
            links: Links { cmd, sub, pending },
            since: now,
            step: Joining::Subscribing,
            early: Vec::new(),
            left: Vec::new(),
        };
    }

    /// Breaks the link: what was asked and not done is refused, the server
    /// is told, and a reconnect is scheduled.
    fn down(&mut self, registry: &Registry, why: String, now: Instant) {
        let was = std::mem::replace(&mut self.link, Link::Down { retry_at: now + self.backoff });
        let was_up = matches!(was, Link::Up { .. });
        let mut waiting: Vec<Origin> = std::mem::take(&mut self.granted);
        waiting.extend(std::mem::take(&mut self.retry).iter().filter_map(Pending::origin));
        if let Link::Joining { links, .. } | Link::Up { links, .. } = was {
            let Links { mut cmd, mut sub, pending } = links;
            cmd.deregister(registry);
            sub.deregister(registry);
            waiting.extend(pending.iter().filter_map(|(p, _)| p.origin()));
        }
        for origin in waiting {
            self.refuse(origin, Rejection::cluster_unavailable());
        }
        if was_up {
            self.stats.link_downs += 1;
            self.failures = 0;
            warn!("cluster: lost the link to {} ({why}); reconnecting", self.url);
            self.notes.push_back(Note::Down { why });
        } else {
            self.failures += 1;
            // Every failure until the backoff is at its longest, then one a minute.
            let per_minute = (60 / BACKOFF_MAX.as_secs().max(1)) as u32;
            if self.backoff < BACKOFF_MAX || self.failures % per_minute == 1 {
                warn!(
                    "cluster: cannot reach {} ({why}); retrying in {} ms ({} attempts)",
                    self.url,
                    self.backoff.as_millis(),
                    self.failures
                );
            }
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Writes, reads, and handles every reply and message that came.
    fn pump(&mut self, now: Instant) -> Result<(), String> {
        let (Link::Joining { links, .. } | Link::Up { links, .. }) = &mut self.link else {
            return Ok(());
        };
        links.cmd.pump().map_err(|e| format!("commands: {e}"))?;
        links.sub.pump().map_err(|e| format!("subscription: {e}"))?;
        loop {
            let (Link::Joining { links, .. } | Link::Up { links, .. }) = &mut self.link else {
                return Ok(());
            };
            if let Some(reply) = links.cmd.next() {
                let Some((pending, _)) = links.pending.pop_front() else {
                    return Err("Redis sent a reply to nothing".into());
                };
                self.on_reply(pending, reply, now)?;
            } else if let Some(message) = links.sub.next() {
                self.on_message(message)?;
            } else {
                break;
            }
        }
        // What the replies queued (a resync's commands) goes out now.
        if let Link::Joining { links, .. } | Link::Up { links, .. } = &mut self.link {
            links.cmd.pump().map_err(|e| format!("commands: {e}"))?;
        }
        Ok(())
    }

    fn on_reply(&mut self, pending: Pending, reply: Value, now: Instant) -> Result<(), String> {
        if let Value::Error(e) = &reply {
            // Out of memory, say: that one command is refused. Anything
            // else (scripts flushed, a Redis that cannot run them) is mended
            // by reconnecting, which loads the scripts again.
            if self.refused_log.allow(now) {
                warn!("cluster: Redis refused a command: {e}");
            }
            if let Some(origin) = pending.origin() {
                self.refuse(origin, Rejection::cluster_unavailable());
            }
            let one_off = e.starts_with("OOM") || e.contains("maxmemory");
            return match pending {
                Pending::Sync | Pending::Lease | Pending::Load => {
                    Err(format!("Redis refused: {e}"))
                }
                _ if one_off => Ok(()),
                _ => Err(format!("Redis refused: {e}")),
            };
        }
        match pending {
            Pending::Load | Pending::Leave => {}
            Pending::Claim { origin, key, name, retries } => match reply {
                Value::Array(parts) => {
                    let holder = match parts.first() {
                        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                        _ => name.clone(),
                    };
                    let mine = parts.get(1) == Some(&Value::Int(1));
                    if mine && retries < CLAIM_RETRIES {
                        // Held here for a connection that has gone: its
                        // release is queued; ask again after it.
                        let retries = retries + 1;
                        self.retry.push(Pending::Claim { origin, key, name, retries });
                    } else {
                        let text = format!(
                            "the name {name:?} is taken: {holder:?} is online in this room"
                        );
                        self.refuse(origin, Rejection::new(ErrorCode::NameTaken, text));
                    }
                }
                _ => self.granted.push(origin),
            },
            Pending::Say(origin) | Pending::PublicKey(origin) | Pending::Private { origin, .. }
                if reply == Value::Int(-1) =>
            {
                if self.refused_log.allow(now) {
                    warn!(
                        "cluster: a message reached Redis after its deadline: dropped, its sender told"
                    );
                }
                self.refuse(origin, Rejection::cluster_unavailable());
            }
            Pending::Say(_) | Pending::PublicKey(_) => {}
            Pending::Private { origin, target } => {
                if reply == Value::Int(0) {
                    self.refuse(origin, Rejection::user_offline(&target));
                }
            }
            Pending::Lease => {
                if reply == Value::Int(1) {
                    return Err("the other nodes declared this one dead".into());
                }
            }
            Pending::Sync => self.on_synced(reply, now)?,
        }
        Ok(())
    }

    fn on_synced(&mut self, reply: Value, now: Instant) -> Result<(), String> {
        let bad = || "Redis answered the sync with something else".to_owned();
        let Value::Array(parts) = reply else { return Err(bad()) };
        let [
            Value::Int(seq),
            Value::Array(conflicts),
            Value::Array(users),
            Value::Array(keys),
            Value::Array(history),
            Value::Int(redis_ms),
        ] = &parts[..]
        else {
            return Err(bad());
        };
        self.clock_offset = redis_ms - unix_millis() as i64;
        let text = |v: &Value| match v {
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        let keys: HashMap<String, String> =
            keys.chunks(2).filter_map(|kv| Some((text(kv.first()?), text(kv.get(1)?)))).collect();
        let mut remote = Vec::new();
        for kv in users.chunks(2) {
            let (Some(key), Some(value)) = (kv.first(), kv.get(1)) else { continue };
            let (key, value) = (text(key), text(value));
            let Some((node, name)) = value.split_once('\n') else { continue };
            if node != &*self.node {
                let key = keys.get(&key).cloned();
                remote.push(RemoteUser { node: Rc::from(node), name: name.to_owned(), key });
            }
        }
        let history = history
            .iter()
            .filter_map(|h| match serde_json::from_str(&text(h)) {
                Ok(Event::Say { name, text }) => Some((name, text)),
                _ => None,
            })
            .collect();
        let conflicts = conflicts.iter().map(text).collect();
        let Link::Joining { links, early, left, .. } =
            std::mem::replace(&mut self.link, Link::Down { retry_at: now })
        else {
            return Err(bad());
        };
        self.seq = *seq as u64;
        self.link = Link::Up { links, lease_due: now + LEASE_EVERY, marker: Some((self.seq, now)) };
        self.stats.syncs += 1;
        self.backoff = BACKOFF_MIN;
        self.failures = 0;
        info!(
            "cluster: joined {} as node {} ({} users on other nodes)",
            self.url,
            self.node,
            remote.len()
        );
        self.notes.push_back(Note::Synced { users: remote, history, conflicts });
        for key in left {
            self.leave(&key, now);
        }
        for (seq, event) in early {
            self.on_event(seq, event)?;
        }
        Ok(())
    }

    fn on_message(&mut self, message: Value) -> Result<(), String> {
        let Value::Array(parts) = message else {
            return Err("the subscription sent something else than a message".into());
        };
        match parts.first() {
            Some(Value::Bytes(kind)) if kind == b"message" => {}
            Some(Value::Bytes(kind)) if kind == b"subscribe" => {
                if let Link::Joining { step: step @ Joining::Subscribing, .. } = &mut self.link {
                    *step = Joining::Subscribed;
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        let Some(Value::Bytes(payload)) = parts.get(2) else { return Ok(()) };
        let payload = String::from_utf8_lossy(payload);
        let parsed = payload.split_once(' ').and_then(|(seq, json)| {
            Some((seq.parse::<u64>().ok()?, serde_json::from_str::<Event>(json).ok()?))
        });
        let Some((seq, event)) = parsed else {
            // From a newer version, or not ours: the order is still whole.
            warn!("cluster: ignored an event this node does not understand");
            return Ok(());
        };
        match &mut self.link {
            Link::Joining { early, .. } => {
                early.push((seq, event));
                Ok(())
            }
            _ => self.on_event(seq, event),
        }
    }

    /// The next event of the room's order; a gap, or the order starting
    /// over (Redis flushed), breaks the link so that the room is read again.
    fn on_event(&mut self, seq: u64, event: Event) -> Result<(), String> {
        if let Link::Up { marker, .. } = &mut self.link
            && let Some((at, _)) = *marker
        {
            return match seq.cmp(&at) {
                std::cmp::Ordering::Less => Ok(()), // in the snapshot
                std::cmp::Ordering::Equal => {
                    *marker = None;
                    Ok(())
                }
                std::cmp::Ordering::Greater => Err(format!("events after {at} came before it")),
            };
        }
        if seq != self.seq + 1 {
            return Err(if seq > self.seq {
                format!("missed events {} to {}", self.seq + 1, seq - 1)
            } else {
                format!(
                    "the room's event count went back from {} to {seq} (Redis was emptied?)",
                    self.seq
                )
            });
        }
        self.seq = seq;
        self.stats.events += 1;
        match &event {
            Event::Dead { node } if *node == *self.node => {
                return Err("the other nodes declared this one dead".into());
            }
            Event::Dead { .. } => self.stats.dead_nodes += 1,
            Event::Join { node, conn, .. } if *node == *self.node => {
                if let Some(origin) = Origin::parse(conn) {
                    self.granted.retain(|o| *o != origin);
                }
            }
            _ => {}
        }
        self.notes.push_back(Note::Event(event));
        Ok(())
    }
}

impl Origin {
    /// "id.serial", as a `Join` event carries it.
    pub fn parse(conn: &str) -> Option<Origin> {
        let (id, serial) = conn.split_once('.')?;
        Some(Origin { id: id.parse().ok()?, serial: serial.parse().ok()? })
    }
}

fn to_json(event: &Event) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// 16 random hex digits.
fn node_id() -> String {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let seed = unix_millis() ^ u64::from(std::process::id()).rotate_left(32);
        bytes = seed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `SCRIPT LOAD` answers for `text`, so EVALSHA can follow at once.
fn sha1_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_cjson_lists_parse() {
        let e = Event::Join {
            node: "n".into(),
            conn: "3.7".into(),
            key: "bob".into(),
            name: "Bob".into(),
        };
        let json = to_json(&e);
        assert_eq!(json, r#"{"e":"join","node":"n","conn":"3.7","key":"bob","name":"Bob"}"#);
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        let node: Event = serde_json::from_str(
            r#"{"e":"node","node":"n","users":[["bob","Bob",""],["al","Al","K"]]}"#,
        )
        .unwrap();
        let Event::Node { users, .. } = node else { panic!() };
        assert_eq!(
            Event::node_users(&users),
            [("bob".into(), "Bob".into(), None), ("al".into(), "Al".into(), Some("K".into()))]
        );
        assert!(Event::node_users(&serde_json::json!({})).is_empty(), "cjson's empty list");
        let dead: Event = serde_json::from_str(r#"{"e":"dead","node":"x"}"#).unwrap();
        assert_eq!(dead, Event::Dead { node: "x".into() });
    }

    #[test]
    fn script_digests_are_what_redis_computes() {
        // SHA-1 of "return 1", as `redis-cli SCRIPT LOAD "return 1"` prints.
        assert_eq!(sha1_hex("return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(node_id().len(), 16);
    }
}
