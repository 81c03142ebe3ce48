//! The owner's rules for the room: bans (of a name, an address or a
//! network, until a time or for good), mutes, the lock, and the room-wide
//! login rate. Asked at each login and message; changed by `ragnarok ctl`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::addresses::Cidr;
use crate::names;
use crate::protocol::{ErrorCode, Rejection, Role};
use crate::ratelimit::{TokenBucket, Verdict};

/// Who moderates when it is not a person in the room: the owner, through
/// `ragnarok ctl` (what a ban's `by` says then).
pub const OWNER: &str = "ctl";

/// Who a ban is for.
#[derive(Debug, Clone, Eq)]
pub enum Target {
    /// A name, by its comparison key (`names::check`): its look-alikes too.
    Name { key: String, shown: String },
    /// An address (a network of one) or a network.
    Net(Cidr),
}

/// Two targets are the same ban when they cover the same: names by their
/// comparison key (`ban Troll` is lifted by `unban troll`), networks as
/// parsed (their host bits cleared).
impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Name { key: a, .. }, Target::Name { key: b, .. }) => a == b,
            (Target::Net(a), Target::Net(b)) => a == b,
            _ => false,
        }
    }
}

/// The most bans a room keeps: a moderator may not add past it (each ban
/// is checked at every login, and the state file is written whole).
pub const MAX_BANS: usize = 10_000;

impl Target {
    /// An address or network (`192.0.2.7`, `2001:db8::/64`), else a name.
    pub fn parse(text: &str) -> Result<Target, String> {
        if let Ok(net) = text.parse::<Cidr>() {
            return Ok(Target::Net(net));
        }
        match names::check(text) {
            Ok(name) => Ok(Target::Name { key: name.key, shown: name.display }),
            Err(why) => {
                Err(format!("{text:?} is neither an address, a network nor a name: {}", why.text))
            }
        }
    }

    /// What tells this ban from others where they are kept by name (Redis's
    /// hash of bans): names by comparison key, so that `ban Bob` and
    /// `unban bob` are one field.
    pub fn field(&self) -> String {
        match self {
            Target::Name { key, .. } => format!("name:{key}"),
            Target::Net(net) => format!("net:{net}"),
        }
    }

    pub fn shown(&self) -> String {
        match self {
            Target::Name { shown, .. } => shown.clone(),
            Target::Net(net) => net.to_string(),
        }
    }

    fn covers(&self, name_key: Option<&str>, ip: IpAddr) -> bool {
        match self {
            Target::Name { key, .. } => name_key == Some(key.as_str()),
            Target::Net(net) => net.contains(ip),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub target: Target,
    /// `None`: until it is lifted.
    pub until: Option<SystemTime>,
    pub reason: String,
    /// Who banned: `ctl` (the operator) or a moderator's name.
    pub by: String,
    pub since: SystemTime,
}

/// What a moderator does: the room's owner through `ragnarok ctl`, or (the
/// same JSON) an admin from the room. `for_secs`: how long; none = for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Kick { target: String, for_secs: Option<u64>, reason: String },
    Ban { target: String, for_secs: Option<u64>, reason: String },
    Unban { target: String },
    Mute { target: String, for_secs: Option<u64> },
    Unmute { target: String },
    Lock,
    Unlock,
    Say { text: String },
}

impl Action {
    /// The action a request names (`{"cmd": "kick", "target": ..., "for_secs":
    /// ..., "reason": ...}`), `None` if its `cmd` is not an action, or why
    /// it is not a valid one.
    pub fn of_json(v: &Value) -> Option<Result<Action, String>> {
        let text = |field: &str| v[field].as_str().unwrap_or_default().to_owned();
        let target = || match text("target") {
            t if t.is_empty() => Err("which user (or address)? \"target\" is missing".to_owned()),
            t => Ok(t),
        };
        let for_secs = match &v["for_secs"] {
            Value::Null => None,
            n => match n.as_u64().filter(|&s| s > 0 && s <= 10 * 365 * 86400) {
                Some(s) => Some(s),
                None => {
                    return Some(Err("\"for_secs\" must be from 1 to 10 years in seconds".into()));
                }
            },
        };
        // (No control characters: the reason goes into the log.)
        let reason = text("reason").chars().filter(|c| !c.is_control()).take(200).collect();
        let action = match v["cmd"].as_str()? {
            "kick" => target().map(|target| Action::Kick { target, for_secs, reason }),
            "ban" => target().map(|target| Action::Ban { target, for_secs, reason }),
            "unban" => target().map(|target| Action::Unban { target }),
            "mute" => target().map(|target| Action::Mute { target, for_secs }),
            "unmute" => target().map(|target| Action::Unmute { target }),
            "lock" => Ok(Action::Lock),
            "unlock" => Ok(Action::Unlock),
            "say" => match text("text") {
                t if t.trim().is_empty() => Err("nothing to say".into()),
                t => Ok(Action::Say { text: t }),
            },
            _ => return None,
        };
        Some(action)
    }

