//! The owner's commands (`ragnarok ctl`, over the control socket) carried
//! out: who is online, kicks, bans, mutes, the lock, announcements, reload,
//! stats. Each one that touches users is effects like any other decision.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use mio::event::Source;
use mio::net::UnixListener;
use mio::{Registry, Token};
use serde_json::{Value, json};

use super::{Phase, Server};
use crate::cluster::{Kept, KeptRules, Origin, Proposed};
use crate::control;
use crate::effect::{ConnId, Effect, Ending, Push};
use crate::moderation::{
    Action, Ban, OWNER, Target, describe, human_duration, left, mute_json, mute_of,
};
use crate::names;
use crate::peerlog::Class;
use crate::protocol::{ErrorCode, Rejection, close_code};
use crate::tokens::CONTROL_REQUESTS;
use crate::transport::Socket;

/// The control socket.
pub type Endpoint = crate::endpoint::Endpoint<UnixListener>;

/// Opens the control socket at `path` (mode 0660: the server's user and
/// group). A stale socket file is replaced; one a live server answers on is
/// not. Without it the server runs on and says why.
pub fn open(path: &Path, registry: &Registry, token: Token) -> Option<Endpoint> {
    let bound = (|| {
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server answers on it",
                ));
            }
            fs::remove_file(path)?;
        }
        // Made 0660 from the start (no moment where others may connect);
        // the server has one thread, so the umask is ours for the moment.
        // SAFETY: umask only swaps the process's file mode mask.
        let old = unsafe { libc::umask(0o117) };
        let bound = UnixListener::bind(path);
        unsafe { libc::umask(old) };
        let listener = bound?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o660))?;
        Endpoint::new(listener, registry, token)
    })();
    match bound {
        Ok(endpoint) => Some(endpoint),
        Err(e) => {
            error!("no control socket (ragnarok ctl will not work): {}: {e}", path.display());
            None
        }
    }
}

type Answer = Result<(String, Value), String>;

/// What a `ctl` request gets: its answer now, or once the cluster has
/// carried out the action proposed under this ticket.
enum Reply {
    Now(Answer),
    Later(u64),
}

/// What became of a moderator's action.
enum Moderated {
    /// Done here (standalone): what was done.
    Done((String, Value)),
    /// Proposed to the cluster (for `ctl`, under this ticket): every node
    /// (this one too) carries it out when it comes back.
    Proposed(Option<u64>),
}

impl<S: Socket + Source> Server<S> {
    /// Reads a request on the control socket and answers it (in a cluster,
    /// an action is answered once it has come back: `answer_held`).
    pub(super) fn answer_control(&mut self, key: usize, now: Instant) {
        let Some(mut endpoint) = self.control.take() else { return };
        let registry = self.poll.registry().try_clone();
        let mut held = None;
        if let Ok(registry) = registry {
            endpoint.serve(key, &registry, CONTROL_REQUESTS, |received| {
                if held.is_some() {
                    return None; // asked once: what follows the line is not read
                }
                let reply = match control::request_line(received)? {
                    Ok(request) => self.command(&request, now),
                    Err(e) => Reply::Now(Err(e)),
                };
                match reply {
                    Reply::Now(answer) => Some(control::answer(answer)),
                    Reply::Later(ticket) => {
                        held = Some(ticket);
                        None
                    }
                }
            });
        }
        if let Some(ticket) = held {
            endpoint.hold(key, ticket);
        }
        self.control = Some(endpoint);
        self.settle(now);
    }

    /// Answers the `ctl` request waiting on `ticket`, if it still is.
    pub(super) fn answer_held(&mut self, ticket: u64, answer: Answer) {
        let registry = self.poll.registry();
        if let Some(endpoint) = &mut self.control {
            endpoint.answer_held(ticket, control::answer(answer), registry, CONTROL_REQUESTS);
        }
    }

    /// The link broke: `ctl` requests still waiting for their action to
    /// come back are told (it may have been done or not).
    pub(super) fn answer_all_held(&mut self) {
        let Some(endpoint) = &self.control else { return };
        for ticket in endpoint.held() {
            let why = "this server lost its link to the rest of the room before the action came \
                       back: it may have been done on the other nodes (see ctl bans and ctl who \
                       once the link is back)";
            self.answer_held(ticket, Err(why.to_owned()));
        }
    }

