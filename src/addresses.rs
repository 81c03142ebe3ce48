//! Per-address accounting, so that one address cannot take every slot or
//! guess passwords at line rate: open connections, unauthenticated ones,
//! and wrong passwords per minute. IPv6 addresses count per /64.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

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

/// Who a connection is from, as the log and the limits see it: the socket's
/// peer, or the client a trusted proxy named (its port is then unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub ip: IpAddr,
    /// `None` when a trusted proxy gave the address.
    port: Option<u16>,
}

impl Peer {
    pub fn direct(addr: SocketAddr) -> Peer {
        Peer { ip: addr.ip().to_canonical(), port: Some(addr.port()) }
    }

    pub fn proxied(ip: IpAddr) -> Peer {
        Peer { ip: ip.to_canonical(), port: None }
    }

    pub fn is_proxied(&self) -> bool {
        self.port.is_none()
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => write!(f, "{} (via proxy)", self.ip),
        }
    }
}

/// An address or a network (`10.0.0.0/8`, `2001:db8::/32`), for
/// `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.bits)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(net.into(), ip.into(), 128, self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u8, bits: u8) -> bool {
    bits == 0 || (a ^ b) >> (width - bits) == 0
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or network (e.g. \"10.0.0.0/8\")"))?;
        let net = net.to_canonical();
        let width = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => width,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= width)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {width}"))?,
        };
        Ok(Cidr { net, bits })
    }
}

/// Why a new connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyConnections,
    TooManyHandshakes,
}

impl Refused {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::TooManyConnections => "per_address_connections",
            Refused::TooManyHandshakes => "per_address_handshakes",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::TooManyConnections => "too many connections from your address",
            Refused::TooManyHandshakes => "too many unfinished logins from your address",
        })
    }
}

#[derive(Debug, Default)]
struct Entry {
    connections: u32,
    handshakes: u32,
    /// Wrong passwords in the current minute and when it began.
    wrong: u32,
    wrong_since: Option<Instant>,
}

/// What one address may hold; 0 = no limit. From the config's `Limits`
/// (`max_connections_per_ip` and the next two keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerAddressLimits {
    /// Open connections.
    pub connections: u32,
    /// Connections not logged in yet.
    pub handshakes: u32,
    pub wrong_passwords_per_minute: u32,
}

pub struct Addresses {
    entries: HashMap<AddrKey, Entry>,
    limits: PerAddressLimits,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Addresses {
    /// `Addresses::new(&config.limits)` works: config.rs has the `From`.
    pub fn new(limits: impl Into<PerAddressLimits>) -> Self {
        Addresses { entries: HashMap::new(), limits: limits.into() }
    }

    /// A new connection from `ip`, counted as a handshake until it logs in.
    pub fn open(&mut self, ip: IpAddr) -> Result<(), Refused> {
        let entry = self.entries.entry(AddrKey::of(ip)).or_default();
        if self.limits.connections > 0 && entry.connections >= self.limits.connections {
            return Err(Refused::TooManyConnections);
        }
        if self.limits.handshakes > 0 && entry.handshakes >= self.limits.handshakes {
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
        if self.limits.wrong_passwords_per_minute == 0 {
            return true;
        }
        let entry = self.entries.entry(AddrKey::of(ip)).or_default();
        entry.forget_old_failures(now);
        entry.wrong < self.limits.wrong_passwords_per_minute
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

    fn limits(connections: u32, handshakes: u32, attempts: u32) -> PerAddressLimits {
        PerAddressLimits { connections, handshakes, wrong_passwords_per_minute: attempts }
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
    fn networks_and_peers() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()), "mapped IPv4");
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()) && !one.contains("::2".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "proxy.example", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let peer = Peer::direct("[::ffff:192.0.2.7]:4000".parse().unwrap());
        assert_eq!(peer.to_string(), "192.0.2.7:4000");
        assert_eq!(
            Peer::proxied("203.0.113.9".parse().unwrap()).to_string(),
            "203.0.113.9 (via proxy)"
        );
    }

    #[test]
    fn connections_and_handshakes_are_capped_per_address() {
        let now = Instant::now();
        let mut addrs = Addresses::new(limits(3, 2, 0));
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
        let mut addrs = Addresses::new(limits(0, 0, 2));
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
