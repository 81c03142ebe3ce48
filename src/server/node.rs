//! The server as one node of a cluster: what it hands the cluster (claims,
//! proposals, releases, its users) and what it does with the cluster's
//! notes (events applied to the room in the cluster's order, refusals,
//! resyncs), which decide effects like any other input.

use std::time::Instant;

use log::{debug, info, warn};
use mio::event::Source;

use super::Server;
use crate::cluster::{Cluster, Event, Note, Origin};
use crate::effect::{ClusterCall, ConnId, Ending, Push, To};
use crate::protocol::{ErrorCode, Rejection, Reply};
use crate::room::{Link, Mode, RemoteUser};
use crate::session::{Cx, Session};
use crate::transport::Socket;

impl<S: Socket + Source> Server<S> {
    /// Makes this server one node of the cluster: it connects at once and
    /// serves its users meanwhile (what needs the cluster waits for it).
    pub fn join_cluster(&mut self, mut cluster: Cluster) {
        if let Some(path) = &self.state_file {
            info!("state_file {} is not used in a cluster: bans are kept in Redis", path.display());
        }
        self.room.set_mode(Mode::Node(Link::Down));
        cluster.tick(self.poll.registry(), Instant::now());
        self.cluster = Some(cluster);
    }

    /// Carries out what a local connection asks of the cluster. (What the
    /// cluster notes about it is taken by `settle`, never from here.)
    pub(super) fn call_cluster(&mut self, call: ClusterCall, now: Instant) {
        let origin = |id: ConnId| Some(Origin { id, serial: self.clients.get(id)?.serial });
        let Some(cluster) = &mut self.cluster else { return };
        match call {
            ClusterCall::Claim { conn, name, key, token_hash } => {
                if let Some(origin) = origin(conn) {
                    cluster.claim(origin, &key, &name, token_hash, now);
                }
            }
            ClusterCall::Resume { conn, name, key, token_hash, new_token_hash, locked_out } => {
                if let Some(origin) = origin(conn) {
                    let new = (new_token_hash.as_deref(), locked_out);
                    cluster.resume(origin, (&key, &name), &token_hash, new, now);
                }
            }
            ClusterCall::Propose { from, what } => {
                if let Some(origin) = origin(from) {
                    cluster.propose(origin, what, now);
                }
            }
            ClusterCall::Release { name_key } => cluster.leave(&name_key, now),
        }
    }

    /// Acts on what the cluster has noted since the last call (and hands it
    /// this node's users when it asks for them); `false` if nothing.
    pub(super) fn take_cluster_notes(&mut self, now: Instant) -> bool {
        let Some(cluster) = &mut self.cluster else { return false };
        if cluster.wants_sync() {
            cluster.sync(&self.room.local_users(), now);
        }
        let notes = cluster.take_notes();
        if notes.is_empty() {
            return false;
        }
        for note in notes {
            // What an event makes is numbered as the event is.
            let seq = match &note {
                Note::Event(seq, _) => Some(*seq),
                _ => None,
            };
            self.room.at_event(seq);
            self.on_note(note, now);
            self.room.at_event(None);
        }
        true
    }

