//! The log's budget per address: every line a remote peer can cause (a
//! login, a leave, a wrong password, a refusal, a timeout, abuse) is
//! charged to the peer's address, so that one address, however many
//! connections it opens, writes a few lines a minute. What is over the
//! budget is counted, and the count logged as one line when the minute
//! ends.
//!
//! Abuse (a peer past one of the server's per-address limits) is logged at
//! WARN in one line format, the one `contrib/fail2ban` matches:
//!
//! ```text
//! abuse from 203.0.113.7: too_many_attempts
//! abuse from 203.0.113.7: too_many_attempts (12 more in the last minute)
//! ```
//!
//! Memory is bounded: at most `MAX_ADDRESSES` addresses are tracked; past
//! that, the others share one budget. An address is forgotten once its
//! minute is over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use log::{info, warn};

use crate::addresses::{AddrKey, Refused};
use crate::ratelimit::LOG_INTERVAL;

/// A peer past one of the per-address limits: the word after `abuse from
/// ADDRESS: ` (docs/DEPLOY.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// Wrong passwords past `login_attempts_per_minute`.
    TooManyAttempts,
    /// Connections past `max_connections_per_ip`.
    TooManyConnections,
    /// Unfinished logins past `max_handshakes_per_ip`.
    TooManyHandshakes,
    /// Kept sending past the rate limit (disconnected).
    Flood,
    /// New connections past `connections_per_minute_per_ip`.
    TooManyNewConnections,
    /// Logins past `logins_per_minute_per_ip`.
    TooManyLogins,
}

const ABUSES: usize = 6;

impl Abuse {
    pub fn as_str(self) -> &'static str {
        match self {
            Abuse::TooManyAttempts => "too_many_attempts",
            Abuse::TooManyConnections => "too_many_connections",
            Abuse::TooManyHandshakes => "too_many_handshakes",
            Abuse::Flood => "flood",
            Abuse::TooManyNewConnections => "too_many_new_connections",
            Abuse::TooManyLogins => "too_many_logins",
        }
    }

    /// A connection refused by a per-address limit.
    pub fn of(refused: &Refused) -> Abuse {
        match refused {
            Refused::TooManyConnections => Abuse::TooManyConnections,
            Refused::TooManyHandshakes => Abuse::TooManyHandshakes,
            Refused::ConnectionRate => Abuse::TooManyNewConnections,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    const ALL: [Abuse; ABUSES] = [
        Abuse::TooManyAttempts,
        Abuse::TooManyConnections,
        Abuse::TooManyHandshakes,
        Abuse::Flood,
        Abuse::TooManyNewConnections,
        Abuse::TooManyLogins,
    ];
}

/// Ordinary lines (INFO), budgeted per address by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Logins and leaves.
    Sessions,
    /// Wrong passwords, refused logins, timeouts, slow readers.
    Refusals,
    /// Messages refused after login (bad JSON, rate limited, ...): one line
    /// a minute per address, the rest counted.
    Messages,
    /// A moderator's actions from the room (WARN, as the owner's are).
    Moderation,
}

/// Lines an address may cause per minute, by class; one each for abuse
/// (of each kind).
const SESSION_LINES: u32 = 20;
const REFUSAL_LINES: u32 = 10;
const MESSAGE_LINES: u32 = 1;
/// A moderator acting more than this a minute is counted, not logged.
const MODERATION_LINES: u32 = 30;
/// Lines per minute from all the addresses beyond `MAX_ADDRESSES`.
const OVERFLOW_LINES: u32 = 20;
/// Addresses tracked at once (an entry is about 300 bytes with the table's
/// own: about 1.2 MiB at most).
pub const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Default)]
struct Budget {
    /// When the current interval began (`None`: nothing in it yet).
    since: Option<Instant>,
    logged: u32,
    unlogged: u64,
}

impl Budget {
    fn allow(&mut self, now: Instant, lines: u32) -> bool {
        if self.since.is_none() {
            self.since = Some(now);
            self.logged = 0;
        }
        if self.logged < lines {
            self.logged += 1;
            true
        } else {
            self.unlogged += 1;
            false
        }
    }

    /// Once the interval is over: how many went unlogged in it, if any.
    fn end(&mut self, now: Instant) -> Option<u64> {
        let since = self.since?;
        if now.saturating_duration_since(since) < LOG_INTERVAL {
            return None;
        }
        self.since = None;
        let n = std::mem::take(&mut self.unlogged);
        (n > 0).then_some(n)
    }

    fn idle(&self) -> bool {
        self.since.is_none()
    }
}

#[derive(Debug)]
struct Entry {
    /// The address as logged (the first of its /64 for IPv6).
    ip: IpAddr,
    sessions: Budget,
    refusals: Budget,
    messages: Budget,
    moderation: Budget,
    abuse: [Budget; ABUSES],
}

impl Entry {
    fn new(ip: IpAddr) -> Self {
        Entry {
            ip,
            sessions: Budget::default(),
            refusals: Budget::default(),
            messages: Budget::default(),
            moderation: Budget::default(),
            abuse: Default::default(),
        }
    }

    fn idle(&self) -> bool {
        self.sessions.idle()
            && self.refusals.idle()
            && self.messages.idle()
            && self.moderation.idle()
            && self.abuse.iter().all(Budget::idle)
    }
}

#[derive(Debug, Default)]
pub struct PeerLog {
    entries: HashMap<AddrKey, Entry>,
    /// Shared by the addresses that found the table full.
    overflow: Budget,
}