    /// The request `of_json` reads back as this action (what a cluster's
    /// `Moderate` event carries).
    pub fn to_json(&self) -> Value {
        match self {
            Action::Kick { target, for_secs, reason } => {
                json!({ "cmd": "kick", "target": target, "for_secs": for_secs, "reason": reason })
            }
            Action::Ban { target, for_secs, reason } => {
                json!({ "cmd": "ban", "target": target, "for_secs": for_secs, "reason": reason })
            }
            Action::Unban { target } => json!({ "cmd": "unban", "target": target }),
            Action::Mute { target, for_secs } => {
                json!({ "cmd": "mute", "target": target, "for_secs": for_secs })
            }
            Action::Unmute { target } => json!({ "cmd": "unmute", "target": target }),
            Action::Lock => json!({ "cmd": "lock" }),
            Action::Unlock => json!({ "cmd": "unlock" }),
            Action::Say { text } => json!({ "cmd": "say", "text": text }),
        }
    }
}

impl Ban {
    /// The ban as the state file (and a cluster's Redis) keeps it, times in
    /// Unix seconds.
    pub fn to_json(&self) -> Value {
        ban_json(self)
    }

    /// The inverse of `to_json`; `None` if it is not a ban.
    pub fn of_json(v: &Value) -> Option<Ban> {
        ban_of(v)
    }
}

/// A mute as a cluster's Redis keeps it: `{"name": .., "until": secs|null}`.
pub fn mute_json(shown: &str, until: Option<SystemTime>) -> Value {
    json!({ "name": shown, "until": until.map(secs) })
}

/// The inverse of `mute_json`: (name key, name as shown, until).
pub fn mute_of(v: &Value) -> Option<(String, String, Option<SystemTime>)> {
    let name = names::check(v["name"].as_str()?).ok()?;
    let until = match &v["until"] {
        Value::Null => None,
        u => Some(UNIX_EPOCH.checked_add(Duration::from_secs(u.as_u64()?))?),
    };
    Some((name.key, name.display, until))
}

#[derive(Default)]
pub struct Rules {
    bans: Vec<Ban>,
    /// Muted names by comparison key: (as shown, until).
    mutes: HashMap<String, (String, Option<SystemTime>)>,
    locked: bool,
    /// Logins per second into this server (`room_logins_per_sec`; 0 = no limit).
    logins_per_sec: u32,
    logins: Option<TokenBucket>,
}

impl Rules {
    pub fn new(logins_per_sec: u32) -> Rules {
        Rules { logins_per_sec, ..Rules::default() }
    }

    /// Whether `name` from `ip` may log in now as `role`: not banned, the
    /// room not locked, the room-wide login rate not passed (checked before
    /// the name is tried; `logged_in` takes the token). A moderator (whose
    /// password was checked, a few a second at most) comes in through a
    /// lock and a raid's login rate: that is when they are needed.
    pub fn admits(
        &self,
        name: &str,
        ip: IpAddr,
        role: Role,
        wall: SystemTime,
        now: Instant,
    ) -> Result<(), Rejection> {
        match self.banned(name, ip, wall) {
            Some(why) => Err(why),
            None => self.admits_unbanned(role, now),
        }
    }

    /// The rest of `admits`, for a login whose bans were checked already
    /// (`banned`, before any password check): the lock and the room-wide
    /// login rate, which a moderator passes.
    pub fn admits_unbanned(&self, role: Role, now: Instant) -> Result<(), Rejection> {
        if role == Role::Moderator {
            return Ok(());
        }
        if self.locked {
            return Err(Rejection::new(
                ErrorCode::RoomLocked,
                "the room is locked: no new logins for now; try again later",
            ));
        }
        self.admits_by_rate(role, now)
    }