    /// One command of `ragnarok ctl`: a question about the server, or a
    /// moderator's action (done as the room's owner).
    fn command(&mut self, request: &Value, now: Instant) -> Reply {
        match Action::of_json(request) {
            None => {}
            Some(Err(e)) => return Reply::Now(Err(e)),
            Some(Ok(action)) if self.cluster.is_none() => {
                return Reply::Now(self.moderate(action, OWNER));
            }
            // Answered once it has come back from the cluster, done.
            Some(Ok(action)) => {
                return match self.moderation(action, OWNER, None) {
                    Ok(Moderated::Done(done)) => Reply::Now(Ok(done)),
                    Ok(Moderated::Proposed(Some(ticket))) => Reply::Later(ticket),
                    Ok(Moderated::Proposed(None)) => Reply::Now(Err("not proposed".into())),
                    Err(e) => Reply::Now(Err(e)),
                };
            }
        }
        Reply::Now(self.question(request, now))
    }

    fn question(&mut self, request: &Value, now: Instant) -> Answer {
        let wall = SystemTime::now();
        match request["cmd"].as_str().unwrap_or_default() {
            "who" => Ok(self.who()),
            "bans" => {
                let bans: Vec<Value> = self.rules.bans(wall).map(|b| describe(b, wall)).collect();
                let lines: Vec<String> = self.rules.bans(wall).map(|b| ban_line(b, wall)).collect();
                let text = if lines.is_empty() { "no bans".to_owned() } else { lines.join("\n") };
                Ok((text, json!({ "bans": bans })))
            }
            "stats" => Ok(self.stats_answer(now)),
            "reload" => {
                // As SIGHUP: the config file, then the certificate and key.
                let reloaded = match self.reload_config(now) {
                    Ok(reloaded) => reloaded,
                    Err(e) => {
                        error!("ctl reload: kept the old config: {e}");
                        return Err(format!("kept the old config: {e}"));
                    }
                };
                info!("ctl reload: reloaded config: {reloaded}");
                self.reload_tls();
                let data =
                    json!({ "applied": reloaded.applied, "needs_restart": reloaded.needs_restart });
                Ok((format!("reloaded config: {reloaded}"), data))
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    /// A moderator's action, `by` the room's owner ([`OWNER`]) or an admin
    /// by name: done, announced in the room, logged at WARN. The answer's
    /// text says what was done, or why not. In a cluster it is checked
    /// here and sent to every node (this one too), which carry it out as it
    /// comes back: the answer says it was sent.
    pub(super) fn moderate(&mut self, action: Action, by: &str) -> Answer {
        match self.moderation(action, by, None)? {
            Moderated::Done(done) => Ok(done),
            Moderated::Proposed(_) => {
                Ok(("sent to every server of the room".to_owned(), json!({ "proposed": true })))
            }
        }
    }

    /// A moderator's `Moderate` from the room (`Effect::Moderate`; the
    /// session checked that they are one and may do this), done in their
    /// name: standalone now, logged at WARN naming them and their address
    /// within the budget of their address (`peerlog.rs`), or refused
    /// (`moderation_refused`); in a cluster it is proposed from their
    /// connection, and the same happens when it comes back
    /// (`moderated_from_room`).
    pub(super) fn moderate_from_room(&mut self, id: ConnId, action: Action, now: Instant) {
        let Some(client) = self.clients.get(id).filter(|c| c.session.is_chatting()) else {
            return;
        };
        let origin = Origin { id, serial: client.serial };
        let Some(name) = self.room.name_of(id).map(str::to_owned) else { return };
        let done = match self.moderation(action, &name, Some(origin)) {
            Ok(Moderated::Proposed(_)) => return,
            Ok(Moderated::Done(done)) => Ok(done),
            Err(why) => Err(why),
        };
        self.moderated_from_room(id, &name, done, now);
    }

    /// What a moderator in the room is told, and the log, once their action
    /// was done (or not) here, or came back from the cluster.
    pub(super) fn moderated_from_room(
        &mut self,
        id: ConnId,
        name: &str,
        done: Answer,
        now: Instant,
    ) {
        let Some(peer) = self.clients.get(id).map(|c| c.conn.peer) else { return };
        match done {
            Ok((done, _)) => {
                if self.peer_log.allow(Class::Moderation, peer.ip, now) {
                    warn!("moderator {name} ({peer}): {done}");
                }
            }
            Err(why) => {
                let why = Rejection::new(ErrorCode::ModerationRefused, why);
                self.effects.refuse(id, why);
            }
        }
    }

    /// Checks `action`; standalone, does it; in a cluster, proposes it from
    /// `from` (a moderator's connection), or for `ctl` under a new ticket.
    fn moderation(
        &mut self,
        action: Action,
        by: &str,
        from: Option<Origin>,
    ) -> Result<Moderated, String> {
        let action = self.check_action(action)?;
        let wall = SystemTime::now();
        if self.cluster.is_none() {
            return self.act(action, by, wall).map(Moderated::Done);
        }
        // Whole seconds: the time every node and Redis count from.
        let at = secs(wall);
        let kept = self.kept(&action, by, at)?;
        let (origin, ticket) = match from {
            Some(origin) => (origin, None),
            None => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                (Origin::control(ticket), Some(ticket))
            }
        };
        let what = Proposed::Moderate { by: by.to_owned(), at, action: action.to_json(), kept };
        if let Some(cluster) = &mut self.cluster {
            cluster.propose(origin, what, Instant::now());
        }
        Ok(Moderated::Proposed(ticket))
    }

    /// Whether `action` can be done (the same checks standalone and in a
    /// cluster, where this node's rules are the room's): the action, with
    /// a kick's target as the user online is shown.
    fn check_action(&self, action: Action) -> Result<Action, String> {
        match action {
            Action::Kick { target, for_secs, reason } => {
                let name = names::check(&target).map_err(|r| r.text)?;
                match self.room.members().find(|(_, key, _)| *key == name.key) {
                    Some((shown, _, _)) => {
                        Ok(Action::Kick { target: shown.to_owned(), for_secs, reason })
                    }
                    None => Err(format!("{} is not online", name.display)),
                }
            }
            Action::Ban { ref target, .. } => Target::parse(target).map(|_| action),
            Action::Unban { ref target } => {
                let target = Target::parse(target)?;
                match self.rules.is_banned(&target) {
                    true => Ok(action),
                    false => Err(format!("{} is not banned", target.shown())),
                }
            }
            Action::Mute { ref target, .. } => {
                names::check(target).map_err(|r| r.text)?;
                Ok(action)
            }
            Action::Unmute { ref target } => {
                let name = names::check(target).map_err(|r| r.text)?;
                match self.rules.is_muted(&name.key) {
                    true => Ok(action),
                    false => Err(format!("{} is not muted", name.display)),
                }
            }
            Action::Lock | Action::Unlock => {
                let locked = action == Action::Lock;
                match self.rules.is_locked() == locked {
                    true => Err(format!("the room is {} already", locked_text(locked))),
                    false => Ok(action),
                }
            }
            Action::Say { .. } => Ok(action),
        }
    }

    /// What Redis keeps of `action` (checked) made at `at` (Unix seconds).
    fn kept(&self, action: &Action, by: &str, at: u64) -> Result<Kept, String> {
        let since = unix(at)?;
        let end = |secs: Option<u64>| until(since, secs);
        let ban = |target: Target, until: Option<SystemTime>, reason: &str| {
            let ban = Ban { target, until, reason: reason.to_owned(), by: by.to_owned(), since };
            Kept::Ban { target: ban.target.field(), ban: ban.to_json().to_string() }
        };
        Ok(match action {
            Action::Kick { for_secs: None, .. } | Action::Say { .. } => Kept::Nothing,
            Action::Kick { target, for_secs, reason } => {
                let name = names::check(target).map_err(|r| r.text)?;
                let target = Target::Name { key: name.key, shown: name.display };
                ban(target, end(*for_secs)?, reason)
            }
            Action::Ban { target, for_secs, reason } => {
                ban(Target::parse(target)?, end(*for_secs)?, reason)
            }
            Action::Unban { target } => Kept::Unban { target: Target::parse(target)?.field() },
            Action::Mute { target, for_secs } => {
                let name = names::check(target).map_err(|r| r.text)?;
                let mute = mute_json(&name.display, end(*for_secs)?).to_string();
                Kept::Mute { key: name.key, mute }
            }
            Action::Unmute { target } => {
                Kept::Unmute { key: names::check(target).map_err(|r| r.text)?.key }
            }
            Action::Lock => Kept::Lock,
            Action::Unlock => Kept::Unlock,
        })
    }

    /// A moderator's action that came back from the cluster (every node
    /// gets it once, in the room's order): carried out here as standalone,
    /// on this node's users. `at`: when it was made, in Unix seconds.
    pub(super) fn moderated(&mut self, by: &str, at: u64, action: &Value) -> Answer {
        let action = match Action::of_json(action) {
            Some(Ok(action)) => action,
            Some(Err(why)) => return Err(why),
            None => return Err(format!("not an action: {action}")),
        };
        self.act(action, by, unix(at)?)
    }

    /// Carries out a checked action made at `at`: on the rules, this node's
    /// users and an announcement to them (in a cluster every node does it
    /// for its own users: everyone hears it once).
    fn act(&mut self, action: Action, by: &str, at: SystemTime) -> Answer {
        let answer = match action {
            Action::Kick { target, for_secs, reason } => {
                self.kick(&target, until(at, for_secs)?, &reason, by, at)
            }
            Action::Ban { target, for_secs, reason } => {
                self.ban(&target, until(at, for_secs)?, &reason, by, at)
            }
            Action::Unban { target } => {
                let target = Target::parse(&target)?;
                if !self.rules.unban(&target) {
                    // Lifted twice at once in a cluster, or ended meanwhile.
                    return Err(format!("{} is not banned", target.shown()));
                }
                self.save_rules();
                if by != OWNER {
                    self.announce(&format!("{} was unbanned by {by}", target.shown()));
                }
                Ok((format!("unbanned {}", target.shown()), json!({})))
            }
            Action::Mute { target, for_secs } => {
                let name = names::check(&target).map_err(|r| r.text)?;
                let until = until(at, for_secs)?;
                self.rules.mute(&name.key, &name.display, until);
                let said =
                    format!("{} was muted{}{}", name.display, by_text(by), for_text(until, at));
                self.announce(&said);
                Ok((said, json!({})))
            }
            Action::Unmute { target } => {
                let name = names::check(&target).map_err(|r| r.text)?;
                if !self.rules.unmute(&name.key) {
                    return Err(format!("{} is not muted", name.display));
                }
                let said = match by == OWNER {
                    true => format!("{} is no longer muted", name.display),
                    false => format!("{} was unmuted by {by}", name.display),
                };
                self.announce(&said);
                Ok((said, json!({})))
            }
            Action::Lock | Action::Unlock => {
                let locked = action == Action::Lock;
                if !self.rules.set_locked(locked) {
                    // Two locks at once in a cluster: the second finds it done.
                    return Err(format!("the room is {} already", locked_text(locked)));
                }
                let said = match locked {
                    true => format!("The room is locked{}: no new logins for now.", by_text(by)),
                    false => format!("The room is open again{}.", by_text(by)),
                };
                self.announce(&said);
                Ok((said, json!({ "locked": locked })))
            }
            Action::Say { text } => {
                // A moderator's words are theirs: the announcement says whose.
                match by == OWNER {
                    true => self.announce(&text),
                    false => self.announce(&format!("{by} (moderator): {text}")),
                }
                Ok((format!("announced to {} users", self.room.online()), json!({})))
            }
        };
        // A moderator's are logged where they are connected, with their
        // address, within its budget (`moderated_from_room`).
        if let (Ok((done, _)), OWNER) = (&answer, by) {
            warn!("ctl: {done}");
        }
        answer
    }

    /// The cluster's rules, read back at a (re)sync, in place of this
    /// node's; whoever a ban made meanwhile covers leaves now.
    pub(super) fn take_cluster_rules(&mut self, kept: KeptRules) {
        let parsed = |text: &str| serde_json::from_str::<Value>(text).ok();
        let bans: Vec<Ban> =
            kept.bans.iter().filter_map(|b| parsed(b).as_ref().and_then(Ban::of_json)).collect();
        let mutes: Vec<_> =
            kept.mutes.iter().filter_map(|(_, m)| parsed(m).as_ref().and_then(mute_of)).collect();
        let unread = kept.bans.len() + kept.mutes.len() - bans.len() - mutes.len();
        if unread > 0 {
            warn!("cluster: {unread} bans or mutes on Redis are not ones this version reads");
        }
        info!(
            "cluster: {} bans, {} mutes, the room {}",
            bans.len(),
            mutes.len(),
            locked_text(kept.locked)
        );
        self.rules.replace(bans, mutes, kept.locked);
        let wall = SystemTime::now();
        let covered: Vec<(usize, String)> = self
            .room
            .members()
            .filter_map(|(name, _, at)| {
                let id = at.ok()?;
                let why = self.rules.banned(name, self.clients.get(id)?.conn.peer.ip, wall)?;
                Some((id, why.text))
            })
            .collect();
        for (id, why) in covered {
            self.remove_user(id, ErrorCode::Banned, why);
        }
        let away: Vec<String> = self
            .room
            .away_from()
            .filter(|(name, _, ip)| self.rules.banned(name, *ip, wall).is_some())
            .map(|(_, key, _)| key.to_owned())
            .collect();
        for key in away {
            self.room.end_away(&key, &mut self.effects);
        }
    }

    fn who(&self) -> (String, Value) {
        let wall = SystemTime::now();
        let mut users = Vec::new();
        let mut lines = Vec::new();
        for (name, _, at) in self.room.members() {
            let (address, joined, node) = match at {
                Ok(id) => {
                    let client = self.clients.get(id);
                    let address = client.map(|c| c.conn.peer.ip.to_string());
                    (address, client.and_then(|c| c.joined), None)
                }
                Err(node) => (None, None, Some(node.to_owned())),
            };
            let since = joined.and_then(|t| wall.duration_since(t).ok());
            lines.push(format!(
                "{name}\t{}\t{}\t{}",
                address.as_deref().unwrap_or("-"),
                since.map_or("-".to_owned(), |d| format!("{} ago", human_duration(d))),
                node.as_deref().unwrap_or("here"),
            ));
            let joined =
                joined.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
            users.push(json!({ "name": name, "address": address, "joined": joined, "node": node }));
        }
        let head = format!("{} online\nname\taddress\tjoined\tnode", users.len());
        let text = std::iter::once(head).chain(lines).collect::<Vec<_>>().join("\n");
        (text, json!({ "online": users.len(), "users": users }))
    }

    /// A kick: the user leaves (if on this node), and with an end, the name
    /// is banned until then.
    fn kick(
        &mut self,
        target: &str,
        until: Option<SystemTime>,
        reason: &str,
        by: &str,
        wall: SystemTime,
    ) -> Answer {
        let name = names::check(target).map_err(|r| r.text)?;
        let shown = name.display;
        if let Some(until) = until {
            let target = Target::Name { key: name.key.clone(), shown: shown.clone() };
            let ban = Ban {
                target,
                until: Some(until),
                reason: reason.to_owned(),
                by: by.to_owned(),
                since: wall,
            };
            self.rules.ban(ban);
            self.save_rules();
        }
        let told = format!(
            "you were kicked by {}{}{}",
            if by == OWNER { "the room's owner" } else { by },
            reason_text(reason),
            until.map_or(String::new(), |_| format!(
                "; you may come back{}",
                for_text(until, wall).replace(" for", " in")
            ))
        );
        if let Some(id) = self.room.local_id(&name.key) {
            self.remove_user(id, ErrorCode::Kicked, told);
        }
        // Their connection dropped: the session kept for their resume ends
        // too (its token with it).
        self.room.end_away(&name.key, &mut self.effects);
        let said = format!(
            "{shown} was kicked{}{}{}",
            by_text(by),
            for_text(until, wall),
            reason_text(reason)
        );
        self.announce(&said);
        Ok((said, json!({ "kicked": [shown] })))
    }

    /// A ban: whoever it covers on this node leaves (in a cluster, every
    /// node removes its own).
    fn ban(
        &mut self,
        target: &str,
        until: Option<SystemTime>,
        reason: &str,
        by: &str,
        wall: SystemTime,
    ) -> Answer {
        let target = Target::parse(target)?;
        let ban = Ban {
            target: target.clone(),
            until,
            reason: reason.to_owned(),
            by: by.into(),
            since: wall,
        };
        self.rules.ban(ban);
        self.save_rules();
        // Whoever it covers leaves now.
        let covered: Vec<(usize, String)> = self
            .room
            .members()
            .filter_map(|(name, key, at)| {
                let id = at.ok()?;
                let ip = self.clients.get(id)?.conn.peer.ip;
                let hit = match &target {
                    Target::Name { key: k, .. } => k == key,
                    Target::Net(net) => net.contains(ip),
                };
                hit.then(|| (id, name.to_owned()))
            })
            .collect();
        let who = if by == OWNER { "the room's owner" } else { by };
        let told =
            format!("you were banned by {who}{}{}", for_text(until, wall), reason_text(reason));
        for (id, _) in &covered {
            self.remove_user(*id, ErrorCode::Banned, told.clone());
        }
        let mut names: Vec<String> = covered.into_iter().map(|(_, n)| n).collect();
        // Away (their connection dropped): the session kept for a resume,
        // by its name or the address it was last at.
        let away: Vec<String> = match &target {
            Target::Name { key, .. } => vec![key.clone()],
            Target::Net(net) => {
                let inside = self.room.away_from().filter(|(_, _, ip)| net.contains(*ip));
                inside.map(|(_, key, _)| key.to_owned()).collect()
            }
        };
        for key in away {
            if let Some(name) = self.room.end_away(&key, &mut self.effects) {
                names.push(name.to_string());
            }
        }
        let said = match &target {
            Target::Name { shown, .. } => {
                let (by, until) = (by_text(by), for_text(until, wall));
                format!("{shown} was banned{by}{until}{}", reason_text(reason))
            }
            Target::Net(_) if names.is_empty() => String::new(),
            Target::Net(_) => {
                format!("banned by address: {}{}", names.join(", "), reason_text(reason))
            }
        };
        if !said.is_empty() {
            self.announce(&said);
        }
        // In a cluster: a name online on another node is removed there;
        // who is at an address there, only that node knows.
        let mut elsewhere = "";
        if let Target::Name { key, .. } = &target {
            let remote = self.room.members().filter(|(_, k, at)| k == key && at.is_err());
            names.extend(remote.map(|(name, _, _)| name.to_owned()));
        } else if self.cluster.is_some() {
            elsewhere = " on this server; each server of the room removes its own";
        }
        let text = format!(
            "banned {}{}; removed {}{}{elsewhere}",
            target.shown(),
            for_text(until, wall),
            names.len(),
            if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) }
        );
        Ok((text, json!({ "removed": names })))
    }

