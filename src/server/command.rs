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
use crate::control;
use crate::effect::{Effect, Ending};
use crate::moderation::{Action, Ban, Target, describe, human_duration};
use crate::names;
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
        let listener = UnixListener::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o660))?;
        Endpoint::new(listener, registry, token)
    })();
    match bound {
        Ok(endpoint) => {
            info!("control socket for `ragnarok ctl` at {}", path.display());
            Some(endpoint)
        }
        Err(e) => {
            error!("no control socket (ragnarok ctl will not work): {}: {e}", path.display());
            None
        }
    }
}

type Answer = Result<(String, Value), String>;

impl<S: Socket + Source> Server<S> {
    /// Reads a request on the control socket and answers it.
    pub(super) fn answer_control(&mut self, key: usize, now: Instant) {
        let Some(mut endpoint) = self.control.take() else { return };
        let registry = self.poll.registry().try_clone();
        if let Ok(registry) = registry {
            endpoint.serve(key, &registry, CONTROL_REQUESTS, |received| {
                let request = control::request_line(received)?;
                Some(control::answer(request.and_then(|r| self.command(&r, now))))
            });
        }
        self.control = Some(endpoint);
        self.settle(now);
    }

    /// One command of `ragnarok ctl`: a question about the server, or a
    /// moderator's action (done as the room's owner).
    fn command(&mut self, request: &Value, now: Instant) -> Answer {
        if let Some(action) = Action::of_json(request) {
            return self.moderate(action?, OWNER);
        }
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
    /// text says what was done, or why not.
    pub(super) fn moderate(&mut self, action: Action, by: &str) -> Answer {
        let wall = SystemTime::now();
        let until = |secs: Option<u64>| secs.map(|s| wall + Duration::from_secs(s));
        let answer = match action {
            Action::Kick { target, for_secs, reason } => {
                self.kick(&target, until(for_secs), &reason, by, wall)
            }
            Action::Ban { target, for_secs, reason } => {
                self.ban(&target, until(for_secs), &reason, by, wall)
            }
            Action::Unban { target } => {
                let target = Target::parse(&target)?;
                if !self.rules.unban(&target) {
                    return Err(format!("{} is not banned", target.shown()));
                }
                self.save_rules();
                Ok((format!("unbanned {}", target.shown()), json!({})))
            }
            Action::Mute { target, for_secs } => {
                let name = names::check(&target).map_err(|r| r.text)?;
                self.rules.mute(&name.key, &name.display, until(for_secs));
                let said = format!(
                    "{} was muted{}{}",
                    name.display,
                    by_text(by),
                    for_text(until(for_secs), wall)
                );
                self.announce(&said);
                Ok((said, json!({})))
            }
            Action::Unmute { target } => {
                let name = names::check(&target).map_err(|r| r.text)?;
                if !self.rules.unmute(&name.key) {
                    return Err(format!("{} is not muted", name.display));
                }
                let said = format!("{} is no longer muted", name.display);
                self.announce(&said);
                Ok((said, json!({})))
            }
            Action::Lock | Action::Unlock => {
                let locked = action == Action::Lock;
                if !self.rules.set_locked(locked) {
                    let state = if locked { "locked" } else { "unlocked" };
                    return Err(format!("the room is {state} already"));
                }
                let said = match locked {
                    true => format!("The room is locked{}: no new logins for now.", by_text(by)),
                    false => format!("The room is open again{}.", by_text(by)),
                };
                self.announce(&said);
                Ok((said, json!({ "locked": locked })))
            }
            Action::Say { text } => {
                self.announce(&text);
                Ok((format!("announced to {} users", self.room.online_here()), json!({})))
            }
        };
        if let Ok((done, _)) = &answer {
            warn!("{}: {done}", if by == OWNER { "ctl" } else { by });
        }
        answer
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

    fn kick(
        &mut self,
        target: &str,
        until: Option<SystemTime>,
        reason: &str,
        by: &str,
        wall: SystemTime,
    ) -> Answer {
        let name = names::check(target).map_err(|r| r.text)?;
        let Some(id) = self.room.local_id(&name.key) else {
            return Err(match self.room.members().find(|(_, key, _)| *key == name.key) {
                Some((shown, _, Err(node))) => {
                    format!(
                        "{shown} is on node {node}: kick them there (cluster-wide kicks are not built yet)"
                    )
                }
                _ => format!("{} is not online", name.display),
            });
        };
        let shown = self.room.name_of(id).unwrap_or(&name.display).to_owned();
        if let Some(until) = until {
            let target = Target::Name { key: name.key.clone(), shown: shown.clone() };
            let ban = Ban {
                target,
                until: Some(until),
                reason: reason.to_owned(),
                by: "ctl".into(),
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
        self.remove_user(id, ErrorCode::Kicked, told);
        let said = format!(
            "{shown} was kicked{}{}{}",
            by_text(by),
            for_text(until, wall),
            reason_text(reason)
        );
        self.announce(&said);
        Ok((said, json!({ "kicked": [shown] })))
    }

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
        let names: Vec<&str> = covered.iter().map(|(_, n)| n.as_str()).collect();
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
        let text = format!(
            "banned {}{}; removed {}{}",
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

    /// Takes the bans kept in `state_file`, if there is one.
    pub(super) fn load_rules(&mut self) -> io::Result<()> {
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

    /// Writes the bans to `state_file`: a new file, then a rename, so that
    /// a crash leaves the old file or the new one, never half of one.
    fn save_rules(&self) {
        let Some(path) = &self.state_file else { return };
        let tmp = path.with_extension("tmp");
        let written = fs::write(&tmp, self.rules.save()).and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            error!("bans not saved to {} (they hold until a restart): {e}", path.display());
        }
    }

    /// Forgets bans and mutes that ended (at every tick).
    pub(super) fn expire_rules(&mut self) {
        if self.rules.expire(SystemTime::now()) {
            self.save_rules();
        }
    }
}

/// Who moderates when it is not a person: the owner, through `ctl`.
pub const OWNER: &str = "ctl";

/// " by alice" for an admin; nothing for the owner.
fn by_text(by: &str) -> String {
    match by == OWNER {
        true => String::new(),
        false => format!(" by {by}"),
    }
}

fn for_text(until: Option<SystemTime>, wall: SystemTime) -> String {
    match until.and_then(|t| t.duration_since(wall).ok()) {
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
    let left = b.until.and_then(|t| t.duration_since(wall).ok());
    format!(
        "{}\t{}\tby {}{}",
        b.target.shown(),
        left.map_or("for good".to_owned(), |d| format!("{} left", human_duration(d))),
        b.by,
        reason_text(&b.reason),
    )
}
