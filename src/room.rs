//! The chatroom: who is online, login rules, presence, history, and the
//! routing of messages. It knows nothing about sockets or Redis: every call
//! pushes what is to be sent (and, in a cluster, proposed) as `Effect`s.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::ops::Bound;
use std::rc::Rc;
use std::time::Instant;

use crate::cluster::Proposed;
pub use crate::cluster::{LocalUser, RemoteUser};
use crate::effect::{ClusterCall, Effect, Effects, Outbound, Push};
pub use crate::effect::{ConnId, To};
use crate::history::History;
use crate::names::{self, Name};
use crate::protocol::{self, ErrorCode, Kind, Rejection, Reply, Request, Role, server_name_json};
use crate::resume::{self, Ask, For, Gap, Journal};

/// Rooms with at most this many users get the full `OnlineUsers` list on
/// every change; larger rooms get `UsersJoined` / `UsersLeft` deltas.
pub const FULL_LIST_MAX: usize = 32;

/// Standalone, or one node of a cluster whose link to the others is up or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standalone,
    Node(Link),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    /// What needs the other nodes is refused (`cluster_unavailable`).
    Down,
}

/// An online user, here or on another node.
struct Member {
    /// The display name (NFC), as everyone sees it.
    name: Rc<str>,
    /// The public key the user published, relayed as an opaque string.
    key: Option<Box<str>>,
    /// A resumable session: the hash of its resume token (`resume.rs`).
    token: Option<Box<str>>,
    at: At,
}

enum At {
    Local {
        id: ConnId,
        /// Index of this member in `Room::order`.
        slot: usize,
        /// The part of the room's state this member still has to receive
        /// (boxed: most members have none, and a member is paid per user).
        snapshot: Option<Box<Snapshot>>,
    },
    Remote {
        node: Rc<str>,
    },
    /// Here, its connection dropped: kept for its resume until its
    /// deadline in `Room::away`. `from`: the address it was last at (for
    /// bans by address), if known here.
    Away {
        from: Option<IpAddr>,
    },
}

/// What a joiner's welcome says besides the room's title and the role.
#[derive(Debug, Clone)]
pub enum Welcome {
    /// The original protocol's `{"ServerName": ...}`.
    Plain,
    /// A resumable session's: its token, the epoch, the position.
    Resumable { token: String },
    /// A `Resume` that found no session to resume: a new one, told as a
    /// reset (`why`); no token when resuming is off.
    Reset { token: Option<String>, why: &'static str },
}

impl Welcome {
    /// The session's resume token, if it is resumable.
    pub fn token(&self) -> Option<&str> {
        match self {
            Welcome::Plain | Welcome::Reset { token: None, .. } => None,
            Welcome::Resumable { token } | Welcome::Reset { token: Some(token), .. } => Some(token),
        }
    }
}

/// A local user who joined, not announced yet: what their welcome says.
#[derive(Debug)]
struct Joiner {
    id: ConnId,
    role: Role,
    welcome: Welcome,
}

/// How a resume went (docs/PROTOCOL.md, "Resuming").
#[derive(Debug, PartialEq, Eq)]
pub enum Resumed {
    /// The session is this connection's now; `took_over`: the connection
    /// that still had it, to be closed without leaving; `exact`: what it
    /// missed was replayed (else a reset).
    Yes { took_over: Option<ConnId>, exact: bool },
    /// Nobody holds the name: log in afresh (a reset).
    NotHeld,
    /// Somebody does, with another token.
    Refused,
}

/// Where a member's snapshot of the room (the user list, then the keys)
/// stands. It is sent in parts of at most `part_budget` bytes as the
/// member's queue drains, so a joiner of a full room gets everything with
/// its queue bounded; each part is made from the room as it is when sent,
/// and live `UsersJoined` / `UsersLeft` / `PublicKey` keep it true.
#[derive(Debug, Clone)]
enum Snapshot {
    /// The names after `after` (a key of `Room::names`) are still to come.
    Users { after: Rc<str> },
    /// The keys of the users after `after` (all of them: `None`) are to come.
    Keys { after: Option<Rc<str>> },
}

pub struct Room {
    title: String,
    password: String,
    mode: Mode,
    /// Everyone online by the comparison key of their name (`names::check`):
    /// one user per key, so that no two online names look alike. Logins and
    /// private-message targets are looked up here.
    users: HashMap<Rc<str>, Member>,
    /// Local users: connection → comparison key.
    local: LocalKeys,
    /// Local connections, for delivery to everyone without hashing.
    order: Vec<ConnId>,
    /// Online names (display form, NFC) → comparison key, sorted, for
    /// `OnlineUsers` lists. (In key order "mary" would sort as "rnary".)
    names: BTreeMap<Rc<str>, Rc<str>>,
    /// Presence changes not yet announced (see `flush_presence`): local
    /// joiners (who get the welcome), other nodes' joiners, leavers.
    joined: Vec<Joiner>,
    joined_remote: Vec<Rc<str>>,
    left: Vec<Rc<str>>,
    /// The last broadcasts, for joiners.
    history: History,
    /// Local members whose snapshot is not finished.
    receiving: Vec<ConnId>,
    /// Most bytes of one snapshot part.
    part_budget: usize,
    /// `e2e_room`: broadcasts and private messages only in sealed form.
    encrypted: bool,
    /// Remote users added with a key the users here have not been sent.
    rekeyed: Vec<Rc<str>>,
    /// The room's position: the number of its last event (standalone,
    /// counted here; in a cluster, the cluster's order).
    seq: u64,
    /// In a cluster: the number of the event being applied (messages made
    /// outside one are not numbered).
    event: Option<u64>,
    /// The position of the last presence change (what lists carry).
    presence_seq: u64,
    /// Names the room's memory: new at every start (in a cluster, Redis's).
    epoch: Rc<str>,
    /// What resuming sessions may have missed.
    journal: Journal,
    /// Sessions whose connection dropped: (deadline, name key), oldest first.
    away: VecDeque<(Instant, Rc<str>)>,
    /// Most sessions away at once (0: resuming is off).
    max_away: usize,
    /// Members with a token (standalone journals only while there are any).
    resumable: usize,
    /// Most bytes a resume replays (half of `max_outbound_bytes`).
    replay_budget: usize,
}

impl Room {
    /// `outbound_limit` is what each user may have queued: a part of a
    /// snapshot takes an eighth of it (so the list and the keys of a room of
    /// thousands usually go in one part, serialized once for all who join in
    /// the same round); `history` what joiners are replayed.
    pub fn new(title: &str, password: &str, history: History, outbound_limit: usize) -> Self {
        Room {
            title: title.to_owned(),
            password: password.to_owned(),
            mode: Mode::Standalone,
            users: HashMap::new(),
            local: LocalKeys::default(),
            order: Vec::new(),
            names: BTreeMap::new(),
            joined: Vec::new(),
            joined_remote: Vec::new(),
            left: Vec::new(),
            history,
            receiving: Vec::new(),
            part_budget: part_budget(outbound_limit),
            encrypted: false,
            rekeyed: Vec::new(),
            seq: 0,
            event: None,
            presence_seq: 0,
            epoch: Rc::from(resume::new_epoch()),
            journal: Journal::default(),
            away: VecDeque::new(),
            max_away: 0,
            resumable: 0,
            replay_budget: outbound_limit / 2,
        }
    }

    /// `set_max_away` as a builder.
    pub fn resumable(mut self, max_away: usize) -> Self {
        self.max_away = max_away;
        self
    }

    /// Resuming on (`resume_grace_secs` > 0): at most `max_away` sessions
    /// away at once (0: off; those away now stay until their deadline).
    pub fn set_max_away(&mut self, max_away: usize) {
        self.max_away = max_away;
    }

    /// In a cluster: the event numbered `seq` is being applied (`None`:
    /// done). What it makes is numbered `seq`.
    pub fn at_event(&mut self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.seq = seq;
        }
        self.event = seq;
    }

    /// In a cluster, the link was (re)made: the room's memory is named
    /// `epoch`, and its order is whole from `seq` on (what came before
    /// may have been missed, so no resume reaches back past it).
    pub fn synced(&mut self, epoch: &str, seq: u64) {
        if *self.epoch != *epoch {
            self.epoch = Rc::from(epoch);
        }
        self.seq = seq;
        self.presence_seq = self.presence_seq.min(seq);
        self.journal.forget_to(seq);
    }

    /// The number of an event happening now: standalone, the next one; in
    /// a cluster, the one being applied (`None` outside one).
    fn next_seq(&mut self) -> Option<u64> {
        match self.mode {
            Mode::Standalone => {
                self.seq += 1;
                Some(self.seq)
            }
            Mode::Node(_) => self.event,
        }
    }

    /// Keeps a numbered message for resuming sessions: standalone while
    /// any member may resume, in a cluster always (a session of another
    /// node may resume here).
    fn keep(&mut self, seq: Option<u64>, to: For, kind: Kind, json: &str) {
        let Some(seq) = seq else { return };
        // Standalone, a private message to a session that cannot resume is
        // for nobody's resume: not kept (a flood of them would push out
        // what resumable sessions missed).
        if let For::Name(key) = &to
            && !self.is_clustered()
            && self.users.get(&**key).is_none_or(|m| m.token.is_none())
        {
            return;
        }
        let wanted = self.max_away > 0 && (self.is_clustered() || self.resumable > 0);
        match wanted {
            true => self.journal.record(seq, to, kind, json),
            false => self.journal.forget_to(seq),
        }
    }

    /// An end-to-end encrypted room (`e2e_room`): the welcome says so, and
    /// plaintext broadcasts and private messages are refused.
    pub fn encrypted(mut self, on: bool) -> Self {
        self.encrypted = on;
        self
    }

    /// A reload: the title new joiners are sent (`ServerName`) and the
    /// password checked from now on; users in the room stay.
    pub fn set_title_and_password(&mut self, title: &str, password: &str) {
        title.clone_into(&mut self.title);
        password.clone_into(&mut self.password);
    }

