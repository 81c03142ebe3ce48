//! Per-address accounting, so that one address cannot take every slot or
//! guess passwords or churn at line rate: open connections, unauthenticated
//! ones, wrong passwords per minute, and the rates of new connections and
//! of logins (token buckets). IPv6 addresses count per /64.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.net, self.bits) {
            (IpAddr::V4(_), 32) | (IpAddr::V6(_), 128) => write!(f, "{}", self.net),
            (net, bits) => write!(f, "{net}/{bits}"),
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
        // The host bits cleared: 10.0.0.5/8 is 10.0.0.0/8.
        let host = u32::from(width - bits);
        let masked = |x: u128| x.checked_shr(host).map_or(0, |x| x << host);
        let net = match net {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(masked(u32::from(a).into()) as u32)),
            IpAddr::V6(a) => IpAddr::V6(masked(a.into()).into()),
        };
        Ok(Cidr { net, bits })
    }
}

/// Why a new connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyConnections,
    TooManyHandshakes,
    /// Past `connections_per_minute_per_ip`.
    ConnectionRate,
}

impl Refused {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::TooManyConnections => "per_address_connections",
            Refused::TooManyHandshakes => "per_address_handshakes",
            Refused::ConnectionRate => "per_address_connection_rate",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::TooManyConnections => "too many connections from your address",
            Refused::TooManyHandshakes => "too many unfinished logins from your address",
            Refused::ConnectionRate => {
                "too many new connections from your address: wait a little and try again"
            }
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
    /// New connections and logins, while either bucket is not full.
    new_connections: Option<Bucket>,
    logins: Option<Bucket>,
}