    /// Ends a user's session with an `Error` of `code` and Close 1008.
    fn remove_user(&mut self, id: usize, code: ErrorCode, text: String) {
        let why = Rejection::new(code, text);
        let how = Ending::Close { code: close_code::POLICY, reason: code.as_str(), why: Some(why) };
        self.effects.push(Effect::End { conn: id, how });
    }

    fn announce(&mut self, text: &str) {
        self.room.announce(text, &mut self.effects);
    }

    fn stats_answer(&self, now: Instant) -> (String, Value) {
        let uptime = now.saturating_duration_since(self.started);
        let data = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "online": self.room.online(),
            "online_here": self.room.online_here(),
            "away": self.room.away(),
            "connections": self.clients.len(),
            "uptime_secs": uptime.as_secs(),
            "locked": self.rules.is_locked(),
            "bans": self.rules.bans(SystemTime::now()).count(),
            "cluster": self.cluster.is_some(),
            "shutting_down": matches!(self.phase, Phase::Stopping { .. }),
        });
        let text = format!(
            "ragnarok {}: {} online ({} here), {} connections, up {}, room {}, {} bans",
            env!("CARGO_PKG_VERSION"),
            data["online"],
            data["online_here"],
            data["connections"],
            human_duration(uptime),
            if self.rules.is_locked() { "locked" } else { "open" },
            data["bans"],
        );
        (text, data)
    }

    /// Takes the bans kept in `state_file`, if there is one (standalone: a
    /// cluster's are on Redis). The error names the file.
    pub fn load_rules(&mut self) -> io::Result<()> {
        let Some(path) = &self.state_file else { return Ok(()) };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("state_file {}: {e}", path.display()),
                ));
            }
        };
        self.rules.load(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("state_file {}: {e}", path.display()),
            )
        })?;
        let n = self.rules.bans(SystemTime::now()).count();
        info!("{n} bans from {}", path.display());
        Ok(())
    }

    /// The bans changed: `state_file` is written at the next tick (at most
    /// once a second however fast bans come, and at shutdown).
    pub(super) fn save_rules(&mut self) {
        self.rules_unsaved = self.cluster.is_none() && self.state_file.is_some();
    }

    /// Writes the bans to `state_file`: a new file of the server's own
    /// (mode 0600, never through a symlink), synced, then renamed over the
    /// old one, so that a crash leaves the old file or the new one.
    pub(super) fn write_rules(&mut self) {
        if !std::mem::take(&mut self.rules_unsaved) {
            return;
        }
        let Some(path) = &self.state_file else { return };
        let written = write_atomically(path, self.rules.save().as_bytes());
        if let Err(e) = written
            && self.unsaved_log.allow(Instant::now())
        {
            error!("bans not saved to {} (they hold until a restart): {e}", path.display());
        }
    }

    /// Forgets bans and mutes that ended, and writes what changed (at
    /// every tick).
    pub(super) fn expire_rules(&mut self) {
        if self.rules.expire(SystemTime::now()) {
            self.save_rules();
        }
        self.write_rules();
    }
}