    /// A reload: the history is trimmed to its new bounds (nothing else is lost).
    pub fn set_history_limits(&mut self, size: usize, max_bytes: usize) {
        self.history.set_limits(size, max_bytes);
    }

    /// A reload changed `max_outbound_bytes`: snapshot parts are sized for
    /// the new limit, which no open connection is below (server/reload.rs
    /// lowers it only for those not in the room yet).
    pub fn set_outbound_limit(&mut self, outbound_limit: usize) {
        self.part_budget = part_budget(outbound_limit);
        self.replay_budget = outbound_limit / 2;
    }

    /// Standalone, or a node of a cluster (and whether its link is up).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    pub fn is_clustered(&self) -> bool {
        self.mode != Mode::Standalone
    }

    /// Everyone can be reached: standalone, or a node whose link is up.
    pub fn reaches_everyone(&self) -> bool {
        self.mode != Mode::Node(Link::Down)
    }

    /// A public room (empty password) accepts anything.
    pub fn check_password(&self, given: &str) -> bool {
        self.password.is_empty() || constant_time_eq(given.as_bytes(), self.password.as_bytes())
    }

    /// Whether the user with comparison key `name_key` is online (here,
    /// away here, or on another node).
    pub fn is_online(&self, name_key: &str) -> bool {
        self.users.contains_key(name_key)
    }

    /// How many users are online, on every node.
    pub fn online(&self) -> usize {
        self.users.len()
    }

    /// The users of this node, for delivery to everyone.
    pub fn local_members(&self) -> &[ConnId] {
        &self.order
    }

    pub fn name_of(&self, id: ConnId) -> Option<&str> {
        self.member(id).map(|m| &*m.name)
    }

    fn member(&self, id: ConnId) -> Option<&Member> {
        self.users.get(self.local.get(&id)?)
    }

    fn member_mut(&mut self, id: ConnId) -> Option<&mut Member> {
        self.users.get_mut(self.local.get(&id)?)
    }

    /// The local user whose name has comparison key `name_key`.
    pub fn local_id(&self, name_key: &str) -> Option<ConnId> {
        match self.users.get(name_key)?.at {
            At::Local { id, .. } => Some(id),
            At::Remote { .. } | At::Away { .. } => None,
        }
    }

    /// Everyone online, by name: (name, comparison key, the connection if
    /// here, else the node).
    pub fn members(&self) -> impl Iterator<Item = (&str, &str, Result<ConnId, &str>)> {
        self.names.iter().filter_map(|(name, key)| {
            let at = match &self.users.get(key)?.at {
                At::Local { id, .. } => Ok(*id),
                At::Remote { node } => Err(&**node),
                At::Away { .. } => Err("away"),
            };
            Some((&**name, &**key, at))
        })
    }

    /// Whether a broadcast (or private message) from another node may be
    /// delivered here: in an `e2e_room` only the sealed form (a node set up
    /// without `e2e_room` must not put plaintext in front of our users).
    pub fn takes_from_cluster(&self, private: bool, text: &str) -> bool {
        let sealed = match private {
            true => protocol::sealed_private_message(text.as_bytes()),
            false => protocol::sealed_room_message(text.as_bytes()),
        };
        !self.encrypted || sealed
    }

    /// Users online on this node.
    pub fn online_here(&self) -> usize {
        self.order.len()
    }

    /// The server's own words to everyone here (not kept in the history).
    pub fn announce(&mut self, text: &str, out: &mut Effects) {
        let message = Outbound::new(To::Everyone, &Reply::Announcement { text });
        self.numbered(out, message, For::Everyone);
    }

    /// The comparison key of local user `id`'s name.
    pub fn name_key_of(&self, id: ConnId) -> Option<Rc<str>> {
        self.local.get(&id).cloned()
    }

    /// Whether `name` may log in as far as this node knows: the checked
    /// name, or why not. (In a cluster Redis has the last word.)
    pub fn check_name(&self, name: &str) -> Result<Name, Rejection> {
        let name = names::check(name)?;
        let Some(online) = self.users.get(name.key.as_str()) else {
            return Ok(name);
        };
        let (display, online) = (&name.display, &online.name);
        let text = if **online == **display {
            format!("the name {display:?} is already online")
        } else {
            format!(
                "the name {display:?} is taken: it looks like {online:?}, who is online \
                 (names are compared ignoring case and look-alike characters)"
            )
        };
        Err(Rejection::new(ErrorCode::NameTaken, text))
    }

    /// A member joins (the tests' shorthand of `join_as`).
    #[cfg(test)]
    pub fn join(&mut self, id: ConnId, name: &str) -> Result<(), Rejection> {
        self.join_as(id, name, Role::Member, Welcome::Plain)
    }

    /// Adds a local user, in `role`. The welcome (`ServerName` and, for a
    /// moderator, `"role": "moderator"`; `OnlineUsers`) and the news for
    /// everyone else go out with the next `flush_presence`.
    /// The name is checked and normalized by `names::check`; it is taken
    /// when an online name has the same comparison key ("Alice", "аlice"
    /// with a Cyrillic "а" and "alice" are one name).
    pub fn join_as(
        &mut self,
        id: ConnId,
        name: &str,
        role: Role,
        welcome: Welcome,
    ) -> Result<(), Rejection> {
        let Name { display, key } = self.check_name(name)?;
        let name: Rc<str> = Rc::from(display);
        let name_key: Rc<str> = Rc::from(key);
        let at = At::Local { id, slot: self.order.len(), snapshot: None };
        let token = welcome.token().map(|token| {
            self.resumable += 1;
            resume::token_hash(token).into_boxed_str()
        });
        self.insert(name_key.clone(), Member { name: name.clone(), key: None, token, at });
        self.local.insert(id, name_key);
        self.order.push(id);
        self.changed_presence();
        // Left and came back before anyone heard: nobody needs to hear either.
        self.left.retain(|n| *n != name);
        self.joined.push(Joiner { id, role, welcome });
        Ok(())
    }

    /// Someone joined or left: a numbered event (standalone) that the
    /// next lists report.
    fn changed_presence(&mut self) {
        if let Some(seq) = self.next_seq() {
            self.presence_seq = seq;
        }
    }

    /// Takes local user `id` out of the delivery order (for good, or while
    /// away); `Some(true)` if their join was not announced yet.
    fn unlist(&mut self, id: ConnId) -> Option<(Rc<str>, bool)> {
        let name_key = self.local.remove(&id)?;
        if let Some(Member { at: At::Local { slot, snapshot, .. }, .. }) = self.users.get(&name_key)
        {
            let (slot, receiving) = (*slot, snapshot.is_some());
            self.order.swap_remove(slot);
            if let Some(&moved) = self.order.get(slot)
                && let Some(At::Local { slot: s, .. }) = self.member_mut(moved).map(|m| &mut m.at)
            {
                *s = slot;
            }
            if receiving {
                self.receiving.retain(|&r| r != id);
            }
        }
        let unannounced = match self.joined.iter().position(|j| j.id == id) {
            Some(i) => {
                self.joined.remove(i);
                true
            }
            None => false,
        };
        Some((name_key, unannounced))
    }

    /// The connection of a resumable user dropped: they stay online, and
    /// their session is kept until `until` for a resume (`false`: not a
    /// resumable session, or it had just joined: they leave as usual).
    /// `from`: the address it was at (a ban by address ends it).
    pub fn detach(&mut self, id: ConnId, until: Instant, from: IpAddr, out: &mut Effects) -> bool {
        let resumable = self.member(id).is_some_and(|m| m.token.is_some());
        if !resumable || self.max_away == 0 || self.joined.iter().any(|j| j.id == id) {
            return false;
        }
        let Some((name_key, _)) = self.unlist(id) else { return false };
        if let Some(member) = self.users.get_mut(&name_key) {
            member.at = At::Away { from: Some(from) };
        }
        self.away.push_back((until, name_key));
        if self.away.len() > self.max_away
            && let Some((_, oldest)) = self.away.pop_front()
        {
            self.end_away(&oldest, out);
        }
        true
    }

    /// Sessions away past their deadline leave now (announced with the
    /// next lists; in a cluster their names are released). Their name keys.
    pub fn expire(&mut self, now: Instant, out: &mut Effects) -> Vec<Rc<str>> {
        let mut gone = Vec::new();
        while self.away.front().is_some_and(|(until, _)| *until <= now) {
            let Some((_, key)) = self.away.pop_front() else { break };
            if self.end_away(&key, out).is_some() {
                gone.push(key);
            }
        }
        gone
    }

    /// Takes `name_key` off the away list (its session ended or resumed).
    fn forget_away(&mut self, name_key: &str) {
        self.away.retain(|(_, k)| **k != *name_key);
    }

    /// An away session ends (its deadline, a kick, a ban, more sessions
    /// away than `max_away`): the user leaves, and in a cluster the name is
    /// released (whatever ended it). Their name, if they were away here.
    pub fn end_away(&mut self, name_key: &str, out: &mut Effects) -> Option<Rc<str>> {
        if !matches!(self.users.get(name_key).map(|m| &m.at), Some(At::Away { .. })) {
            return None;
        }
        self.forget_away(name_key);
        let member = self.users.remove(name_key)?;
        self.names.remove(&member.name);
        if member.token.is_some() {
            self.resumable -= 1;
        }
        self.changed_presence();
        self.left.push(member.name.clone());
        if self.is_clustered() {
            let name_key = name_key.to_owned();
            out.push(Effect::Cluster(ClusterCall::Release { name_key }));
        }
        Some(member.name)
    }

    /// In a cluster: the session under `name_key` was resumed for a
    /// connection of this node that has gone since. It is this node's now:
    /// away here until `until` (`false`: not known here).
    pub fn hold_away(&mut self, name_key: &str, until: Instant) -> bool {
        let Some((key, member)) = self.users.get_key_value(name_key) else { return false };
        if let At::Remote { .. } = member.at {
            let key = key.clone();
            if let Some(member) = self.users.get_mut(&key) {
                member.at = At::Away { from: None };
            }
            self.away.push_back((until, key));
        }
        true
    }

    /// Sessions away here and the address each was last at: (name,
    /// comparison key, address).
    pub fn away_from(&self) -> impl Iterator<Item = (&str, &str, IpAddr)> {
        self.away.iter().filter_map(|(_, key)| {
            let member = self.users.get(key)?;
            match member.at {
                At::Away { from: Some(ip) } => Some((&*member.name, &**key, ip)),
                _ => None,
            }
        })
    }

    /// How many sessions are away now.
    pub fn away(&self) -> usize {
        self.away.len()
    }

    /// Connection `id` resumes the session under `ask.name` (standalone,
    /// or in a cluster once Redis said the token is right: `checked`):
    /// it is sent what it missed, or a reset, and then the room as it is.
    pub fn resume(
        &mut self,
        id: ConnId,
        ask: &Ask,
        checked: bool,
        role: Role,
        out: &mut Effects,
    ) -> Resumed {
        let Ok(Name { key, .. }) = names::check(&ask.name) else { return Resumed::NotHeld };
        let Some((name_key, member)) = self.users.get_key_value(key.as_str()) else {
            return Resumed::NotHeld;
        };
        let hash = resume::token_hash(&ask.token);
        let right = member.token.as_deref().is_some_and(|t| resume::same_hash(t, &hash));
        if !right && !checked {
            return Resumed::Refused;
        }
        let name_key = name_key.clone();
        // What the others have pending goes out before this connection is listed.
        self.flush_presence(out);
        let took_over = match self.users.get(&name_key).map(|m| &m.at) {
            Some(At::Local { id: old, .. }) => {
                let old = *old;
                self.unlist(old);
                Some(old)
            }
            Some(At::Away { .. }) => {
                self.forget_away(&name_key);
                None
            }
            _ => None,
        };
        let Some(member) = self.users.get_mut(&name_key) else { return Resumed::NotHeld };
        if member.token.is_none() {
            self.resumable += 1;
        }
        member.token = Some(hash.into_boxed_str());
        member.at = At::Local { id, slot: self.order.len(), snapshot: None };
        self.local.insert(id, name_key.clone());
        self.order.push(id);
        // Room traffic reaches the connection from here on, not what was
        // decided before (it is in the journal, and replayed if missed).
        out.push(Effect::LoggedIn(id));
        let missed = match *self.epoch == *ask.epoch {
            true => self.journal.since(ask.seq, self.seq, &name_key, self.replay_budget),
            false => Err(Gap::NewEpoch),
        };
        let exact = missed.is_ok();
        // Exact: the client's own position echoed, what it missed follows;
        // a reset: the room's position, and why.
        let (at, count, why) = match &missed {
            Ok(missed) => (ask.seq, Some(missed.len()), None),
            Err(gap) => (self.seq, None, Some(gap.why())),
        };
        let (title, epoch, token) = (&self.title, &self.epoch, Some(ask.token.as_str()));
        let json =
            protocol::resumed_json(title, self.encrypted, role, token, epoch, at, count, why);
        out.push(Effect::Send(Outbound {
            to: To::One(id),
            kind: Kind::ServerName,
            json,
            seq: None,
        }));
        for (seq, kind, json) in missed.unwrap_or_default() {
            let json = json.to_string();
            out.push(Effect::Send(Outbound { to: To::One(id), kind, json, seq: Some(seq) }));
        }
        self.send_snapshot(id, !exact, out);
        Resumed::Yes { took_over, exact }
    }

    /// A resumed session's view of the room: the list (with the room's
    /// position) and the keys, in parts as a joiner's; after a reset the
    /// history too.
    fn send_snapshot(&mut self, id: ConnId, history: bool, out: &mut Effects) {
        let seq = self.seq;
        let (part, mut next) = self.part(&Snapshot::Users { after: Rc::from("") }, true);
        if let Some((kind, json)) = part {
            out.push(Effect::Send(Outbound { to: To::One(id), kind, json, seq: Some(seq) }));
        }
        if let Some(from @ Snapshot::Keys { .. }) = &next {
            let (part, rest) = self.part(from, false);
            if let Some((kind, json)) = part {
                out.push(Effect::Send(Outbound { to: To::One(id), kind, json, seq: None }));
            }
            next = rest;
        }
        if history {
            for replay in self.history.replays() {
                let json = replay.to_owned();
                out.push(Effect::Send(Outbound {
                    to: To::One(id),
                    kind: Kind::Broadcast,
                    json,
                    seq: None,
                }));
            }
        }
        if let Some(rest) = next {
            self.resume_snapshot(id, rest);
        }
    }

    /// In a cluster: the session under `name_key` was resumed on `node`
    /// (another one). It is that node's now, with no leave and no join;
    /// the connection that had it here, if any, is to be closed.
    pub fn resumed_elsewhere(&mut self, name_key: &str, node: Rc<str>) -> Option<ConnId> {
        let at = &self.users.get(name_key)?.at;
        let old = match at {
            At::Local { id, .. } => {
                let id = *id;
                self.unlist(id);
                Some(id)
            }
            At::Away { .. } => {
                self.forget_away(name_key);
                None
            }
            At::Remote { .. } => None,
        };
        let member = self.users.get_mut(name_key)?;
        if member.token.take().is_some() {
            self.resumable -= 1;
        }
        member.at = At::Remote { node };
        old
    }

    fn insert(&mut self, name_key: Rc<str>, member: Member) {
        self.names.insert(member.name.clone(), name_key.clone());
        self.users.insert(name_key, member);
    }

    /// Removes a local user and returns their name (`None` for a
    /// connection that never joined).
    pub fn leave(&mut self, id: ConnId) -> Option<Rc<str>> {
        let (name_key, unannounced) = self.unlist(id)?;
        let member = self.users.remove(&name_key)?;
        self.names.remove(&member.name);
        if member.token.is_some() {
            self.resumable -= 1;
        }
        self.changed_presence();
        if !unannounced {
            self.left.push(member.name.clone());
        }
        Some(member.name)
    }

    /// A user of another node came online. `Err(id)`: a local user holds
    /// that name (the cluster says they lost it).
    pub fn add_remote(&mut self, user: RemoteUser) -> Result<(), ConnId> {
        let Ok(Name { display, key }) = names::check(&user.name) else {
            return Ok(()); // not a name this node would accept: nobody to show
        };
        match self.users.get(key.as_str()).map(|m| &m.at) {
            Some(At::Local { id, .. }) => return Err(*id),
            // The cluster gave the name of a session away here to someone:
            // that session is over (its resume will be a reset).
            Some(At::Away { .. }) => {
                self.forget_away(&key);
                if let Some(member) = self.users.remove(key.as_str()) {
                    // (Its spelling may not be the new one's.)
                    self.names.remove(&member.name);
                    if member.token.is_some() {
                        self.resumable -= 1;
                    }
                }
            }
            _ => {}
        }
        let name_key: Rc<str> = Rc::from(key);
        let had = self.users.get(&name_key).and_then(|m| m.key.clone());
        if user.key.is_some() && user.key.as_deref() != had.as_deref() {
            self.rekeyed.push(name_key.clone());
        }
        self.remove_remote(&name_key);
        let name: Rc<str> = Rc::from(display);
        match self.left.iter().position(|n| *n == name) {
            Some(i) => {
                self.left.swap_remove(i);
            }
            None => self.joined_remote.push(name.clone()),
        }
        let key = user.key.map(String::into_boxed_str);
        let at = At::Remote { node: user.node };
        self.insert(name_key, Member { name, key, token: None, at });
        self.changed_presence();
        Ok(())
    }

    /// A user of another node went offline; their name if they were known.
    pub fn remove_remote(&mut self, name_key: &str) -> Option<Rc<str>> {
        if !matches!(self.users.get(name_key)?.at, At::Remote { .. }) {
            return None;
        }
        let member = self.users.remove(name_key)?;
        self.names.remove(&member.name);
        self.changed_presence();
        match self.joined_remote.iter().position(|n| *n == member.name) {
            Some(i) => {
                self.joined_remote.remove(i);
            }
            None => self.left.push(member.name.clone()),
        }
        Some(member.name)
    }

    /// Forgets every user of `node` (it died or resynced); how many.
    pub fn remove_node(&mut self, node: &str) -> usize {
        let gone: Vec<Rc<str>> = self
            .users
            .iter()
            .filter(|(_, m)| matches!(&m.at, At::Remote { node: n } if **n == *node))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            self.remove_remote(key);
        }
        gone.len()
    }

    /// The other nodes' users as the cluster has them now: the view is made
    /// equal to `users`, and the differences are announced. Returns local
    /// users whose names the cluster gave to someone else.
    pub fn resync(&mut self, users: Vec<RemoteUser>) -> Vec<ConnId> {
        let wanted: HashMap<String, RemoteUser> =
            users.into_iter().filter_map(|u| Some((names::check(&u.name).ok()?.key, u))).collect();
        let stale: Vec<Rc<str>> = self
            .users
            .iter()
            .filter(|(k, m)| match (&m.at, wanted.get(&***k)) {
                (At::Remote { .. }, None) => true,
                (At::Remote { node }, Some(u)) => {
                    *node != u.node || *m.name != *u.name || m.key.as_deref() != u.key.as_deref()
                }
                // Away here, but the cluster gave the name to another node.
                (At::Away { .. }, Some(_)) => true,
                (At::Local { .. } | At::Away { .. }, _) => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &stale {
            if self.remove_remote(key).is_none() {
                self.end_away(key, &mut Vec::new());
            }
        }
        let mut conflicts = Vec::new();
        for (key, user) in wanted {
            if !self.users.contains_key(key.as_str())
                && let Err(id) = self.add_remote(user)
            {
                conflicts.push(id);
            }
        }
        conflicts
    }

    /// The local users, as the cluster should have them.
    pub fn local_users(&self) -> Vec<LocalUser> {
        let user = |k: &Rc<str>| {
            let m = self.users.get(k)?;
            let (name, key, token) = (m.name.clone(), m.key.clone(), m.token.clone());
            Some(LocalUser { name_key: k.clone(), name, key, token })
        };
        let away = self.away.iter().map(|(_, k)| k);
        self.local.values().chain(away).filter_map(user).collect()
    }

    /// Routes one request from a logged-in user.
    pub fn handle(&mut self, from: ConnId, request: Request, out: &mut Effects) {
        let Some(sender) = self.member(from) else {
            return;
        };
        let name = sender.name.clone();
        if self.encrypted
            && let Err(why) = protocol::check_sealed(&request)
        {
            return out.refuse(from, why);
        }
        let unavailable = !self.reaches_everyone();
        let propose = |out: &mut Effects, what| {
            out.push(Effect::Cluster(ClusterCall::Propose { from, what }));
        };
        match request {
            Request::Broadcast { .. } | Request::PublicKey { .. } if unavailable => {
                out.refuse(from, Rejection::cluster_unavailable());
            }
            Request::Broadcast { text } => match self.mode {
                Mode::Standalone => self.say(&name, &text, out),
                Mode::Node(_) => propose(out, Proposed::Say { name, text }),
            },
            Request::PrivateMessage { target, text } => {
                // (`names::check` refuses a target too long to be any name
                // by its length alone, before normalizing it: user_offline.)
                let found = names::check(&target).ok().and_then(|n| {
                    let (key, member) = self.users.get_key_value(n.key.as_str())?;
                    let local = matches!(member.at, At::Local { .. });
                    Some((key.clone(), member.name.clone(), local))
                });
                // (In a cluster every private message takes the cluster's
                // order, so that its number is the same on every node: the
                // target may resume on another one.)
                match found {
                    // (While the link is down, a local user is still
                    // reached: unnumbered, as the cluster's order is lost.)
                    Some((key, _, local))
                        if self.mode == Mode::Standalone || (local && unavailable) =>
                    {
                        self.deliver_private(&key, &name, &text, out)
                    }
                    Some(_) if unavailable => out.refuse(from, Rejection::cluster_unavailable()),
                    Some((to_key, to_name, _)) => {
                        propose(out, Proposed::Private { to_key, to_name, from: name, text })
                    }
                    None => out.refuse(from, Rejection::user_offline(&target)),
                }
            }
            // The session carries these out (only a moderator's reach the loop).
            Request::Moderate(_) => {}
            Request::OnlineUsers => {
                let first = Snapshot::Users { after: Rc::from("") };
                let (part, rest) = self.part(&first, true);
                if let Some((kind, json)) = part {
                    self.emit(out, Outbound { to: To::One(from), kind, json, seq: None });
                }
                if let Some(Snapshot::Users { after }) = rest {
                    self.resume_snapshot(from, Snapshot::Users { after });
                }
            }
            // (Its format was checked when it was parsed: `protocol::check_public_key`.)
            Request::PublicKey { key } => {
                let Some(name_key) = self.local.get(&from).cloned() else { return };
                match self.mode {
                    Mode::Standalone => self.set_public_key(&name_key, &key, out),
                    Mode::Node(_) => propose(out, Proposed::PublicKey { name_key, key }),
                }
            }
        }
    }

    /// Every message of the room goes out through here: presence changes
    /// not yet announced go first, so that everyone knows about a user
    /// before hearing from them.
    fn emit(&mut self, out: &mut Effects, message: Outbound) {
        self.flush_presence(out);
        out.push(Effect::Send(message));
    }

    /// A broadcast takes effect: to every local user, and into the history.
    pub fn say(&mut self, name: &str, text: &str, out: &mut Effects) {
        let reply = Reply::Broadcast { source: name, text, history: false };
        self.numbered(out, Outbound::new(To::Everyone, &reply), For::Everyone);
        self.history.remember(name, text);
    }

    /// A numbered message of the room (a broadcast, a private message, a
    /// key, an announcement): sent, and kept for resuming sessions.
    fn numbered(&mut self, out: &mut Effects, mut message: Outbound, to: For) {
        let seq = self.next_seq();
        message.seq = seq;
        self.keep(seq, to, message.kind, &message.json);
        self.emit(out, message);
    }

    /// The history as the cluster has it, oldest first: (name, text).
    pub fn set_history(&mut self, broadcasts: &[(String, String)]) {
        self.history.replace(broadcasts);
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// A public key takes effect: kept for joiners, relayed to every local user.
    pub fn set_public_key(&mut self, name_key: &str, key: &str, out: &mut Effects) {
        let Some(member) = self.users.get_mut(name_key) else { return };
        member.key = Some(key.into());
        let message = Outbound::new(To::Everyone, &Reply::PublicKey { source: &member.name, key });
        self.numbered(out, message, For::Everyone);
    }

    /// A private message to `to_key`, if that user is here.
    /// (Kept for resuming too: the user may be away, or, in a cluster,
    /// come back on this node.)
    pub fn deliver_private(&mut self, to_key: &str, from: &str, text: &str, out: &mut Effects) {
        let Some((key, member)) = self.users.get_key_value(to_key) else { return };
        let (key, here) = match member.at {
            At::Local { id, .. } => (key.clone(), Some(id)),
            _ => (key.clone(), None),
        };
        let reply = Reply::PrivateMessage { source: from, text };
        match here {
            Some(id) => self.numbered(out, Outbound::new(To::One(id), &reply), For::Name(key)),
            None => {
                let seq = self.next_seq();
                self.keep(seq, For::Name(key), Kind::PrivateMessage, &reply.to_json());
            }
        }
    }

    /// Announces joins and leaves since the last call, batched. Joiners get
    /// `ServerName`, the first part of their snapshot (the list, the keys)
    /// and the recent history; the others get the full list in a small
    /// room, or one `UsersJoined` / `UsersLeft` delta in a large one.
    pub fn flush_presence(&mut self, out: &mut Effects) {
        let rekeyed = std::mem::take(&mut self.rekeyed);
        self.flush_lists(out);
        // Users of another node who came back with their key (a resync):
        // everyone here learns it again, after the list that names them.
        for name_key in rekeyed {
            if let Some(Member { name, key: Some(key), .. }) = self.users.get(&name_key) {
                let reply = Reply::PublicKey { source: name, key };
                out.push(Effect::Send(Outbound::new(To::Everyone, &reply)));
            }
        }
    }

    fn flush_lists(&mut self, out: &mut Effects) {
        if self.joined.is_empty() && self.left.is_empty() && self.joined_remote.is_empty() {
            return;
        }
        let joiners = std::mem::take(&mut self.joined);
        let joined: Vec<ConnId> = joiners.iter().map(|j| j.id).collect();
        let joined_remote = std::mem::take(&mut self.joined_remote);
        let left = std::mem::take(&mut self.left);
        let small = self.online() <= FULL_LIST_MAX;
        let seq = Some(self.presence_seq);
        let mut send = |to: To, (kind, json): (Kind, String)| {
            out.push(Effect::Send(Outbound { to, kind, json, seq: None }));
        };
        if !joined.is_empty() {
            let to = || To::Many(joined.clone());
            let (title, encrypted, epoch) = (&self.title, self.encrypted, &*self.epoch);
            // Plain welcomes are one message per role; resumable sessions'
            // are their own (a token each).
            let (mut members, mut moderators) = (Vec::new(), Vec::new());
            for Joiner { id, role, welcome } in &joiners {
                let json = match welcome {
                    Welcome::Plain => {
                        match role {
                            Role::Member => members.push(*id),
                            Role::Moderator => moderators.push(*id),
                        }
                        continue;
                    }
                    Welcome::Resumable { token } => protocol::resumable_welcome_json(
                        title,
                        encrypted,
                        *role,
                        token,
                        epoch,
                        self.presence_seq,
                    ),
                    Welcome::Reset { token, why } => protocol::resumed_json(
                        title,
                        encrypted,
                        *role,
                        token.as_deref(),
                        epoch,
                        self.presence_seq,
                        None,
                        Some(why),
                    ),
                };
                send(To::One(*id), (Kind::ServerName, json));
            }
            for (ids, role) in [(members, Role::Member), (moderators, Role::Moderator)] {
                if !ids.is_empty() {
                    let json = server_name_json(title, encrypted, role);
                    send(To::Many(ids), (Kind::ServerName, json));
                }
            }
            // A small room's full list goes to everyone; a large room's
            // joiners get its first part.
            let mut next = Some(Snapshot::Keys { after: None });
            let mut send_at = |to: To, (kind, json): (Kind, String)| {
                out.push(Effect::Send(Outbound { to, kind, json, seq }));
            };
            if small {
                send_at(To::Everyone, self.online_users_json());
            } else {
                let (part, rest) = self.part(&Snapshot::Users { after: Rc::from("") }, true);
                part.into_iter().for_each(|part| send_at(to(), part));
                next = rest;
            }
            let mut send = |to: To, (kind, json): (Kind, String)| {
                out.push(Effect::Send(Outbound { to, kind, json, seq: None }));
            };
            // The first part of the keys, once the list is complete.
            if let Some(from @ Snapshot::Keys { .. }) = &next {
                let (part, rest) = self.part(from, false);
                part.into_iter().for_each(|part| send(to(), part));
                next = rest;
            }
            for replay in self.history.replays() {
                send(to(), (Kind::Broadcast, replay.to_owned()));
            }
            if let Some(rest) = next {
                for &id in &joined {
                    self.resume_snapshot(id, rest.clone());
                }
            }
        } else if small {
            let (kind, json) = self.online_users_json();
            out.push(Effect::Send(Outbound { to: To::Everyone, kind, json, seq }));
        }
        if small {
            return;
        }
        if !left.is_empty() {
            let users = left.iter().map(|n| &**n).collect();
            let message = Outbound::new(To::Everyone, &Reply::UsersLeft { users });
            out.push(Effect::Send(Outbound { seq, ..message }));
        }
        if !joined.is_empty() || !joined_remote.is_empty() {
            let local = joined.iter().filter_map(|&id| self.name_of(id));
            let users = local.chain(joined_remote.iter().map(|n| &**n)).collect();
            let message = Outbound::new(To::Everyone, &Reply::UsersJoined { users });
            out.push(Effect::Send(Outbound { seq, ..message }));
        }
    }

    /// Members with a snapshot still to receive (those that finished since
    /// the last call are dropped here, once per call rather than once each).
    pub fn receiving(&mut self) -> &[ConnId] {
        let (users, local) = (&self.users, &self.local);
        self.receiving.retain(|id| {
            let at = local.get(id).and_then(|k| users.get(k)).map(|m| &m.at);
            matches!(at, Some(At::Local { snapshot: Some(_), .. }))
        });
        &self.receiving
    }

    /// Most bytes `next_snapshot_part` returns (one oversized entry aside).
    pub fn part_budget(&self) -> usize {
        self.part_budget
    }

    fn snapshot_mut(&mut self, id: ConnId) -> Option<&mut Option<Box<Snapshot>>> {
        match &mut self.member_mut(id)?.at {
            At::Local { snapshot, .. } => Some(snapshot),
            At::Remote { .. } | At::Away { .. } => None,
        }
    }

    /// The next part of `id`'s snapshot, or `None` once it has everything.
    pub fn next_snapshot_part(&mut self, id: ConnId) -> Option<String> {
        loop {
            let from = self.snapshot_mut(id)?.take()?;
            let (part, rest) = self.part(&from, false);
            if let Some(snapshot) = self.snapshot_mut(id) {
                *snapshot = rest.map(Box::new);
            }
            if let Some((_, json)) = part {
                return Some(json);
            }
        }
    }

    fn resume_snapshot(&mut self, id: ConnId, from: Snapshot) {
        let Some(snapshot) = self.snapshot_mut(id) else { return };
        if snapshot.replace(Box::new(from)).is_none() {
            self.receiving.push(id);
        }
    }

    /// One part of a snapshot starting at `from` (the first part of the
    /// list is an `OnlineUsers`, the rest `UsersJoined`), and where the
    /// next part starts.
    fn part(&self, from: &Snapshot, first: bool) -> (Option<(Kind, String)>, Option<Snapshot>) {
        match from {
            Snapshot::Users { after } => {
                let (members, rest) = self.take_part(after, |m| Some(json_len(&m.name) + 1));
                let users = members.iter().map(|m| &*m.name).collect();
                let reply = if first {
                    Reply::OnlineUsers { users, more: rest.is_some() }
                } else {
                    Reply::UsersJoined { users }
                };
                let next = match rest {
                    Some(after) => Snapshot::Users { after },
                    None => Snapshot::Keys { after: None },
                };
                (Some((reply.kind(), reply.to_json())), Some(next))
            }
            Snapshot::Keys { after } => {
                let after = after.clone().unwrap_or_else(|| Rc::from(""));
                let (members, rest) = self.take_part(&after, |m| {
                    Some(json_len(&m.name) + json_len(m.key.as_deref()?) + 2)
                });
                let keys: BTreeMap<&str, &str> =
                    members.iter().filter_map(|m| Some((&*m.name, m.key.as_deref()?))).collect();
                let json = (!keys.is_empty())
                    .then(|| (Kind::PublicKeys, Reply::PublicKeys { keys }.to_json()));
                (json, rest.map(|after| Snapshot::Keys { after: Some(after) }))
            }
        }
    }

    /// Members after the display name `after` ("" = from the start), as
    /// many as fit `part_budget` by `cost` (`None`: skip the member), and
    /// the name of the last one taken if any are left.
    fn take_part(
        &self,
        after: &str,
        cost: impl Fn(&Member) -> Option<usize>,
    ) -> (Vec<&Member>, Option<Rc<str>>) {
        let start = if after.is_empty() { Bound::Unbounded } else { Bound::Excluded(after) };
        let mut taken = Vec::new();
        let mut used = 64;
        let mut last: Option<&Rc<str>> = None;
        for (name, key) in self.names.range::<str, _>((start, Bound::Unbounded)) {
            let Some(member) = self.users.get(key) else { continue };
            let Some(cost) = cost(member) else { continue };
            if !taken.is_empty() && used + cost > self.part_budget {
                return (taken, last.cloned());
            }
            used += cost;
            taken.push(member);
            last = Some(name);
        }
        (taken, None)
    }

    fn online_users_json(&self) -> (Kind, String) {
        let users = self.names.keys().map(|n| &**n).collect();
        (Kind::OnlineUsers, Reply::OnlineUsers { users, more: false }.to_json())
    }
}

/// Local users' name keys by connection id: slab keys are dense and
/// reused, so a vector costs 16 bytes a slot where a hash map cost ~41 per
/// user (at 10,000 users).
#[derive(Default)]
struct LocalKeys(Vec<Option<Rc<str>>>);

impl LocalKeys {
    fn get(&self, id: &ConnId) -> Option<&Rc<str>> {
        self.0.get(*id)?.as_ref()
    }

    fn insert(&mut self, id: ConnId, key: Rc<str>) {
        if self.0.len() <= id {
            self.0.resize(id + 1, None);
        }
        self.0[id] = Some(key);
    }

    fn remove(&mut self, id: &ConnId) -> Option<Rc<str>> {
        self.0.get_mut(*id)?.take()
    }

    fn values(&self) -> impl Iterator<Item = &Rc<str>> {
        self.0.iter().flatten()
    }
}

/// The length of `s` as a JSON string (quotes and escapes included).
fn json_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 8 | 12 => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell an attacker how much of a guessed password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Most bytes of one snapshot part for a user who may have `outbound_limit`
/// bytes queued.
fn part_budget(outbound_limit: usize) -> usize {
    (outbound_limit / 8).clamp(2048, 128 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use crate::cluster::Proposed;

    fn parse(o: &Outbound) -> Value {
        serde_json::from_str(&o.json).unwrap()
    }

    trait AsMessage {
        fn message(&self) -> Option<Outbound>;
    }

    impl AsMessage for Outbound {
        fn message(&self) -> Option<Outbound> {
            Some(self.clone())
        }
    }

    /// Room traffic, and `Error`s as their recipient gets them.
    impl AsMessage for Effect {
        fn message(&self) -> Option<Outbound> {
            match self {
                Effect::Send(message) => Some(message.clone()),
                Effect::Refuse { conn, why } => Some(Outbound {
                    to: To::One(*conn),
                    kind: Kind::Error,
                    json: why.to_json(),
                    seq: None,
                }),
                _ => None,
            }
        }
    }

    /// The messages among `effects`.
    fn sent(effects: &[impl AsMessage]) -> Vec<Outbound> {
        effects.iter().filter_map(AsMessage::message).collect()
    }

    /// What the room proposed to the cluster.
    fn proposed(effects: &Effects) -> Vec<Proposed> {
        let proposal = |effect: &Effect| match effect {
            Effect::Cluster(ClusterCall::Propose { what, .. }) => Some(what.clone()),
            _ => None,
        };
        effects.iter().filter_map(proposal).collect()
    }

    fn joined(room: &mut Room, id: ConnId, name: &str) -> Vec<Outbound> {
        room.join(id, name).unwrap();
        let mut out = Effects::new();
        room.flush_presence(&mut out);
        sent(&out)
    }

    #[test]
    fn password_rules() {
        let private = Room::new("t", "963", History::new(0, 0), 0);
        assert!(private.check_password("963"));
        assert!(!private.check_password("96"));
        assert!(!private.check_password("9634"));
        assert!(Room::new("t", "", History::new(0, 0), 0).check_password("anything"));
    }

    #[test]
    fn name_rules() {
        let mut room = Room::new("t", "", History::new(0, 0), 0);
        room.join(1, "bob").unwrap();
        room.join(2, "A\u{30A}sa").unwrap();
        assert_eq!(room.name_of(2), Some("\u{C5}sa"), "shown in NFC");
        let taken = room.join(3, "bob").unwrap_err();
        assert_eq!(
            (taken.code, taken.text.as_str()),
            (ErrorCode::NameTaken, "the name \"bob\" is already online")
        );
        for look_alike in ["Bob", "B0B", "\u{C5}SA", "\u{410}\u{30A}sa"] {
            let taken = room.join(3, look_alike).unwrap_err();
            assert_eq!(taken.code, ErrorCode::NameTaken, "{look_alike:?}");
        }
        let taken = room.join(3, "BOB").unwrap_err().text;
        assert!(taken.contains("\"BOB\"") && taken.contains("\"bob\""), "{taken}");
        for bad in ["", " bob", "bob\u{200B}", &"x".repeat(33)] {
            assert_eq!(room.join(3, bad).unwrap_err().code, ErrorCode::InvalidName, "{bad:?}");
        }
        assert_eq!(room.online(), 2);
        // A name is free again once its holder leaves.
        room.leave(1);
        room.join(3, "BOB").unwrap();
        let mut out = Vec::new();
        room.handle(3, Request::OnlineUsers, &mut out);
        assert_eq!(parse(sent(&out).last().unwrap())["Users"], json!(["BOB", "\u{C5}sa"]));
    }

    #[test]
    fn private_messages_are_addressed_by_comparison_key() {
        let mut room = Room::new("t", "", History::new(0, 0), 0);
        joined(&mut room, 1, "alice");
        joined(&mut room, 2, "bob");
        for target in ["alice", "Alice", "\u{430}lice"] {
            let mut out = Vec::new();
            let pm = Request::PrivateMessage { target: target.into(), text: "hi".into() };
            room.handle(2, pm, &mut out);
            assert_eq!(sent(&out)[0].to, To::One(1), "{target:?}");
        }
        let mut out = Vec::new();
        let pm = Request::PrivateMessage { target: "al\u{200D}ice".into(), text: "hi".into() };
        room.handle(2, pm, &mut out);
        assert_eq!(
            (sent(&out)[0].to.clone(), parse(&sent(&out)[0])["code"].clone()),
            (To::One(2), json!("user_offline"))
        );
    }

    #[test]
    fn joiner_gets_title_then_list_in_small_room() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 0);
        joined(&mut room, 1, "bob");
        let out = joined(&mut room, 2, "alice");
        assert_eq!(sent(&out).len(), 2);
        assert_eq!(sent(&out)[0].to, To::Many(vec![2]));
        assert_eq!(parse(&sent(&out)[0]), json!({"ServerName": "Ks"}));
        assert_eq!(sent(&out)[1].to, To::Everyone);
        assert_eq!(
            parse(&sent(&out)[1]),
            json!({"msgType": "OnlineUsers", "Users": ["alice", "bob"]})
        );
    }

    #[test]
    fn large_room_gets_batched_deltas() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 0);
        for id in 0..FULL_LIST_MAX {
            joined(&mut room, id, &format!("u{id:03}"));
        }
        let mut out = Vec::new();
        room.join(100, "new1").unwrap();
        room.join(101, "new2").unwrap();
        room.leave(3);
        room.flush_presence(&mut out);
        let kinds: Vec<_> = sent(&out).iter().map(|o| (o.to.clone(), parse(o))).collect();
        assert_eq!(kinds[0], (To::Many(vec![100, 101]), json!({"ServerName": "Ks"})));
        assert_eq!(kinds[1].0, To::Many(vec![100, 101]));
        assert_eq!(kinds[1].1["Users"].as_array().unwrap().len(), FULL_LIST_MAX + 1);
        assert_eq!(kinds[2], (To::Everyone, json!({"msgType": "UsersLeft", "Users": ["u003"]})));
        assert_eq!(
            kinds[3],
            (To::Everyone, json!({"msgType": "UsersJoined", "Users": ["new1", "new2"]}))
        );
        assert_eq!(sent(&out).len(), 4);
        room.flush_presence(&mut out);
        assert_eq!(sent(&out).len(), 4, "nothing new to announce");
    }

    #[test]
    fn join_then_leave_before_flush_is_silent_for_others() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 0);
        for id in 0..40 {
            joined(&mut room, id, &format!("u{id}"));
        }
        room.join(50, "ghost").unwrap();
        room.leave(50);
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        assert!(sent(&out).is_empty(), "{out:?}");
        room.leave(7);
        room.join(7, "u7").unwrap();
        room.flush_presence(&mut out);
        assert!(sent(&out).iter().all(|o| !o.json.contains("UsersLeft")), "{out:?}");
    }

    #[test]
    fn leave_keeps_delivery_list_consistent() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 0);
        for (id, name) in ["a", "b", "c", "d"].iter().enumerate() {
            joined(&mut room, id, name);
        }
        room.leave(0);
        room.leave(2);
        let mut members = room.local_members().to_vec();
        members.sort();
        assert_eq!(members, vec![1, 3]);
        assert_eq!(room.name_of(3), Some("d"));
        room.leave(3);
        assert_eq!(room.local_members(), &[1]);
        room.join(9, "a").unwrap();
        assert_eq!(room.online(), 2);
    }

    #[test]
    fn routes_broadcasts_and_private_messages() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 0);
        joined(&mut room, 1, "alice");
        joined(&mut room, 2, "bob");
        let mut out = Vec::new();
        room.handle(1, Request::Broadcast { text: "hi".into() }, &mut out);
        assert_eq!(sent(&out)[0].to, To::Everyone);
        assert_eq!(
            parse(&sent(&out)[0]),
            json!({"msgType": "Broadcast", "SrcUser": "alice", "text": "hi"})
        );
        out.clear();
        let pm = Request::PrivateMessage { target: "bob".into(), text: "secret".into() };
        room.handle(1, pm, &mut out);
        assert_eq!(sent(&out)[0].to, To::One(2));
        assert_eq!(
            parse(&sent(&out)[0]),
            json!({"msgType": "PrivateMessage", "SrcUser": "alice", "text": "secret"})
        );
        out.clear();
        let pm = Request::PrivateMessage { target: "carol".into(), text: "x".into() };
        room.handle(1, pm, &mut out);
        assert_eq!(sent(&out)[0].to, To::One(1));
        assert_eq!(parse(&sent(&out)[0])["code"], "user_offline");
        assert_eq!(parse(&sent(&out)[0])["TgtUser"], "carol");
        out.clear();
        room.handle(2, Request::OnlineUsers, &mut out);
        assert_eq!(sent(&out)[0].to, To::One(2));
        assert_eq!(parse(&sent(&out)[0])["Users"], json!(["alice", "bob"]));
    }

    #[test]
    fn a_target_too_long_to_be_a_name_is_offline_unnormalized() {
        for mode in [Mode::Standalone, Mode::Node(Link::Up)] {
            let mut room = Room::new("L", "", History::new(0, 0), 0);
            room.set_mode(mode);
            joined(&mut room, 1, "alice");
            let target = "x".repeat(60_000);
            let before = names::normalized();
            let mut out = Vec::new();
            room.handle(1, Request::PrivateMessage { target, text: "x".into() }, &mut out);
            assert_eq!(names::normalized(), before, "the target was not normalized");
            let error = parse(&sent(&out)[0]);
            assert_eq!(error["code"], "user_offline");
            assert_eq!(error["TgtUser"], format!("{}…", "x".repeat(32)));
        }
    }

    #[test]
    fn keys_are_relayed_handed_to_joiners_and_forgotten_on_leave() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 0);
        joined(&mut room, 1, "alice");
        joined(&mut room, 2, "bob");
        let mut out = Vec::new();
        room.handle(1, Request::PublicKey { key: "KA".into() }, &mut out);
        assert_eq!(sent(&out)[0].to, To::Everyone);
        assert_eq!(
            parse(&sent(&out)[0]),
            json!({"msgType": "PublicKey", "SrcUser": "alice", "key": "KA"})
        );

        let out = joined(&mut room, 3, "carol");
        let keys = sent(&out).into_iter().find(|o| o.json.contains("PublicKeys")).unwrap();
        assert_eq!(keys.to, To::Many(vec![3]));
        assert_eq!(parse(&keys), json!({"msgType": "PublicKeys", "Keys": {"alice": "KA"}}));

        room.leave(1);
        let out = joined(&mut room, 4, "dave");
        assert!(sent(&out).iter().all(|o| !o.json.contains("KA")), "{out:?}");
        room.join(5, "alice").unwrap();
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        assert!(
            sent(&out).iter().all(|o| !o.json.contains("KA")),
            "a returning user has no key yet"
        );
    }

    #[test]
    fn history_replays_recent_broadcasts_to_joiners_only() {
        let mut room = Room::new("Ks", "", History::new(3, 1 << 19), 1 << 20);
        joined(&mut room, 1, "alice");
        let mut out = Vec::new();
        for i in 0..5 {
            room.handle(1, Request::Broadcast { text: format!("m{i}") }, &mut out);
        }
        let pm = Request::PrivateMessage { target: "alice".into(), text: "secret".into() };
        room.handle(1, pm, &mut out);
        let out = joined(&mut room, 2, "bob");
        let replays: Vec<_> =
            sent(&out).into_iter().filter(|o| o.json.contains("\"history\"")).collect();
        assert_eq!(replays.len(), 3);
        for (i, o) in replays.iter().enumerate() {
            assert_eq!(o.to, To::Many(vec![2]));
            assert_eq!(
                parse(o),
                json!({"msgType": "Broadcast", "SrcUser": "alice", "text": format!("m{}", i + 2), "history": true})
            );
        }
        assert!(sent(&out).iter().all(|o| !o.json.contains("secret")));
        // The welcome comes first, the replays after the list.
        assert!(
            sent(&out)[0].json.contains("ServerName") && sent(&out)[1].json.contains("OnlineUsers")
        );

        // The byte budget drops the oldest first.
        let mut tight = Room::new("Ks", "", History::new(50, 250), 500);
        joined(&mut tight, 1, "alice");
        for i in 0..5 {
            tight.handle(
                1,
                Request::Broadcast { text: format!("{i}{}", "z".repeat(40)) },
                &mut Vec::new(),
            );
        }
        let out = joined(&mut tight, 2, "bob");
        let replays: Vec<_> =
            sent(&out).into_iter().filter(|o| o.json.contains("\"history\"")).collect();
        assert_eq!(replays.len(), 2, "two 107-byte replays fit 250 bytes");
        assert!(replays[0].json.contains("\"3z") && replays[1].json.contains("\"4z"));

        let mut off = Room::new("Ks", "", History::new(0, 0), 0);
        joined(&mut off, 1, "alice");
        off.handle(1, Request::Broadcast { text: "gone".into() }, &mut Vec::new());
        assert!(joined(&mut off, 2, "bob").iter().all(|o| !o.json.contains("gone")));
    }

    #[test]
    fn a_large_snapshot_is_streamed_in_bounded_parts() {
        // 16 KiB per user: parts of at most 2 KiB; 300 users with 1000-byte keys.
        let mut room = Room::new("Ks", "", History::new(0, 0), 16 * 1024);
        for id in 0..300 {
            room.join(id, &format!("user{id:03}")).unwrap();
        }
        room.flush_presence(&mut Vec::new());
        while let Some(&id) = room.receiving().first() {
            while room.next_snapshot_part(id).is_some() {}
        }
        for id in 0..300 {
            let key = format!("{id:03}{}", "k".repeat(crate::protocol::MAX_KEY_BYTES - 3));
            room.handle(id, Request::PublicKey { key }, &mut Vec::new());
        }
        let out = joined(&mut room, 500, "zed");
        assert_eq!(parse(&sent(&out)[0]), json!({"ServerName": "Ks"}));
        let first = parse(&sent(&out)[1]);
        assert_eq!(
            (first["msgType"].as_str(), first["more"].as_bool()),
            (Some("OnlineUsers"), Some(true))
        );
        assert!(sent(&out).iter().all(|o| o.json.len() <= 2048 + 64), "every part is bounded");
        assert_eq!(room.receiving(), &[500]);
        let mut users: Vec<String> = Vec::new();
        let mut keys = 0;
        let mut parts = vec![first];
        while let Some(json) = room.next_snapshot_part(500) {
            assert!(json.len() <= 2048 + crate::protocol::MAX_KEY_BYTES, "{}", json.len());
            parts.push(serde_json::from_str(&json).unwrap());
            if parts.len() == 100 {
                room.leave(299); // leaves while the snapshot streams: never sent after
            }
        }
        for part in &parts {
            match part["msgType"].as_str().unwrap() {
                "OnlineUsers" | "UsersJoined" => users.extend(
                    part["Users"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|u| u.as_str().unwrap().to_owned()),
                ),
                "PublicKeys" => keys += part["Keys"].as_object().unwrap().len(),
                other => panic!("{other}"),
            }
        }
        assert_eq!(users.len(), 301, "every name once");
        assert_eq!(keys, 299, "every key of a user still online once");
        assert!(room.receiving().is_empty());
        assert!(room.next_snapshot_part(500).is_none());
    }

    #[test]
    fn pending_presence_goes_out_before_the_next_message() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 0);
        joined(&mut room, 1, "alice");
        room.join(2, "bob").unwrap();
        let mut out = Vec::new();
        room.handle(2, Request::Broadcast { text: "hello".into() }, &mut out);
        assert_eq!(parse(&sent(&out)[0]), json!({"ServerName": "Ks"}));
        assert_eq!(parse(&sent(&out)[1])["msgType"], "OnlineUsers");
        assert_eq!(parse(&sent(&out)[2])["msgType"], "Broadcast");
    }

    fn remote(node: &str, name: &str) -> RemoteUser {
        RemoteUser { node: Rc::from(node), name: name.into(), key: None }
    }

    #[test]
    fn a_remote_user_back_with_a_key_has_it_sent_again() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 1 << 20);
        room.set_mode(Mode::Node(Link::Up));
        joined(&mut room, 1, "alice");
        let with_key = |key: &str| RemoteUser { key: Some(key.into()), ..remote("n2", "bob") };
        let keys_sent = |room: &mut Room, user: RemoteUser| {
            room.add_remote(user).unwrap();
            let mut out = Vec::new();
            room.flush_presence(&mut out);
            let keys = sent(&out).into_iter().filter(|o| o.kind == Kind::PublicKey);
            keys.map(|o| parse(&o)["key"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(
            keys_sent(&mut room, with_key("K1")),
            ["K1"],
            "a resync that brings bob with his key"
        );
        assert_eq!(
            keys_sent(&mut room, with_key("K1")),
            Vec::<String>::new(),
            "the same key: nothing new"
        );
        assert_eq!(keys_sent(&mut room, with_key("K2")), ["K2"]);
        room.remove_node("n2");
        assert_eq!(keys_sent(&mut room, with_key("K2")), ["K2"], "back after leaving");
    }

    #[test]
    fn a_clustered_room_proposes_what_the_cluster_must_order() {
        let mut room = Room::new("Ks", "", History::new(5, 1 << 19), 1 << 20);
        room.set_mode(Mode::Node(Link::Down));
        room.set_mode(Mode::Node(Link::Up));
        joined(&mut room, 1, "alice");
        room.add_remote(remote("n2", "bob")).unwrap();
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        room.handle(1, Request::Broadcast { text: "hi".into() }, &mut out);
        room.handle(1, Request::PublicKey { key: "KA".into() }, &mut out);
        let pm = |target: &str| Request::PrivateMessage { target: target.into(), text: "s".into() };
        room.handle(1, pm("BOB"), &mut out);
        room.handle(1, pm("alice"), &mut out);
        // Nothing takes effect now: even a private message to a local user
        // takes the cluster's order (its number is the same on every node).
        assert!(sent(&out).iter().all(|o| !o.json.contains("Broadcast")));
        assert!(sent(&out).iter().all(|o| !o.json.contains("KA")));
        assert!(sent(&out).iter().all(|o| !o.json.contains("PrivateMessage")));
        let proposals: Vec<Proposed> = proposed(&out);
        assert_eq!(
            proposals,
            [
                Proposed::Say { name: Rc::from("alice"), text: "hi".into() },
                Proposed::PublicKey { name_key: Rc::from("alice"), key: "KA".into() },
                Proposed::Private {
                    to_key: Rc::from("bob"),
                    to_name: Rc::from("bob"),
                    from: Rc::from("alice"),
                    text: "s".into()
                },
                Proposed::Private {
                    to_key: Rc::from("alice"),
                    to_name: Rc::from("alice"),
                    from: Rc::from("alice"),
                    text: "s".into()
                },
            ]
        );
        // They take effect when the cluster hands them back.
        let mut out = Vec::new();
        room.say("alice", "hi", &mut out);
        assert_eq!(sent(&out)[0].to, To::Everyone);
        assert!(joined(&mut room, 2, "carol").iter().any(|o| o.json.contains("\"history\":true")));

        room.set_mode(Mode::Node(Link::Down));
        let mut out = Vec::new();
        room.handle(1, Request::Broadcast { text: "lost?".into() }, &mut out);
        room.handle(1, pm("bob"), &mut out);
        room.handle(1, pm("carol"), &mut out);
        assert_eq!(parse(&sent(&out)[0])["code"], "cluster_unavailable");
        assert_eq!(parse(&sent(&out)[1])["code"], "cluster_unavailable");
        assert_eq!(sent(&out)[2].to, To::One(2), "a local user is reached without the cluster");
        assert!(proposed(&out).is_empty());
    }

    #[test]
    fn other_nodes_users_are_listed_announced_and_resynced() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 1 << 20);
        room.set_mode(Mode::Node(Link::Down));
        room.set_mode(Mode::Node(Link::Up));
        joined(&mut room, 1, "alice");
        for name in ["bob", "carol"] {
            room.add_remote(remote("n2", name)).unwrap();
        }
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        assert_eq!(parse(&sent(&out)[0])["Users"], json!(["alice", "bob", "carol"]));
        assert_eq!((room.online(), room.local_members()), (3, &[1][..]));
        assert_eq!(room.check_name("Bob").unwrap_err().code, ErrorCode::NameTaken);
        // A remote claim of a local user's name is a conflict for the server.
        assert_eq!(room.add_remote(remote("n3", "ALICE")), Err(1));

        // Resync: carol is gone, dave came, bob moved to another node.
        let conflicts = room.resync(vec![remote("n3", "bob"), remote("n2", "dave")]);
        assert!(conflicts.is_empty());
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        assert_eq!(parse(&sent(&out)[0])["Users"], json!(["alice", "bob", "dave"]));
        assert_eq!(
            room.resync(vec![remote("n3", "bob"), remote("n2", "dave")]),
            Vec::<ConnId>::new()
        );
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        assert!(sent(&out).is_empty(), "the same view again announces nothing: {out:?}");

        assert_eq!(room.remove_node("n3"), 1);
        assert_eq!(room.remove_remote("alice"), None, "a local user is not removed as remote");
        room.flush_presence(&mut out);
        assert_eq!(parse(&sent(&out)[0])["Users"], json!(["alice", "dave"]));
        let local = room.local_users();
        assert_eq!(local.len(), 1);
        assert_eq!((&*local[0].name_key, &*local[0].name), ("alice", "alice"));
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A room with resuming on, and `name` in it as a resumable session
    /// (token "T-name"); what its welcome said.
    fn resumable(room: &mut Room, id: ConnId, name: &str) -> Value {
        let welcome = Welcome::Resumable { token: format!("T-{name}") };
        room.join_as(id, name, Role::Member, welcome).unwrap();
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        let mine = sent(&out).into_iter().find(|o| o.to == To::One(id)).unwrap();
        parse(&mine)
    }

    fn ask(name: &str, token: &str, epoch: &str, seq: u64) -> Ask {
        Ask { name: name.into(), token: token.into(), epoch: epoch.into(), seq }
    }

    /// The numbered messages among `out` for `id`, as (seq, JSON).
    fn numbered_for(out: &[Effect], id: ConnId) -> Vec<(u64, Value)> {
        let to_id = |o: &Outbound| match &o.to {
            To::One(i) => *i == id,
            To::Many(ids) => ids.contains(&id),
            To::Everyone => true,
        };
        sent(out)
            .into_iter()
            .filter(|o| to_id(o))
            .filter_map(|o| Some((o.seq?, parse(&o))))
            .collect()
    }

    #[test]
    fn a_dropped_session_stays_online_and_gets_exactly_what_it_missed() {
        let mut room = Room::new("Ks", "", History::new(5, 1 << 16), 1 << 20).resumable(10);
        let welcome = resumable(&mut room, 1, "alice");
        let (epoch, seq) = (welcome["resume"]["epoch"].clone(), welcome["resume"]["seq"].clone());
        assert_eq!(welcome["resume"]["token"], "T-alice");
        assert_eq!(seq, 1, "the position of alice's own join");
        joined(&mut room, 2, "bob");
        let mut out = Vec::new();
        room.say("bob", "seen", &mut out);
        let last_seen = numbered_for(&out, 1).last().unwrap().0;
        // The connection drops: no leave for anyone.
        let (now, grace) = (Instant::now(), std::time::Duration::from_secs(60));
        assert!(room.detach(1, now + grace, LOOPBACK, &mut out));
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        assert!(sent(&out).is_empty(), "{out:?}");
        assert_eq!(room.online(), 2);
        assert_eq!(room.check_name("alice").unwrap_err().code, ErrorCode::NameTaken);
        // What it misses: broadcasts, a private message to it; not one to another.
        let mut out = Vec::new();
        room.say("bob", "m1", &mut out);
        room.handle(
            2,
            Request::PrivateMessage { target: "alice".into(), text: "pm".into() },
            &mut out,
        );
        joined(&mut room, 3, "carol");
        room.handle(
            2,
            Request::PrivateMessage { target: "carol".into(), text: "x".into() },
            &mut out,
        );
        room.say("carol", "m2", &mut out);
        // A wrong token is refused; the right one resumes on connection 4.
        let epoch = epoch.as_str().unwrap();
        let mut out = Vec::new();
        let wrong =
            room.resume(4, &ask("alice", "T-bob", epoch, last_seen), false, Role::Member, &mut out);
        assert_eq!(wrong, Resumed::Refused);
        assert!(out.is_empty());
        let right = ask("Alice", "T-alice", epoch, last_seen);
        assert_eq!(
            room.resume(4, &right, false, Role::Member, &mut out),
            Resumed::Yes { took_over: None, exact: true }
        );
        let messages = sent(&out);
        let resumed = parse(&messages[0]);
        assert_eq!(
            (resumed["msgType"].as_str(), resumed["missed"].as_u64()),
            (Some("Resumed"), Some(3))
        );
        let replay = numbered_for(&out, 4);
        let texts: Vec<&str> = replay.iter().filter_map(|(_, m)| m["text"].as_str()).collect();
        assert_eq!(texts, ["m1", "pm", "m2"]);
        let seqs: Vec<u64> = replay.iter().map(|(s, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] <= w[1]) && seqs[0] > last_seen, "{seqs:?}");
        let list = &replay.last().unwrap().1;
        assert_eq!(list["Users"], json!(["alice", "bob", "carol"]));
        assert_eq!(room.local_members(), &[2, 3, 4][..]);
        // Resuming again from a position too old for the journal: a reset.
        let mut out = Vec::new();
        room.journal.forget_to(room.seq);
        let again = ask("alice", "T-alice", epoch, last_seen);
        assert_eq!(
            room.resume(5, &again, false, Role::Member, &mut out),
            Resumed::Yes { took_over: Some(4), exact: false }
        );
        let resumed = parse(&sent(&out)[0]);
        assert_eq!(resumed["reset"], true, "{resumed}");
        assert!(sent(&out).iter().any(|o| o.json.contains("\"history\":true")));
        // Another epoch is a reset too; a name nobody holds is not resumed.
        let mut out = Vec::new();
        let other = ask("alice", "T-alice", "other", room.seq);
        room.resume(6, &other, false, Role::Member, &mut out);
        assert_eq!(parse(&sent(&out)[0])["reset"], true);
        assert_eq!(
            room.resume(7, &ask("zed", "T", epoch, 0), false, Role::Member, &mut out),
            Resumed::NotHeld
        );
    }

    #[test]
    fn an_away_session_leaves_when_its_grace_ends() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 1 << 20).resumable(2);
        resumable(&mut room, 1, "alice");
        joined(&mut room, 2, "bob");
        let now = Instant::now();
        let mut out = Vec::new();
        assert!(room.detach(1, now + std::time::Duration::from_secs(5), LOOPBACK, &mut out));
        assert!(!room.detach(2, now, LOOPBACK, &mut out), "bob has no token: he leaves as always");
        room.leave(2);
        assert!(room.expire(now, &mut out).is_empty());
        let gone = room.expire(now + std::time::Duration::from_secs(5), &mut out);
        assert_eq!(gone.iter().map(|k| &**k).collect::<Vec<_>>(), ["alice"]);
        room.flush_presence(&mut out);
        assert_eq!(room.online(), 0);
        assert_eq!(room.resumable, 0);
        // More away than allowed: the longest away leaves at once.
        for (id, name) in [(3, "c"), (4, "d"), (5, "e")] {
            resumable(&mut room, id, name);
        }
        let mut out = Vec::new();
        for id in [3, 4, 5] {
            room.detach(id, now + std::time::Duration::from_secs(60), LOOPBACK, &mut out);
        }
        assert_eq!((room.away(), room.online()), (2, 2));
        assert!(room.check_name("c").is_ok(), "c was away longest");
    }

    #[test]
    fn plain_sessions_get_no_numbers_and_standalone_keeps_no_journal_for_them() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 1 << 20).resumable(10);
        let welcome = joined(&mut room, 1, "alice");
        assert_eq!(parse(&welcome[0]), json!({"ServerName": "Ks"}));
        let mut out = Vec::new();
        room.say("alice", "hi", &mut out);
        assert!(room.journal.is_empty(), "nobody may resume: nothing kept");
        let message = &sent(&out)[0];
        assert_eq!(message.json, r#"{"msgType":"Broadcast","SrcUser":"alice","text":"hi"}"#);
        let numbered = message.sequenced_json().unwrap();
        assert_eq!(numbered, format!(r#"{{"seq":{},{}"#, message.seq.unwrap(), &message.json[1..]));
        resumable(&mut room, 2, "bob");
        room.say("alice", "kept", &mut out);
        assert!(!room.journal.is_empty());
        let kept = room.journal.bytes();
        let pm = |to: &str| Request::PrivateMessage { target: to.into(), text: "x".repeat(900) };
        room.handle(2, pm("alice"), &mut out);
        assert_eq!(room.journal.bytes(), kept, "to a session that cannot resume: not kept");
        room.handle(1, pm("bob"), &mut out);
        assert!(room.journal.bytes() > kept + 900, "to one that can: kept");
    }

    /// A resumable member who has been welcomed (so that a drop keeps them).
    fn joined_resumable(room: &mut Room, id: ConnId, name: &str) {
        let welcome = Welcome::Resumable { token: format!("token of {name}") };
        room.join_as(id, name, Role::Member, welcome).unwrap();
        room.flush_presence(&mut Vec::new());
    }

    fn released(out: &Effects) -> Vec<String> {
        let release = |effect: &Effect| match effect {
            Effect::Cluster(ClusterCall::Release { name_key }) => Some(name_key.clone()),
            _ => None,
        };
        out.iter().filter_map(release).collect()
    }

    /// In a cluster an away session that ends, however it ends, frees its
    /// name on Redis: at its deadline, and also when more sessions are away
    /// than `max_away` and the longest-away one leaves early.
    #[test]
    fn an_away_session_that_ends_frees_its_name_in_a_cluster() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 1 << 20).resumable(1);
        room.set_mode(Mode::Node(Link::Up));
        joined_resumable(&mut room, 1, "alice");
        joined_resumable(&mut room, 2, "bob");
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(60);
        let mut out = Vec::new();
        assert!(room.detach(1, later, LOOPBACK, &mut out));
        assert!(released(&out).is_empty());
        assert!(room.detach(2, later, LOOPBACK, &mut out));
        assert_eq!(released(&out), ["alice"], "alice left early to make room");
        assert_eq!(room.away(), 1);
        let mut out = Vec::new();
        assert_eq!(room.expire(later, &mut out), [Rc::from("bob")]);
        assert_eq!(released(&out), ["bob"]);
        assert_eq!((room.away(), room.online()), (0, 0));
    }

    /// The cluster gives the name of a session away here to someone else
    /// (under another spelling of it): the away session is over, and its
    /// spelling is not listed next to the new one's.
    #[test]
    fn a_name_the_cluster_gives_away_is_listed_once() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 1 << 20).resumable(4);
        room.set_mode(Mode::Node(Link::Up));
        joined(&mut room, 1, "carol");
        joined_resumable(&mut room, 2, "Alice");
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert!(room.detach(2, later, LOOPBACK, &mut Vec::new()));
        room.add_remote(remote("n2", "alice")).unwrap();
        let mut out = Vec::new();
        room.flush_presence(&mut out);
        assert_eq!(parse(&sent(&out)[0])["Users"], json!(["alice", "carol"]));
        assert_eq!((room.online(), room.away()), (2, 0));
        assert_eq!(room.members().count(), 2);
    }

    #[test]
    fn what_was_decided_before_a_resume_is_not_for_the_resumed_connection() {
        let mut room = Room::new("Ks", "", History::new(0, 0), 1 << 20).resumable(10);
        let welcome = resumable(&mut room, 1, "alice");
        let epoch = welcome["resume"]["epoch"].as_str().unwrap().to_owned();
        let mut out = Vec::new();
        room.detach(1, Instant::now() + std::time::Duration::from_secs(9), LOOPBACK, &mut out);
        // In the same round: a join not announced yet, and a broadcast.
        room.join(2, "bob").unwrap();
        room.say("bob", "before", &mut out);
        let seq = room.seq;
        let asked = ask("alice", "T-alice", &epoch, seq);
        room.resume(3, &asked, false, Role::Member, &mut out);
        let listed = out.iter().position(|e| *e == Effect::LoggedIn(3)).expect("LoggedIn(3)");
        let everyone = |e: &Effect| matches!(e, Effect::Send(Outbound { to: To::Everyone, .. }));
        assert!(out[..listed].iter().any(everyone), "the broadcast and bob's join: {out:?}");
        assert!(!out[listed..].iter().any(everyone), "nothing for everyone after: {out:?}");
        let first = out[listed..].iter().find_map(|e| match e {
            Effect::Send(o) if o.to == To::One(3) => Some(parse(o)),
            _ => None,
        });
        assert_eq!(first.unwrap()["missed"], 0, "the broadcast was before its position");
    }
}