    /// The room-wide login rate alone (a resume in a cluster: Redis checks
    /// the lock, should the name be free; a fresh session is charged when
    /// it joins, a resumed one never).
    pub fn admits_by_rate(&self, role: Role, now: Instant) -> Result<(), Rejection> {
        if role == Role::Moderator {
            return Ok(());
        }
        if self.logins_per_sec > 0
            && let Some(bucket) = &self.logins
            && bucket.level(now, self.logins_per_sec, self.logins_per_sec) < 1.0
        {
            return Err(Rejection::new(
                ErrorCode::TooManyLogins,
                "the room is taking too many logins right now: try again in a few seconds",
            ));
        }
        Ok(())
    }

    /// Whether a moderator in the room may do `action` (the owner, through
    /// `ctl`, may do anything): they act on names, not on addresses or
    /// networks (they see no addresses); not on a moderator (`is_admin`
    /// says whether a comparison key is one's: the owner settles moderators'
    /// quarrels); and they do not lift the owner's bans.
    pub fn may_moderate(
        &self,
        action: &Action,
        is_admin: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        let name = |target: &str| match Target::parse(target)? {
            Target::Name { key, shown } => Ok((key, shown)),
            Target::Net(net) => Err(format!(
                "{net} is an address: only the room's owner bans addresses (ragnarok ctl)"
            )),
        };
        let not_a_moderator = |target: &str, what: &str| {
            let (key, shown) = name(target)?;
            match is_admin(&key) {
                true => Err(format!(
                    "{shown} is a moderator: only the room's owner can {what} a moderator"
                )),
                false => Ok(()),
            }
        };
        // A ban of the owner's is the owner's to change: a moderator's ban
        // (or kick for a while) of the same name would replace it.
        let owners_ban = |target: &str| {
            let (key, _) = name(target)?;
            let owners = self.bans.iter().find_map(|b| match &b.target {
                Target::Name { key: k, shown } if b.by == OWNER && *k == key => Some(shown),
                _ => None,
            });
            match owners {
                Some(shown) => {
                    Err(format!("{shown} was banned by the room's owner: only they can change it"))
                }
                None => Ok(()),
            }
        };
        match action {
            Action::Kick { target, for_secs: None, .. } => not_a_moderator(target, "kick"),
            Action::Kick { .. } | Action::Ban { .. } if self.bans.len() >= MAX_BANS => {
                Err(format!(
                    "the room has {MAX_BANS} bans already: ask its owner (ragnarok ctl bans, unban)"
                ))
            }
            Action::Kick { target, .. } | Action::Ban { target, .. } => {
                not_a_moderator(target, "ban")?;
                owners_ban(target)
            }
            Action::Mute { target, .. } => not_a_moderator(target, "mute"),
            Action::Unban { target } => owners_ban(target),
            Action::Unmute { target } => name(target).map(drop),
            Action::Lock | Action::Unlock | Action::Say { .. } => Ok(()),
        }
    }

    /// Why `name` from `ip` is banned at `wall`, if a ban covers them.
    pub fn banned(&self, name: &str, ip: IpAddr, wall: SystemTime) -> Option<Rejection> {
        let key = names::check(name).ok().map(|n| n.key);
        let ban = self
            .bans
            .iter()
            .find(|b| live(b.until, wall) && b.target.covers(key.as_deref(), ip))?;
        let what = match ban.target {
            Target::Name { .. } => "this name is banned",
            Target::Net(_) => "your address is banned",
        };
        let text = format!("{what}{}{}", until_text(ban.until, wall), reason_text(&ban.reason));
        Some(Rejection::new(ErrorCode::Banned, text))
    }

    /// Someone logged in: a token of the room-wide rate.
    pub fn logged_in(&mut self, now: Instant) {
        if self.logins_per_sec == 0 {
            return;
        }
        let (rate, burst) = (self.logins_per_sec, self.logins_per_sec);
        let bucket = self.logins.get_or_insert_with(|| TokenBucket::new(burst, now));
        let _: Verdict = bucket.take(now, rate, burst);
    }

    pub fn set_logins_per_sec(&mut self, per_sec: u32) {
        self.logins_per_sec = per_sec;
    }