    fn on_note(&mut self, note: Note, now: Instant) {
        let me = match &self.cluster {
            Some(cluster) => cluster.node().clone(),
            None => return,
        };
        let out = &mut self.effects;
        match note {
            Note::Event(_, Event::Join { node, conn, key, name }) if *node == *me => {
                let claiming = Origin::parse(&conn).filter(|o| {
                    self.clients
                        .get(o.id)
                        .is_some_and(|c| c.serial == o.serial && c.session.is_claiming())
                });
                match claiming {
                    Some(origin) => {
                        // Redis gave it: a stale holder from a dead node goes.
                        self.room.remove_remote(&key);
                        self.with_session(origin.id, now, |session, cx| session.claimed(&name, cx));
                    }
                    // Claimed for a connection that has gone since.
                    None => {
                        if let Some(cluster) = &mut self.cluster {
                            cluster.leave(&key, now);
                        }
                    }
                }
            }
            Note::Event(_, Event::Join { node, name, .. }) => {
                self.add_remote(RemoteUser { node: node.into(), name, key: None }, now);
            }
            Note::Event(_, Event::Resume { node, conn, key, .. }) if *node == *me => {
                let resuming = Origin::parse(&conn).filter(|o| {
                    self.clients
                        .get(o.id)
                        .is_some_and(|c| c.serial == o.serial && c.session.is_claiming())
                });
                match resuming {
                    Some(origin) => {
                        self.with_session(origin.id, now, |session, cx| {
                            session.resumed_in_cluster(cx)
                        });
                    }
                    // Resumed for a connection that has gone since: the
                    // session is this node's, away (or, if it was not, left).
                    None => {
                        if !self.room.hold_away(&key, now + self.limits.resume_grace)
                            && let Some(cluster) = &mut self.cluster
                        {
                            cluster.leave(&key, now);
                        }
                    }
                }
            }
            Note::Event(_, Event::Resume { node, key, name, .. }) => {
                // Not known here: it left here just as it resumed there
                // (a goodbye racing the resume): it is that node's user.
                if !self.room.is_online(&key) {
                    return self.add_remote(RemoteUser { node: node.into(), name, key: None }, now);
                }
                if let Some(old) = self.room.resumed_elsewhere(&key, node.into()) {
                    let why = Rejection::new(
                        ErrorCode::ResumedElsewhere,
                        "your session was resumed by another connection",
                    );
                    self.end(old, Ending::policy("resumed elsewhere", why), now);
                }
            }
            Note::Event(_, Event::Leave { node, key }) => {
                if *node != *me {
                    self.room.remove_remote(&key);
                }
            }
            Note::Event(_, Event::Say { name, text })
                if self.room.takes_from_cluster(false, &text) =>
            {
                self.room.say(&name, &text, out)
            }
            Note::Event(_, Event::PublicKey { key, pk, .. }) => {
                self.room.set_public_key(&key, &pk, out)
            }
            Note::Event(_, Event::Private { to, from, text })
                if self.room.takes_from_cluster(true, &text) =>
            {
                self.room.deliver_private(&to, &from, &text, out)
            }
            // Plaintext from a node without `e2e_room`: not shown here.
            Note::Event(_, Event::Say { .. } | Event::Private { .. }) => {
                debug!("cluster: plaintext from another node dropped (this room is e2e_room)");
            }
            Note::Event(_, Event::Node { node, users }) => {
                if *node == *me {
                    return;
                }
                self.room.remove_node(&node);
                let node: std::rc::Rc<str> = node.into();
                for (_, name, key) in Event::node_users(&users) {
                    self.add_remote(RemoteUser { node: node.clone(), name, key }, now);
                }
            }
            Note::Event(_, Event::Dead { node }) => {
                let gone = self.room.remove_node(&node);
                info!("cluster: node {node} stopped renewing its lease: {gone} of its users left");
            }
            Note::Event(_, Event::Moderate { node, conn, by, at, action }) => {
                let done = self.moderated(&by, at, &action);
                if let Err(why) = &done {
                    info!("cluster: a moderator's action from node {node} not done here: {why}");
                }
                // The proposer answers the `ctl` request that asked, or the
                // moderator in the room (still the same connection).
                match Origin::parse(&conn).filter(|_| *node == *me) {
                    Some(origin) if origin.ticket().is_some() => {
                        if let Some(ticket) = origin.ticket() {
                            self.answer_held(ticket, done);
                        }
                    }
                    Some(origin)
                        if self
                            .clients
                            .get(origin.id)
                            .is_some_and(|c| c.serial == origin.serial) =>
                    {
                        self.moderated_from_room(origin.id, &by, done, now);
                    }
                    _ => {}
                }
            }
            Note::Refused { origin, why } if origin.ticket().is_some() => {
                if let Some(ticket) = origin.ticket() {
                    self.answer_held(ticket, Err(why.text));
                }
            }
            Note::Refused { origin, why } => {
                self.with_origin(origin, now, |session, cx| {
                    if session.is_claiming() {
                        session.claim_failed(why, cx)
                    } else {
                        cx.out.refuse(cx.id, why)
                    }
                });
            }
            Note::Synced { users, history, conflicts, rules, epoch, seq } => {
                self.room.set_mode(Mode::Node(Link::Up));
                self.room.synced(&epoch, seq);
                self.take_cluster_rules(rules);
                self.room.set_history(&history);
                let mut lost = self.room.resync(users);
                lost.extend(conflicts.iter().filter_map(|key| self.room.local_id(key)));
                let here = self.room.local_members().len() - lost.len();
                info!(
                    "cluster: {here} local users registered, {} online in all",
                    self.room.online()
                );
                for id in lost {
                    self.lost_name(id, now);
                }
            }
            Note::Down { why } => {
                self.room.set_mode(Mode::Node(Link::Down));
                let text = format!(
                    "this server lost its link to the rest of the room ({why}): messages sent \
                     meanwhile may be missing (yours too, if no copy of it came back); sending \
                     is paused until the link is back"
                );
                let code = ErrorCode::MessagesLost;
                self.stats.refused(code);
                out.send(
                    To::Everyone,
                    &Reply::Error { code: code.as_str(), text: &text, target: None },
                );
                self.answer_all_held();
            }
        }
    }

    fn add_remote(&mut self, user: RemoteUser, now: Instant) {
        if let Err(id) = self.room.add_remote(user) {
            self.lost_name(id, now);
        }
    }

    /// The cluster gave a local user's name to someone else (they were
    /// cut off from it meanwhile): that user is logged out.
    fn lost_name(&mut self, id: ConnId, now: Instant) {
        let Some(name) = self.room.name_of(id).map(str::to_owned) else { return };
        warn!("cluster: {name:?} is online on another node: logging out the user here");
        let why = Rejection::new(
            ErrorCode::NameTaken,
            format!("{name:?} logged in on another server of this room while this one was cut off"),
        );
        self.end(id, Ending::policy("name taken", why), now);
    }

    fn with_origin(&mut self, origin: Origin, now: Instant, f: impl FnOnce(&mut Session, &mut Cx)) {
        if self.clients.get(origin.id).is_some_and(|c| c.serial == origin.serial) {
            self.with_session(origin.id, now, f);
        }
    }
}
