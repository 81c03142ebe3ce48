//! Per-address accounting, so that one address cannot take every slot or
//! guess passwords at line rate: open connections, unauthenticated ones,
//! and wrong passwords per minute. IPv6 addresses count per /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// An address as the limits see it: IPv4 whole, IPv6 by its /64 prefix
/// (one host usually holds a whole /64). IPv4-mapped IPv6 counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrKey {
    V4(u32),
    V6Prefix(u64),
}

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(v4.into()),
                None => AddrKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why a new connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyConnections,
    TooManyHandshakes,
}

#[derive(Debug, Default)]
struct Entry {
    connections: u32,
    handshakes: u32,
    /// Wrong passwords in the current minute and when it began.
    wrong: u32,
    wrong_since: Option<Instant>,
}

pub struct Addresses {
    entries: HashMap<AddrKey, Entry>,
    max_connections: u32,
    max_handshakes: u32,
    attempts_per_minute: u32,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Addresses {
    pub fn new(limits: &Limits) -> Self {
        Addresses {
            entries: HashMap::new(),
            max_connections: limits.max_connections_per_ip,
            max_handshakes: limits.max_handshakes_per_ip,
            attempts_per_minute: limits.login_attempts_per_minute,
        }
    }

    /// A new connection from `ip`, counted as a handshake until it logs in.
    pub fn open(&mut self, ip: IpAddr) -> Result<(), Refused> {
        let entry = self.entries.entry(AddrKey::of(ip)).or_default();
        if self.max_connections > 0 && entry.connections >= self.max_connections {
            return Err(Refused::TooManyConnections);
        }
        if self.max_handshakes > 0 && entry.handshakes >= self.max_handshakes {
            return Err(Refused::TooManyHandshakes);
        }
        entry.connections += 1;
        entry.handshakes += 1;
        Ok(())
    }

    /// A connection from `ip` is no longer unauthenticated (it logged in, or
    /// its session ended).
    pub fn handshake_done(&mut self, ip: IpAddr) {
        if let Some(entry) = self.entries.get_mut(&AddrKey::of(ip)) {
            entry.handshakes = entry.handshakes.saturating_sub(1);
        }
    }

    /// A connection from `ip` is gone.
    pub fn close(&mut self, ip: IpAddr, now: Instant) {
        let key = AddrKey::of(ip);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 && !entry.remembers_failures(now) {
                self.entries.remove(&key);
            }
        }
    }

    /// Whether `ip` may have a password checked now.
    pub fn may_try_password(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.attempts_per_minute == 0 {
            return true;
        }
        let entry = self.entries.entry(AddrKey::of(ip)).or_default();
        entry.forget_old_failures(now);
        entry.wrong < self.attempts_per_minute
    }

    pub fn wrong_password(&mut self, ip: IpAddr, now: Instant) {
        let entry = self.entries.entry(AddrKey::of(ip)).or_default();
        entry.forget_old_failures(now);
        entry.wrong += 1;
        entry.wrong_since.get_or_insert(now);
    }

    /// Forgets addresses with nothing open and no recent failures (once a tick).
    pub fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.connections > 0 || e.remembers_failures(now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Entry {
    fn forget_old_failures(&mut self, now: Instant) {
        if self.wrong_since.is_some_and(|t| now.saturating_duration_since(t) >= MINUTE) {
            self.wrong = 0;
            self.wrong_since = None;
        }
    }

    fn remembers_failures(&self, now: Instant) -> bool {
        self.wrong_since.is_some_and(|t| now.saturating_duration_since(t) < MINUTE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: u32, handshakes: u32, attempts: u32) -> Limits {
        Limits {
            max_connections_per_ip: connections,
            max_handshakes_per_ip: handshakes,
            login_attempts_per_minute: attempts,
            ..Limits::default()
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddrKey::of(a), AddrKey::of(b));
        assert_ne!(AddrKey::of(a), AddrKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(AddrKey::of(mapped), AddrKey::of("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn connections_and_handshakes_are_capped_per_address() {
        let now = Instant::now();
        let mut addrs = Addresses::new(&limits(3, 2, 0));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        addrs.open(ip).unwrap();
        addrs.open(ip).unwrap();
        assert_eq!(addrs.open(ip), Err(Refused::TooManyHandshakes));
        addrs.open(other).unwrap();
        addrs.handshake_done(ip); // one logged in
        addrs.open(ip).unwrap();
        assert_eq!(addrs.open(ip), Err(Refused::TooManyConnections));
        for _ in 0..3 {
            addrs.close(ip, now);
        }
        addrs.close(other, now);
        assert_eq!(addrs.len(), 0, "nothing is kept for addresses with nothing open");
    }

    #[test]
    fn wrong_passwords_are_remembered_for_a_minute() {
        let now = Instant::now();
        let mut addrs = Addresses::new(&limits(0, 0, 2));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        addrs.open(ip).unwrap();
        assert!(addrs.may_try_password(ip, now));
        addrs.wrong_password(ip, now);
        addrs.wrong_password(ip, now);
        assert!(!addrs.may_try_password("2001:db8::2".parse().unwrap(), now), "same /64");
        addrs.close(ip, now);
        addrs.sweep(now);
        assert_eq!(addrs.len(), 1, "failures outlive the connection");
        let later = now + MINUTE;
        assert!(addrs.may_try_password(ip, later));
        addrs.sweep(later);
        assert_eq!(addrs.len(), 0);
    }
}