/// `path` replaced by a file of `bytes`, or left as it was.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp); // a leftover of a crash (a symlink: only the link goes)
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Unix seconds as a time (`at` of a cluster's action: network input).
fn unix(at: u64) -> Result<SystemTime, String> {
    UNIX_EPOCH.checked_add(Duration::from_secs(at)).ok_or_else(|| format!("no time: {at}"))
}

/// A time as Unix seconds.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The end of what lasts `for_secs` from `at`; `None` for good.
fn until(at: SystemTime, for_secs: Option<u64>) -> Result<Option<SystemTime>, String> {
    match for_secs {
        None => Ok(None),
        Some(s) => match at.checked_add(Duration::from_secs(s)) {
            Some(t) => Ok(Some(t)),
            None => Err(format!("no end {s} s after {at:?}")),
        },
    }
}

fn locked_text(locked: bool) -> &'static str {
    if locked { "locked" } else { "unlocked" }
}

/// " by alice" for an admin; nothing for the owner.
fn by_text(by: &str) -> String {
    match by == OWNER {
        true => String::new(),
        false => format!(" by {by}"),
    }
}

fn for_text(until: Option<SystemTime>, wall: SystemTime) -> String {
    match left(until, wall) {
        Some(d) => format!(" for {}", human_duration(d)),
        None => String::new(),
    }
}

fn reason_text(reason: &str) -> String {
    match reason.is_empty() {
        true => String::new(),
        false => format!(": {reason}"),
    }
}

fn ban_line(b: &Ban, wall: SystemTime) -> String {
    let left = left(b.until, wall);
    format!(
        "{}\t{}\tby {}{}",
        b.target.shown(),
        left.map_or("for good".to_owned(), |d| format!("{} left", human_duration(d))),
        b.by,
        reason_text(&b.reason),
    )
}
