//! Where effects are carried out: the one place that acts on what the
//! sessions, the room and the cluster's notes decided. Messages are framed
//! once and queued to every recipient; sessions end here, whoever asked.

use std::time::Instant;

use log::info;
use mio::event::Source;
use slab::Slab;

use super::{Client, Server, WRITE_GATHER, schedule};
use crate::effect::{ConnId, Effect, Ending, Outbound, To};
use crate::outbox::{self, SharedFrame};
use crate::peerlog::Class;
use crate::transport::Socket;

impl<S: Socket + Source> Server<S> {
    /// Carries out every effect decided so far, in order, and acts on what
    /// the cluster noted meanwhile (its notes are input too: they may
    /// decide more). Every entry point of the loop ends with this.
    pub(super) fn settle(&mut self, now: Instant) {
        loop {
            if self.effects.is_empty() && !self.take_cluster_notes(now) {
                return;
            }
            let mut batch = std::mem::take(&mut self.applying);
            std::mem::swap(&mut batch, &mut self.effects);
            for effect in batch.drain(..) {
                self.apply(effect, now);
            }
            self.applying = batch;
        }
    }

    fn apply(&mut self, effect: Effect, now: Instant) {
        match effect {
            Effect::Send(message) => self.deliver(message, now),
            Effect::Refuse { conn, why } => {
                self.stats.refused(why.code);
                if let Some(client) = self.clients.get_mut(conn) {
                    client.conn.send_error(&why, now);
                    schedule(&mut self.to_flush, client, conn);
                }
            }
            Effect::Ping(conn) => {
                if let Some(client) = self.clients.get_mut(conn) {
                    client.conn.send_control(outbox::ping_frame(), now);
                    schedule(&mut self.to_flush, client, conn);
                }
            }
            Effect::LoggedIn(conn) => {
                if let Some(client) = self.clients.get_mut(conn) {
                    client.conn.allow_messages(self.limits.max_message_bytes);
                    client.joined = Some(std::time::SystemTime::now());
                }
            }
            Effect::End { conn, how } => self.end(conn, how, now),
            Effect::Cluster(call) => self.call_cluster(call, now),
            Effect::Count(count) => self.stats.record(count),
            Effect::Moderate { by, action } => self.moderate_from_room(by, action, now),
            #[cfg(feature = "testing")]
            Effect::Echo { conn, message } => {
                let frame = match &message {
                    tungstenite::Message::Binary(data) => outbox::binary_frame(data),
                    other => outbox::text_frame(other.to_text().unwrap_or_default()),
                };
                let Some(client) = self.clients.get_mut(conn) else { return };
                let overflow = client.conn.send(&frame).is_err();
                schedule(&mut self.to_flush, client, conn);
                if overflow {
                    self.end(conn, Ending::TooSlow, now);
                }
            }
        }
    }

    /// The one place a session ends, whoever asked (the session itself, the
    /// connection, a slow read, the cluster, shutdown): the session leaves
    /// the room, then its connection closes as `how` says.
    pub(super) fn end(&mut self, id: ConnId, how: Ending, now: Instant) {
        let mut ended = false;
        self.with_session(id, now, |session, cx| ended = session.end(&how, cx));
        let Some(client) = self.clients.get_mut(id).filter(|_| ended) else { return };
        if let Some(code) = how.code() {
            self.stats.refused(code);
        }
        let conn = &mut client.conn;
        match how {
            Ending::Close { code, reason, why } => conn.close(code, reason, why.as_ref(), now),
            Ending::TooSlow => {
                if self.peer_log.allow(Class::Refusals, conn.peer.ip, now) {
                    info!(
                        "{}: slow reader over {} queued bytes, disconnecting",
                        conn.peer,
                        conn.queued()
                    );
                }
                conn.cut_off(now);
            }
            Ending::ShutDown => {
                conn.shut_down(now);
            }
            Ending::Lost { .. } => {}
        }
        schedule(&mut self.to_flush, client, id);
    }