impl PeerLog {
    fn entry(&mut self, ip: IpAddr) -> Option<&mut Entry> {
        let key = AddrKey::of(ip);
        if self.entries.len() >= MAX_ADDRESSES && !self.entries.contains_key(&key) {
            return None;
        }
        Some(self.entries.entry(key).or_insert_with(|| Entry::new(ip.to_canonical())))
    }

    /// Whether an ordinary line of `class` caused by `ip` may be logged now
    /// (`false`: it was counted).
    pub fn allow(&mut self, class: Class, ip: IpAddr, now: Instant) -> bool {
        match self.entry(ip) {
            Some(entry) => match class {
                Class::Sessions => entry.sessions.allow(now, SESSION_LINES),
                Class::Refusals => entry.refusals.allow(now, REFUSAL_LINES),
                Class::Messages => entry.messages.allow(now, MESSAGE_LINES),
                Class::Moderation => entry.moderation.allow(now, MODERATION_LINES),
            },
            None => self.overflow.allow(now, OVERFLOW_LINES),
        }
    }

    /// `ip` is past one of the per-address limits: the abuse line, within
    /// the budget (one line per kind a minute, then a count).
    pub fn abuse(&mut self, what: Abuse, ip: IpAddr, now: Instant) {
        let allowed = match self.entry(ip) {
            Some(entry) => entry.abuse[what.index()].allow(now, 1),
            None => self.overflow.allow(now, OVERFLOW_LINES),
        };
        if allowed {
            warn!("{}", abuse_line(ip.to_canonical(), what, None));
        }
    }

    /// Once a tick: the count line of every interval that is over, and the
    /// addresses with nothing left to count forgotten.
    pub fn tick(&mut self, now: Instant) {
        self.entries.retain(|_, entry| {
            let ip = entry.ip;
            if let Some(n) = entry.sessions.end(now) {
                info!(
                    "{ip}: {n} more logins and leaves in the last minute (not logged one by one)"
                );
            }
            if let Some(n) = entry.refusals.end(now) {
                info!("{ip}: {n} more refusals in the last minute (not logged one by one)");
            }
            if let Some(n) = entry.messages.end(now) {
                info!("{ip}: refused {n} more messages in the last minute");
            }
            if let Some(n) = entry.moderation.end(now) {
                warn!(
                    "{ip}: {n} more moderation actions in the last minute (not logged one by one)"
                );
            }
            for what in Abuse::ALL {
                if let Some(n) = entry.abuse[what.index()].end(now) {
                    warn!("{}", abuse_line(ip, what, Some(n)));
                }
            }
            !entry.idle()
        });
        if let Some(n) = self.overflow.end(now) {
            info!("{n} more lines from other addresses in the last minute (not logged one by one)");
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The one format of an abuse line (docs/DEPLOY.md, contrib/fail2ban).
pub fn abuse_line(ip: IpAddr, what: Abuse, more: Option<u64>) -> String {
    match more {
        None => format!("abuse from {ip}: {}", what.as_str()),
        Some(n) => format!("abuse from {ip}: {} ({n} more in the last minute)", what.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_address_gets_a_few_lines_a_minute_whatever_it_does() {
        let t0 = Instant::now();
        let mut log = PeerLog::default();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        let allowed = (0..1000).filter(|_| log.allow(Class::Sessions, ip, t0)).count();
        assert_eq!(allowed, SESSION_LINES as usize);
        let refusals = (0..1000).filter(|_| log.allow(Class::Refusals, ip, t0)).count();
        assert_eq!(refusals, REFUSAL_LINES as usize, "each class has its own budget");
        assert!(log.allow(Class::Sessions, other, t0), "another address has its own");
        log.tick(t0 + Duration::from_secs(30));
        assert_eq!(log.len(), 2);
        log.tick(t0 + LOG_INTERVAL);
        assert_eq!(log.len(), 0, "forgotten once the minute is over");
        assert!(log.allow(Class::Sessions, ip, t0 + LOG_INTERVAL));
    }

    #[test]
    fn ipv6_is_budgeted_per_64() {
        let t0 = Instant::now();
        let mut log = PeerLog::default();
        let lines = (0..1000u32)
            .filter(|i| {
                let ip: IpAddr = format!("2001:db8::{:x}", i + 1).parse().unwrap();
                log.allow(Class::Refusals, ip, t0)
            })
            .count();
        assert_eq!(lines, REFUSAL_LINES as usize);
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut log = PeerLog::default();
        let mut allowed = 0;
        for i in 0..(MAX_ADDRESSES as u32 + 10_000) {
            let ip = IpAddr::from(u32::to_be_bytes(0x0a00_0000 + i));
            allowed += usize::from(log.allow(Class::Sessions, ip, t0));
        }
        assert_eq!(log.len(), MAX_ADDRESSES);
        assert_eq!(allowed, MAX_ADDRESSES + OVERFLOW_LINES as usize);
        log.tick(t0 + LOG_INTERVAL);
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn the_abuse_line_format() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            abuse_line(ip, Abuse::TooManyAttempts, None),
            "abuse from 203.0.113.7: too_many_attempts"
        );
        assert_eq!(
            abuse_line("2001:db8::1".parse().unwrap(), Abuse::Flood, Some(12)),
            "abuse from 2001:db8::1: flood (12 more in the last minute)"
        );
        let t0 = Instant::now();
        let mut log = PeerLog::default();
        for _ in 0..5 {
            log.abuse(Abuse::TooManyConnections, ip, t0);
        }
        let entry = &log.entries[&AddrKey::of(ip)];
        assert_eq!(entry.abuse[Abuse::TooManyConnections.index()].unlogged, 4);
    }
}