/// A per-address token bucket that refills at `per_minute` a minute up to
/// a burst of `per_minute`. An address has one only while it is not full:
/// a full bucket is the same as none, so it is forgotten.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// The tokens of `bucket` (`None`: full) at `now`.
    fn level(bucket: Option<Bucket>, now: Instant, per_minute: u32) -> f64 {
        let burst = f64::from(per_minute);
        bucket.map_or(burst, |b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            (b.tokens + elapsed * burst / 60.0).min(burst)
        })
    }

    /// Takes a token if there is one; `false`: none (nothing taken).
    /// `per_minute` 0 means no limit.
    fn take(bucket: &mut Option<Bucket>, now: Instant, per_minute: u32) -> bool {
        if per_minute == 0 {
            return true;
        }
        let tokens = Bucket::level(*bucket, now, per_minute);
        if tokens < 1.0 {
            return false;
        }
        *bucket = Some(Bucket { tokens: tokens - 1.0, last: now });
        true
    }

    /// Whether the bucket holds state at `now` (it is not full yet).
    fn remembered(bucket: Option<Bucket>, now: Instant, per_minute: u32) -> bool {
        bucket.is_some() && Bucket::level(bucket, now, per_minute) < f64::from(per_minute)
    }
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
    /// New connections per minute (a burst of as many).
    pub connections_per_minute: u32,
    /// Logins per minute (a burst of as many).
    pub logins_per_minute: u32,
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

    /// A reload changed the limits: they apply to what comes next (new
    /// connections, passwords, logins); nothing open is closed for them.
    pub fn set_limits(&mut self, limits: impl Into<PerAddressLimits>) {
        self.limits = limits.into();
    }

    /// A new connection from `ip`, counted as a handshake until it logs in.
    /// A refused one costs nothing but the check (and no entry is kept for
    /// it beyond what the address had).
    pub fn open(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let key = AddrKey::of(ip);
        let limits = self.limits;
        let entry = self.entries.entry(key).or_default();
        let refused = if limits.connections > 0 && entry.connections >= limits.connections {
            Some(Refused::TooManyConnections)
        } else if limits.handshakes > 0 && entry.handshakes >= limits.handshakes {
            Some(Refused::TooManyHandshakes)
        } else if !Bucket::take(&mut entry.new_connections, now, limits.connections_per_minute) {
            Some(Refused::ConnectionRate)
        } else {
            None
        };
        if let Some(refused) = refused {
            if !entry.remembered(now, &limits) {
                self.entries.remove(&key);
            }
            return Err(refused);
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
            if !entry.remembered(now, &self.limits) {
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

    /// Whether `ip` may log in now, under `logins_per_minute_per_ip`
    /// (checked before a name is tried; nothing is taken).
    pub fn may_log_in(&self, ip: IpAddr, now: Instant) -> bool {
        let per_minute = self.limits.logins_per_minute;
        per_minute == 0
            || Bucket::level(
                self.entries.get(&AddrKey::of(ip)).and_then(|e| e.logins),
                now,
                per_minute,
            ) >= 1.0
    }

    /// `ip` logged in: a token of its login rate is taken. (Claims a
    /// cluster answers at once may all pass `may_log_in`; the bucket then
    /// stays empty for longer, never below empty.)
    pub fn logged_in(&mut self, ip: IpAddr, now: Instant) {
        let per_minute = self.limits.logins_per_minute;
        if per_minute == 0 {
            return;
        }
        let entry = self.entries.entry(AddrKey::of(ip)).or_default();
        if !Bucket::take(&mut entry.logins, now, per_minute) {
            entry.logins = Some(Bucket { tokens: 0.0, last: now });
        }
    }

    /// Forgets addresses with nothing open, no recent failures and full
    /// buckets (once a tick).
    pub fn sweep(&mut self, now: Instant) {
        let limits = self.limits;
        self.entries.retain(|_, e| e.remembered(now, &limits));
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

    /// Whether this address must be kept: something open, recent failures,
    /// or a bucket not full yet.
    fn remembered(&self, now: Instant, limits: &PerAddressLimits) -> bool {
        self.connections > 0
            || self.remembers_failures(now)
            || Bucket::remembered(self.new_connections, now, limits.connections_per_minute)
            || Bucket::remembered(self.logins, now, limits.logins_per_minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: u32, handshakes: u32, attempts: u32) -> PerAddressLimits {
        PerAddressLimits {
            connections,
            handshakes,
            wrong_passwords_per_minute: attempts,
            connections_per_minute: 0,
            logins_per_minute: 0,
        }
    }

    #[test]
    fn new_connections_have_a_rate_per_address() {
        let now = Instant::now();
        let rate = PerAddressLimits { connections_per_minute: 3, ..limits(0, 0, 0) };
        let mut addrs = Addresses::new(rate);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..3 {
            addrs.open(ip, now).unwrap();
            addrs.close(ip, now);
        }
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(addrs.open(same_64, now), Err(Refused::ConnectionRate));
        let other: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        addrs.open(other, now).unwrap();
        addrs.close(other, now);
        // 3 a minute: one token in 20 s.
        let later = now + Duration::from_secs(20);
        addrs.open(ip, later).unwrap();
        assert_eq!(addrs.open(ip, later), Err(Refused::ConnectionRate));
        addrs.close(ip, later);
        addrs.sweep(later);
        assert_eq!(addrs.len(), 1, "kept while its bucket refills (the other one is full again)");
        addrs.sweep(later + MINUTE);
        assert_eq!(addrs.len(), 0, "full buckets are forgotten");
    }

    #[test]
    fn logins_have_a_rate_per_address() {
        let now = Instant::now();
        let mut addrs =
            Addresses::new(PerAddressLimits { logins_per_minute: 2, ..limits(0, 0, 0) });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            assert!(addrs.may_log_in(ip, now));
            addrs.logged_in(ip, now);
        }
        assert!(!addrs.may_log_in(ip, now));
        addrs.logged_in(ip, now); // a claim that passed earlier: never below empty
        assert!(addrs.may_log_in("192.0.2.2".parse().unwrap(), now));
        assert!(addrs.may_log_in(ip, now + Duration::from_secs(30)));
        addrs.sweep(now + Duration::from_secs(30));
        assert_eq!(addrs.len(), 1);
        addrs.sweep(now + MINUTE);
        assert_eq!(addrs.len(), 0);
        let off = Addresses::new(limits(0, 0, 0));
        assert!(off.may_log_in(ip, now));
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
        addrs.open(ip, now).unwrap();
        addrs.open(ip, now).unwrap();
        assert_eq!(addrs.open(ip, now), Err(Refused::TooManyHandshakes));
        addrs.open(other, now).unwrap();
        addrs.handshake_done(ip); // one logged in
        addrs.open(ip, now).unwrap();
        assert_eq!(addrs.open(ip, now), Err(Refused::TooManyConnections));
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
        addrs.open(ip, now).unwrap();
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