    /// Frames a message once and queues it to its recipients; readers over
    /// their limit are cut off.
    ///
    /// A queue that passes another multiple of `WRITE_GATHER` (64 KiB, a
    /// quarter of `max_outbound_bytes` if less) is written at once, not at
    /// the end of the round: a round may read many users' bursts (a user is
    /// read until its own queue passes the high-water mark, and private
    /// messages or a cluster's events do not fill the sender's own), and
    /// queued whole, their sum could pass `max_outbound_bytes` of a reader
    /// who takes everything its socket is given. Each such write is as full
    /// as one of the round's (its gathered frames), so batching is kept; a
    /// reader whose socket is full costs one write that would block per
    /// 64 KiB queued, at most 16 before it is cut off.
    ///
    /// A numbered message goes to resumable sessions with its `seq` (one
    /// more frame, made once, only if one of them is a recipient).
    fn deliver(&mut self, message: Outbound, now: Instant) {
        let recipients = match &message.to {
            To::One(_) => 1,
            To::Many(ids) => ids.len(),
            To::Everyone => self.room.local_members().len(),
        };
        self.stats.delivered(message.kind, recipients as u64);
        let frame = outbox::text_frame(&message.json);
        let mut frames = Frames { plain: &frame, message: &message, made: None };
        let mut queues = Queues {
            every: (self.limits.max_outbound_bytes / 4).min(WRITE_GATHER),
            slow: Vec::new(),
            full: Vec::new(),
        };
        let clients = &mut self.clients;
        let mut send =
            |id: ConnId| enqueue(clients, &mut self.to_flush, &mut queues, id, &mut frames);
        match &message.to {
            To::One(id) => send(*id),
            To::Many(ids) => ids.iter().copied().for_each(send),
            To::Everyone => self.room.local_members().iter().copied().for_each(send),
        }
        for id in queues.full {
            self.flush(id, now);
            // Still on the round's list (queueing the frame put it there):
            // what is queued after this goes out with the round's writes.
            if let Some(client) = self.clients.get_mut(id) {
                client.conn.flush_scheduled = true;
            }
        }
        for id in queues.slow {
            self.end(id, Ending::TooSlow, now);
        }
    }

    /// Queues the next parts of joiners' snapshots while their queues are
    /// short, so a snapshot flows as fast as its reader takes it.
    pub(super) fn feed_snapshots(&mut self, now: Instant) {
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
                self.end(id, Ending::TooSlow, now);
            }
        }
    }
}

/// One message's frames: as it is, and with its `seq` for resumable
/// sessions (made and framed at the first of them: nothing when none is
/// a recipient).
struct Frames<'a> {
    plain: &'a SharedFrame,
    message: &'a Outbound,
    made: Option<SharedFrame>,
}

impl Frames<'_> {
    fn for_session(&mut self, sequenced: bool) -> &SharedFrame {
        if !sequenced || self.message.seq.is_none() {
            return self.plain;
        }
        let message = self.message;
        self.made.get_or_insert_with(|| match message.sequenced_json() {
            Some(json) => outbox::text_frame(&json),
            None => outbox::text_frame(&message.json),
        })
    }
}

/// What queueing one message left to do, by connection.
struct Queues {
    /// A queue passing a multiple of this is written at once.
    every: usize,
    /// Over their limit: cut off.
    slow: Vec<ConnId>,
    /// Passed another multiple of `every`: written now.
    full: Vec<ConnId>,
}

fn enqueue<S: Socket>(
    clients: &mut Slab<Client<S>>,
    to_flush: &mut Vec<ConnId>,
    queues: &mut Queues,
    id: ConnId,
    frames: &mut Frames,
) {
    let Some(client) = clients.get_mut(id) else {
        return;
    };
    // Frames for anyone not (or no longer, or not yet) in the room are
    // dropped: not yet means its `LoggedIn` comes later in the effects.
    if client.joined.is_none() || !client.session.is_chatting() {
        return;
    }
    let frame = frames.for_session(client.session.is_sequenced());
    let before = client.conn.queued();
    if client.conn.send(frame).is_err() {
        queues.slow.push(id);
    } else if before / queues.every != client.conn.queued() / queues.every {
        queues.full.push(id);
    }
    schedule(to_flush, client, id);
}