    /// Whether the user of `name_key` may send to others now.
    pub fn may_speak(&self, name_key: &str, wall: SystemTime) -> Result<(), Rejection> {
        match self.mutes.get(name_key) {
            Some((_, until)) if live(*until, wall) => Err(Rejection::new(
                ErrorCode::Muted,
                format!(
                    "you are muted{}: nothing you send reaches anyone",
                    until_text(*until, wall)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Adds a ban (replacing one of the same target).
    pub fn ban(&mut self, ban: Ban) {
        self.bans.retain(|b| b.target != ban.target);
        self.bans.push(ban);
    }

    /// Lifts the ban of `target`: whether there was one.
    pub fn unban(&mut self, target: &Target) -> bool {
        let before = self.bans.len();
        self.bans.retain(|b| &b.target != target);
        self.bans.len() != before
    }

    /// Whether there is a ban of `target` (`unban` would lift one).
    pub fn is_banned(&self, target: &Target) -> bool {
        self.bans.iter().any(|b| &b.target == target)
    }

    /// The bans in force, oldest first.
    pub fn bans(&self, wall: SystemTime) -> impl Iterator<Item = &Ban> {
        self.bans.iter().filter(move |b| live(b.until, wall))
    }

    pub fn mute(&mut self, key: &str, shown: &str, until: Option<SystemTime>) {
        self.mutes.insert(key.to_owned(), (shown.to_owned(), until));
    }

    pub fn unmute(&mut self, key: &str) -> bool {
        self.mutes.remove(key).is_some()
    }

    /// Whether the name of `key` is muted (`unmute` would lift it).
    pub fn is_muted(&self, key: &str) -> bool {
        self.mutes.contains_key(key)
    }

    /// The bans, mutes (key, as shown, until) and lock as a cluster keeps
    /// them, in place of these (the room-wide login rate stays).
    pub fn replace(
        &mut self,
        bans: Vec<Ban>,
        mutes: Vec<(String, String, Option<SystemTime>)>,
        locked: bool,
    ) {
        self.bans.clear();
        for ban in bans {
            self.ban(ban);
        }
        self.mutes = mutes.into_iter().map(|(key, shown, until)| (key, (shown, until))).collect();
        self.locked = locked;
    }

    /// Locks or unlocks the room: whether that changed anything.
    pub fn set_locked(&mut self, locked: bool) -> bool {
        std::mem::replace(&mut self.locked, locked) != locked
    }

    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Forgets bans and mutes that ended: whether a ban did (to save).
    pub fn expire(&mut self, wall: SystemTime) -> bool {
        self.mutes.retain(|_, (_, until)| live(*until, wall));
        let before = self.bans.len();
        self.bans.retain(|b| live(b.until, wall));
        self.bans.len() != before
    }

    /// The bans as the state file keeps them.
    pub fn save(&self) -> String {
        let bans: Vec<Value> = self.bans.iter().map(ban_json).collect();
        let mut text = serde_json::to_string_pretty(&json!({ "bans": bans })).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Takes the bans of a state file.
    pub fn load(&mut self, text: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let list = value["bans"].as_array().ok_or("no \"bans\" list")?;
        for (i, b) in list.iter().enumerate() {
            let ban = ban_of(b).ok_or_else(|| format!("ban {} is not a ban: {b}", i + 1))?;
            self.ban(ban);
        }
        Ok(())
    }
}

/// Whether a rule that ends at `until` is in force at `wall`.
fn live(until: Option<SystemTime>, wall: SystemTime) -> bool {
    until.is_none_or(|t| t > wall)
}

/// How long a rule that ends at `until` still holds at `wall` (`None`: for
/// good, or over).
pub fn left(until: Option<SystemTime>, wall: SystemTime) -> Option<Duration> {
    until.and_then(|t| t.duration_since(wall).ok())
}

fn until_text(until: Option<SystemTime>, wall: SystemTime) -> String {
    match left(until, wall) {
        Some(left) => format!(" for {} more", human_duration(left)),
        None => String::new(),
    }
}

fn reason_text(reason: &str) -> String {
    match reason.is_empty() {
        true => String::new(),
        false => format!(" ({reason})"),
    }
}

/// `90s` → "1 min 30 s", as people read it.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min{}", s / 60, rest(s % 60, "s")),
        3600..86400 => format!("{} h{}", s / 3600, rest(s % 3600 / 60, "min")),
        _ => format!("{} d{}", s / 86400, rest(s % 86400 / 3600, "h")),
    }
}

fn rest(n: u64, unit: &str) -> String {
    match n {
        0 => String::new(),
        n => format!(" {n} {unit}"),
    }
}

/// `30s`, `10m`, `2h`, `7d`, `1w` or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 10m, 2h, 7d)"))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("{text:?} is not a duration (e.g. 30s, 10m, 2h, 7d)")),
    };
    match n.checked_mul(unit) {
        Some(secs) if secs > 0 && secs <= 10 * 365 * 86400 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{text:?}: a duration must be from 1 s to 10 years")),
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn ban_json(b: &Ban) -> Value {
    let (kind, target) = match &b.target {
        Target::Name { shown, .. } => ("name", shown.clone()),
        Target::Net(net) => ("net", net.to_string()),
    };
    json!({
        kind: target,
        "until": b.until.map(secs),
        "reason": b.reason,
        "by": b.by,
        "since": secs(b.since),
    })
}

fn ban_of(v: &Value) -> Option<Ban> {
    let target = match (v["name"].as_str(), v["net"].as_str()) {
        (Some(name), None) => {
            let n = names::check(name).ok()?;
            Target::Name { key: n.key, shown: n.display }
        }
        (None, Some(net)) => Target::Net(net.parse().ok()?),
        _ => return None,
    };
    let time = |s: u64| UNIX_EPOCH.checked_add(Duration::from_secs(s));
    let until = match &v["until"] {
        Value::Null => None,
        u => Some(time(u.as_u64()?)?),
    };
    Some(Ban {
        target,
        until,
        reason: v["reason"].as_str().unwrap_or_default().to_owned(),
        by: v["by"].as_str().unwrap_or_default().to_owned(),
        since: time(v["since"].as_u64().unwrap_or(0))?,
    })
}

/// What a ban's JSON in `ctl bans --json` says.
pub fn describe(b: &Ban, wall: SystemTime) -> Value {
    let mut v = ban_json(b);
    v["left_secs"] = json!(left(b.until, wall).map(|d| d.as_secs()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bans_by_name_and_network_with_an_end() {
        let (wall, now) = (UNIX_EPOCH + Duration::from_secs(1_000_000), Instant::now());
        let mut rules = Rules::new(0);
        let ban = |target: &str, secs: Option<u64>| Ban {
            target: Target::parse(target).unwrap(),
            until: secs.map(|s| wall + Duration::from_secs(s)),
            reason: "spam".into(),
            by: "ctl".into(),
            since: wall,
        };
        rules.ban(ban("Troll", Some(600)));
        rules.ban(ban("198.51.100.0/24", None));
        let code = |r: Result<(), Rejection>| r.err().map(|r| r.code);
        assert_eq!(
            code(rules.admits("troll", ip("192.0.2.1"), Role::Member, wall, now)),
            Some(ErrorCode::Banned)
        );
        assert_eq!(
            code(rules.admits("tr0ll", ip("192.0.2.1"), Role::Member, wall, now)),
            Some(ErrorCode::Banned),
            "look-alikes"
        );
        assert_eq!(
            code(rules.admits("alice", ip("198.51.100.9"), Role::Member, wall, now)),
            Some(ErrorCode::Banned)
        );
        assert_eq!(code(rules.admits("alice", ip("192.0.2.1"), Role::Member, wall, now)), None);
        let later = wall + Duration::from_secs(601);
        assert_eq!(
            code(rules.admits("troll", ip("192.0.2.1"), Role::Member, later, now)),
            None,
            "the ban ended"
        );
        let text =
            rules.admits("troll", ip("192.0.2.1"), Role::Member, wall, now).unwrap_err().text;
        assert_eq!(text, "this name is banned for 10 min more (spam)");

        // The state file keeps them.
        let mut again = Rules::new(0);
        again.load(&rules.save()).unwrap();
        assert_eq!(again.bans, rules.bans);
        assert!(again.unban(&Target::parse("198.51.100.0/24").unwrap()));
        assert!(!again.unban(&Target::parse("198.51.100.0/24").unwrap()));
        assert!(again.expire(later));
        assert_eq!(again.bans(later).count(), 0);
        assert!(Rules::new(0).load("{\"bans\": [{\"name\": \"\\u202e\"}]}").is_err());
    }

    #[test]
    fn mutes_the_lock_and_the_room_wide_login_rate() {
        let (wall, now) = (UNIX_EPOCH + Duration::from_secs(1_000_000), Instant::now());
        let mut rules = Rules::new(2);
        rules.mute("bob", "bob", Some(wall + Duration::from_secs(90)));
        assert_eq!(rules.may_speak("bob", wall).unwrap_err().code, ErrorCode::Muted);
        assert!(rules.may_speak("bob", wall + Duration::from_secs(90)).is_ok());
        assert!(rules.unmute("bob") && rules.may_speak("bob", wall).is_ok());
        assert!(rules.set_locked(true) && !rules.set_locked(true));
        let code = |r: Result<(), Rejection>| r.err().map(|r| r.code);
        assert_eq!(
            code(rules.admits("new", ip("192.0.2.1"), Role::Member, wall, now)),
            Some(ErrorCode::RoomLocked)
        );
        rules.set_locked(false);
        for _ in 0..2 {
            assert_eq!(code(rules.admits("new", ip("192.0.2.1"), Role::Member, wall, now)), None);
            rules.logged_in(now);
        }
        let raid = rules.admits("new", ip("203.0.113.5"), Role::Member, wall, now);
        assert_eq!(code(raid), Some(ErrorCode::TooManyLogins), "from any address");
        assert_eq!(
            code(rules.admits(
                "new",
                ip("192.0.2.1"),
                Role::Member,
                wall,
                now + Duration::from_secs(1)
            )),
            None
        );
    }

    #[test]
    fn a_moderator_comes_in_through_a_lock_not_through_a_ban() {
        let (wall, now) = (UNIX_EPOCH + Duration::from_secs(1_000_000), Instant::now());
        let mut rules = Rules::new(1);
        rules.set_locked(true);
        let code = |r: Result<(), Rejection>| r.err().map(|r| r.code);
        let (me, moderator) = (ip("192.0.2.1"), Role::Moderator);
        assert_eq!(code(rules.admits("alice", me, moderator, wall, now)), None);
        rules.set_locked(false);
        rules.logged_in(now);
        assert_eq!(
            code(rules.admits("bob", me, Role::Member, wall, now)),
            Some(ErrorCode::TooManyLogins)
        );
        assert_eq!(code(rules.admits("alice", me, moderator, wall, now)), None, "a raid's rate");
        let ban = Ban {
            target: Target::parse("alice").unwrap(),
            until: None,
            reason: String::new(),
            by: OWNER.into(),
            since: wall,
        };
        rules.ban(ban);
        assert_eq!(code(rules.admits("alice", me, moderator, wall, now)), Some(ErrorCode::Banned));
    }

    #[test]
    fn what_a_moderator_may_do() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut rules = Rules::new(0);
        let is_admin = |key: &str| key == "alice" || key == "carol";
        let action = |v: Value| Action::of_json(&v).unwrap().unwrap();
        let may = |rules: &Rules, v: Value| rules.may_moderate(&action(v), is_admin);
        assert_eq!(may(&rules, json!({"cmd": "kick", "target": "bob", "for_secs": 60})), Ok(()));
        assert_eq!(may(&rules, json!({"cmd": "ban", "target": "bob"})), Ok(()));
        assert_eq!(may(&rules, json!({"cmd": "mute", "target": "bob"})), Ok(()));
        assert_eq!(may(&rules, json!({"cmd": "lock"})), Ok(()));
        assert_eq!(may(&rules, json!({"cmd": "say", "text": "hi"})), Ok(()));
        for cmd in ["kick", "ban", "mute"] {
            // Another moderator, or a look-alike of one.
            let why = may(&rules, json!({"cmd": cmd, "target": "Car0l"})).unwrap_err();
            assert_eq!(
                why,
                format!("Car0l is a moderator: only the room's owner can {cmd} a moderator")
            );
        }
        for cmd in ["ban", "unban"] {
            let why = may(&rules, json!({"cmd": cmd, "target": "203.0.113.0/24"})).unwrap_err();
            assert!(why.contains("only the room's owner bans addresses"), "{why}");
        }
        let why = may(&rules, json!({"cmd": "kick", "target": "\u{202e}x"})).unwrap_err();
        assert!(why.contains("neither an address"), "{why}");
        let ban = |by: &str| Ban {
            target: Target::parse("dave").unwrap(),
            until: None,
            reason: String::new(),
            by: by.into(),
            since: wall,
        };
        rules.ban(ban("alice"));
        assert_eq!(may(&rules, json!({"cmd": "unban", "target": "Dave"})), Ok(()));
        rules.ban(ban(OWNER));
        let why = may(&rules, json!({"cmd": "unban", "target": "Dave"})).unwrap_err();
        assert_eq!(why, "dave was banned by the room's owner: only they can change it");
        // Nor replace it with a short ban of theirs (found by an attacker's review).
        for replace in [
            json!({"cmd": "ban", "target": "dave", "for_secs": 1}),
            json!({"cmd": "kick", "target": "Dave", "for_secs": 1}),
        ] {
            assert!(may(&rules, replace).unwrap_err().contains("only they can change it"));
        }
        assert_eq!(
            may(&rules, json!({"cmd": "kick", "target": "dave"})),
            Ok(()),
            "a plain kick is no ban"
        );
        // The reason goes into the log: no line breaks in it.
        let kick = action(json!({"cmd": "kick", "target": "b", "reason": "x\nabuse from 1.2.3.4"}));
        assert!(matches!(kick, Action::Kick { reason, .. } if reason == "xabuse from 1.2.3.4"));
    }

    #[test]
    fn what_a_cluster_carries_reads_back_the_same() {
        let actions = [
            Action::Kick { target: "bob".into(), for_secs: Some(60), reason: "spam".into() },
            Action::Ban { target: "10.0.0.0/8".into(), for_secs: None, reason: String::new() },
            Action::Unban { target: "bob".into() },
            Action::Mute { target: "bob".into(), for_secs: None },
            Action::Unmute { target: "bob".into() },
            Action::Lock,
            Action::Unlock,
            Action::Say { text: "hi".into() },
        ];
        for action in actions {
            assert_eq!(Action::of_json(&action.to_json()), Some(Ok(action.clone())));
        }
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ban = Ban {
            target: Target::parse("Bob").unwrap(),
            until: Some(wall + Duration::from_secs(60)),
            reason: "r".into(),
            by: "ctl".into(),
            since: wall,
        };
        assert_eq!(Ban::of_json(&ban.to_json()), Some(ban.clone()));
        let mute = mute_json("Bob", Some(wall));
        assert_eq!(mute, json!({"name": "Bob", "until": 1_000_000}));
        assert_eq!(mute_of(&mute), Some(("bob".into(), "Bob".into(), Some(wall))));
        assert_eq!(mute_of(&json!({"name": "\u{202e}"})), None);
        assert_eq!(mute_of(&json!({"name": "a", "until": u64::MAX})), None, "no such time");

        // The cluster's rules replace this node's.
        let mut rules = Rules::new(0);
        rules.mute("al", "al", None);
        rules.ban(Ban { target: Target::parse("al").unwrap(), ..ban.clone() });
        rules.replace(vec![ban.clone()], vec![("cy".into(), "Cy".into(), None)], true);
        assert!(rules.is_banned(&ban.target) && !rules.is_banned(&Target::parse("al").unwrap()));
        assert!(rules.is_muted("cy") && !rules.is_muted("al") && rules.is_locked());
        let why = rules.banned("b0b", ip("192.0.2.1"), wall).unwrap();
        assert_eq!(why.text, "this name is banned for 1 min more (r)");
    }

    #[test]
    fn a_ban_is_the_same_ban_however_it_is_spelled() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ban = |target: &str| Ban {
            target: Target::parse(target).unwrap(),
            until: None,
            reason: String::new(),
            by: OWNER.into(),
            since: wall,
        };
        let mut rules = Rules::new(0);
        rules.ban(ban("Troll"));
        rules.ban(ban("tr0ll"));
        rules.ban(ban("10.0.0.5/8"));
        assert_eq!(rules.bans(wall).count(), 2, "Troll and tr0ll are one ban");
        assert!(rules.unban(&Target::parse("TROLL").unwrap()));
        assert!(rules.unban(&Target::parse("10.0.0.0/8").unwrap()));
        assert_eq!(Target::parse("10.0.0.5/8").unwrap().shown(), "10.0.0.0/8");
        assert_eq!(Target::parse("2001:db8::7/64").unwrap().shown(), "2001:db8::/64");
        assert_eq!(Target::parse("0.0.0.0/0").unwrap().shown(), "0.0.0.0/0");
    }

    #[test]
    fn durations_as_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "0", "m", "10x", "-5m", "99999999999999999999d", "11000d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(human_duration(Duration::from_secs(90)), "1 min 30 s");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 h");
    }
}
