//! `config.json`: the original server's keys plus optional limits. Every key
//! is declared once, in [`KEYS`] (name, default, how it is checked, a line
//! of doc); mistakes are reported naming the key (and the file).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde_json::{Map, Value};

use crate::addresses::{Cidr, PerAddressLimits};
use crate::redis::RedisUrl;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Certificate and key files when `SSL` is on.
    pub tls: Option<TlsFiles>,
    pub server_ip: String,
    pub server_port: u16,
    pub server_name: String,
    pub server_password: String,
    pub limits: Limits,
    /// Broadcasts kept in memory and replayed to joiners; 0 = off.
    pub history_size: usize,
    /// Most bytes of them (at most half of `max_outbound_bytes`).
    pub history_max_bytes: usize,
    pub log_level: LevelFilter,
    /// Web origins allowed to open a WebSocket; empty = any.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` name the client.
    pub trusted_proxies: Vec<Cidr>,
    /// `host:port` of the health and metrics listener; `None` = off.
    pub metrics_addr: Option<String>,
    /// One room across processes through Redis; `None` = standalone.
    pub cluster: Option<Cluster>,
    /// SO_REUSEPORT: several processes share `server_port`.
    pub reuse_port: bool,
    /// Broadcasts and private messages only in their sealed (encrypted) form.
    pub e2e_room: bool,
    /// Logins per second into this server, from any address (anti-raid); 0 = no limit.
    pub room_logins_per_sec: u32,
    /// The Unix socket `ragnarok ctl` talks to; `None` = off.
    pub control_socket: Option<PathBuf>,
    /// Where bans are kept across restarts (standalone); `None` = nowhere.
    pub state_file: Option<PathBuf>,
    /// Moderators in the room, each with their own password hash.
    pub admins: Vec<crate::admins::Admin>,
}

/// `redis_url` and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub redis: RedisUrl,
    /// The room's name on Redis: nodes with the same Redis and name are one room.
    pub name: String,
    /// CA certificates (PEM) that `rediss://` trusts; `None` = the system's.
    pub redis_ca_file: Option<PathBuf>,
}

/// `cluster_name` when the config has none (the default in [`KEYS`] says the same).
pub const DEFAULT_CLUSTER_NAME: &str = "ragnarok";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Resource limits; the defaults leave room for 10,000 users on one core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_message_bytes: usize,
    pub max_outbound_bytes: usize,
    /// TLS and HTTP handshake, from accept to the WebSocket opening.
    pub handshake_timeout: Duration,
    /// Password and name, from the WebSocket opening: long enough to type.
    pub login_timeout: Duration,
    /// From a message's first byte to its last.
    pub message_timeout: Duration,
    /// Silence before a ping; `None` turns pings off.
    pub idle_timeout: Option<Duration>,
    /// Messages per second per user; 0 turns rate limiting off.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Bytes of messages per second per user; 0 turns the byte budget off.
    pub rate_limit_bytes_per_sec: u32,
    /// Bytes a user may send at once (at least `max_message_bytes`).
    pub rate_limit_bytes_burst: u32,
    /// Open connections from one address (IPv6: one /64); 0 = no limit.
    pub max_connections_per_ip: u32,
    /// Connections from one address not logged in yet; 0 = no limit.
    pub max_handshakes_per_ip: u32,
    /// Wrong passwords from one address per minute; 0 = no limit.
    pub login_attempts_per_minute: u32,
    /// New connections from one address per minute (a token bucket with a
    /// burst of as many), checked at accept; 0 = no limit.
    pub connections_per_minute_per_ip: u32,
    /// Logins from one address per minute (a token bucket with a burst of
    /// as many); 0 = no limit.
    pub logins_per_minute_per_ip: u32,
    /// How long a resumable session whose connection dropped keeps its
    /// place for a resume; zero: resuming is off.
    pub resume_grace: Duration,
}

/// The defaults of [`KEYS`].
impl Default for Limits {
    fn default() -> Self {
        Config::default().limits
    }
}

/// The defaults of [`KEYS`].
impl Default for Config {
    fn default() -> Self {
        Draft::defaults().config
    }
}

/// The per-address part, for `Addresses::new(&limits)`.
impl From<&Limits> for PerAddressLimits {
    fn from(l: &Limits) -> Self {
        PerAddressLimits {
            connections: l.max_connections_per_ip,
            handshakes: l.max_handshakes_per_ip,
            wrong_passwords_per_minute: l.login_attempts_per_minute,
            connections_per_minute: l.connections_per_minute_per_ip,
            logins_per_minute: l.logins_per_minute_per_ip,
        }
    }
}

/// One key of `config.json`.
pub struct Key {
    pub name: &'static str,
    /// The value when the key is absent, as JSON text, exactly as docs/CONFIG.md's
    /// table shows it; `None`: off, or nothing (the table says which).
    pub default: Option<&'static str>,
    /// What the key is for, in one line (docs/CONFIG.md has the details).
    pub doc: &'static str,
    kind: Kind,
}

/// What a key's value must be, and where it goes. A setter's `Err` is a
/// message that follows the key's name ("must be ...").
enum Kind {
    Bool(fn(&mut Draft, bool)),
    /// A whole number from `min` to `max`.
    Int {
        min: u64,
        max: u64,
        set: fn(&mut Draft, u64),
    },
    Text(fn(&mut Draft, String)),
    CheckedText(fn(&mut Draft, String) -> Result<(), String>),
    List(fn(&mut Draft, Vec<String>) -> Result<(), String>),
    /// Any JSON, checked by the setter (an object: `admins`).
    Json(fn(&mut Draft, &Value) -> Result<(), String>),
}

use Kind::{Bool, CheckedText, Int, Json, List, Text};

/// Every key `config.json` may hold: the original's, then the optional ones.
/// Parsing, the defaults, the unknown-key suggestions and docs/CONFIG.md's table
/// (checked by a test) all come from here.
pub const KEYS: &[Key] = &[
    Key {
        name: "SSL",
        default: Some("false"),
        doc: "serve wss:// (true) or ws://",
        kind: Bool(|d, on| d.ssl = on),
    },
    Key {
        name: "SSL_Cert",
        default: None,
        doc: "PEM certificate chain, needed when SSL is true",
        kind: Text(|d, path| d.ssl_cert = Some(path)),
    },
    Key {
        name: "SSL_Key",
        default: None,
        doc: "PEM private key, needed when SSL is true",
        kind: Text(|d, path| d.ssl_key = Some(path)),
    },
    Key {
        name: "server_ip",
        default: Some(r#""127.0.0.1""#),
        doc: "address to bind, IPv4 or IPv6",
        kind: CheckedText(server_ip),
    },
    Key {
        name: "server_port",
        default: Some("12345"),
        doc: "port to bind; 0 picks a free one",
        kind: Int { min: 0, max: u16::MAX as u64, set: |d, n| d.config.server_port = n as u16 },
    },
    Key {
        name: "server_name",
        default: Some(r#""Ragnarok""#),
        doc: "the room's title, sent at login",
        kind: Text(|d, name| d.config.server_name = name),
    },
    Key {
        name: "server_password",
        default: Some(r#""""#),
        doc: "room password; empty = public room",
        kind: Text(|d, password| d.config.server_password = password),
    },
    Key {
        name: "max_connections",
        default: Some("16384"),
        doc: "open sockets, handshakes included",
        kind: Int {
            min: 1,
            max: 1 << 24,
            set: |d, n| d.config.limits.max_connections = n as usize,
        },
    },
    Key {
        name: "max_connections_per_ip",
        default: Some("64"),
        doc: "open connections from one address; 0 = no limit",
        kind: Int {
            min: 0,
            max: 1 << 24,
            set: |d, n| d.config.limits.max_connections_per_ip = n as u32,
        },
    },
    Key {
        name: "max_handshakes_per_ip",
        default: Some("16"),
        doc: "connections from one address not logged in yet; 0 = no limit",
        kind: Int {
            min: 0,
            max: 1 << 24,
            set: |d, n| d.config.limits.max_handshakes_per_ip = n as u32,
        },
    },
    Key {
        name: "login_attempts_per_minute",
        default: Some("10"),
        doc: "wrong passwords from one address per minute; 0 = no limit",
        kind: Int {
            min: 0,
            max: 1_000_000,
            set: |d, n| d.config.limits.login_attempts_per_minute = n as u32,
        },
    },
    Key {
        name: "connections_per_minute_per_ip",
        default: Some("120"),
        doc: "new connections from one address per minute, a burst of as many; 0 = no limit",
        kind: Int {
            min: 0,
            max: 1_000_000,
            set: |d, n| d.config.limits.connections_per_minute_per_ip = n as u32,
        },
    },
    Key {
        name: "logins_per_minute_per_ip",
        default: Some("30"),
        doc: "logins from one address per minute, a burst of as many; 0 = no limit",
        kind: Int {
            min: 0,
            max: 1_000_000,
            set: |d, n| d.config.limits.logins_per_minute_per_ip = n as u32,
        },
    },
    Key {
        name: "room_logins_per_sec",
        default: Some("50"),
        doc: "logins per second into this server, from any address (a burst of as many): a raid from many addresses waits; 0 = no limit",
        kind: Int { min: 0, max: 1_000_000, set: |d, n| d.config.room_logins_per_sec = n as u32 },
    },
    Key {
        name: "max_message_bytes",
        default: Some("16384"),
        doc: "largest incoming message",
        kind: Int {
            min: 64,
            max: 64 << 20,
            set: |d, n| d.config.limits.max_message_bytes = n as usize,
        },
    },
    Key {
        name: "max_outbound_bytes",
        default: Some("1048576"),
        doc: "output queued for one user before they count as a slow reader",
        kind: Int {
            min: 4096,
            max: 1 << 32,
            set: |d, n| d.config.limits.max_outbound_bytes = n as usize,
        },
    },
    Key {
        name: "handshake_timeout_secs",
        default: Some("10"),
        doc: "seconds from accept to the WebSocket opening",
        kind: Int {
            min: 1,
            max: 3600,
            set: |d, n| d.config.limits.handshake_timeout = Duration::from_secs(n),
        },
    },
    Key {
        name: "login_timeout_secs",
        default: Some("60"),
        doc: "seconds from the WebSocket opening to the name",
        kind: Int {
            min: 1,
            max: 3600,
            set: |d, n| d.config.limits.login_timeout = Duration::from_secs(n),
        },
    },
    Key {
        name: "resume_grace_secs",
        default: Some("120"),
        doc: "seconds a session whose connection dropped keeps its place for a resume; 0 = off",
        kind: Int {
            min: 0,
            max: 86400,
            set: |d, n| d.config.limits.resume_grace = Duration::from_secs(n),
        },
    },
    Key {
        name: "message_timeout_secs",
        default: Some("5"),
        doc: "seconds a message may take from its first byte to its last",
        kind: Int {
            min: 1,
            max: 3600,
            set: |d, n| d.config.limits.message_timeout = Duration::from_secs(n),
        },
    },
    Key {
        name: "idle_timeout_secs",
        default: Some("60"),
        doc: "seconds of silence before a ping; 0 = off",
        kind: Int {
            min: 0,
            max: 86400,
            set: |d, n| d.config.limits.idle_timeout = (n > 0).then(|| Duration::from_secs(n)),
        },
    },
    Key {
        name: "rate_limit_per_sec",
        default: Some("20"),
        doc: "messages per second per user (every frame counts: pings, fragments); 0 = off",
        kind: Int {
            min: 0,
            max: 1_000_000,
            set: |d, n| d.config.limits.rate_limit_per_sec = n as u32,
        },
    },
    Key {
        name: "rate_limit_burst",
        default: Some("40"),
        doc: "messages a user may send at once",
        kind: Int {
            min: 0,
            max: 1_000_000,
            set: |d, n| d.config.limits.rate_limit_burst = n as u32,
        },
    },
    Key {
        name: "rate_limit_bytes_per_sec",
        default: Some("32768"),
        doc: "bytes of messages per second per user; 0 = off",
        kind: Int {
            min: 0,
            max: 1 << 30,
            set: |d, n| d.config.limits.rate_limit_bytes_per_sec = n as u32,
        },
    },
    Key {
        name: "rate_limit_bytes_burst",
        default: Some("131072"),
        doc: "bytes of messages a user may send at once, at least max_message_bytes",
        kind: Int {
            min: 0,
            max: 1 << 30,
            set: |d, n| d.config.limits.rate_limit_bytes_burst = n as u32,
        },
    },
    Key {
        name: "history_size",
        default: Some("50"),
        doc: "recent broadcasts replayed to joiners; 0 = off",
        kind: Int { min: 0, max: 10_000, set: |d, n| d.config.history_size = n as usize },
    },
    Key {
        name: "history_max_bytes",
        default: Some("65536"),
        doc: "most bytes of history replayed to a joiner, at most half of max_outbound_bytes",
        kind: Int { min: 0, max: 1 << 31, set: |d, n| d.config.history_max_bytes = n as usize },
    },
    Key {
        name: "allowed_origins",
        default: None,
        doc: "web origins allowed to open a WebSocket; none = any",
        kind: List(allowed_origins),
    },
    Key {
        name: "trusted_proxies",
        default: None,
        doc: "addresses or networks of reverse proxies whose X-Forwarded-For counts",
        kind: List(trusted_proxies),
    },
    Key {
        name: "metrics_addr",
        default: None,
        doc: "host:port of the /healthz and /metrics listener; none = off",
        kind: CheckedText(metrics_addr),
    },
    Key {
        name: "reuse_port",
        default: Some("false"),
        doc: "share server_port with other processes (SO_REUSEPORT)",
        kind: Bool(|d, on| d.config.reuse_port = on),
    },
    Key {
        name: "e2e_room",
        default: Some("false"),
        doc: "the room's broadcasts end-to-end encrypted: plaintext refused",
        kind: Bool(|d, on| d.config.e2e_room = on),
    },
    Key {
        name: "control_socket",
        default: Some(r#""ragnarok.sock""#),
        doc: "Unix socket of `ragnarok ctl` (relative: next to the config file); \"\" = off",
        kind: Text(|d, path| d.control_socket = path),
    },
    Key {
        name: "state_file",
        default: Some(r#""ragnarok-state.json""#),
        doc: "where bans are kept across restarts (relative: next to the config file); \"\" = nowhere",
        kind: Text(|d, path| d.state_file = path),
    },
    Key {
        name: "log_level",
        default: Some(r#""info""#),
        doc: "error, warn, info, debug, trace or off",
        kind: CheckedText(log_level),
    },
    Key {
        name: "redis_url",
        default: None,
        doc: "redis:// or rediss:// URL: one room across processes; none = standalone",
        kind: CheckedText(redis_url),
    },
    Key {
        name: "cluster_name",
        default: Some(r#""ragnarok""#),
        doc: "the room's name on Redis",
        kind: CheckedText(cluster_name),
    },
    Key {
        name: "redis_ca_file",
        default: None,
        doc: "PEM CA certificates for rediss://; none = the system's",
        kind: Text(|d, path| d.redis_ca_file = Some(path)),
    },
    Key {
        name: "admins",
        default: None,
        doc: "moderators in the room: {\"name\": password hash by `ragnarok hash-password`}; none = no moderators",
        kind: Json(admins),
    },
];

fn admins(d: &mut Draft, value: &Value) -> Result<(), String> {
    d.config.admins = crate::admins::of_json(value)?;
    Ok(())
}

/// The keys a running server cannot take on a reload (SIGHUP, `ragnarok ctl
/// reload`): a change is reported and the old value kept until a restart.
/// They are bound into the listening sockets (`SSL` on or off as well), the
/// cluster's link, or what clients already hold (`e2e_room`). Also
/// `server_name` while `e2e_room` is on: the room's title is bound into
/// every encrypted room message, so a live rename would split its members
/// (server/reload.rs decides that one).
pub const RESTART_KEYS: &[&str] = &[
    "SSL",
    "server_ip",
    "server_port",
    "reuse_port",
    "redis_url",
    "cluster_name",
    "redis_ca_file",
    "metrics_addr",
    "control_socket",
    "e2e_room",
];

fn server_ip(d: &mut Draft, ip: String) -> Result<(), String> {
    if ip.trim().is_empty() {
        return Err("must not be empty".into());
    }
    d.config.server_ip = ip;
    Ok(())
}

fn allowed_origins(d: &mut Draft, origins: Vec<String>) -> Result<(), String> {
    if let Some(origin) = origins.iter().find(|o| !valid_origin(o)) {
        return Err(format!(
            "has {origin:?}: an origin looks like \"https://chat.example.org\" (scheme, host, optional port; no path)"
        ));
    }
    d.config.allowed_origins = origins;
    Ok(())
}

/// `scheme://host[:port]`, as browsers send in `Origin`.
fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
}

fn trusted_proxies(d: &mut Draft, proxies: Vec<String>) -> Result<(), String> {
    d.config.trusted_proxies = proxies
        .iter()
        .map(|p| p.parse::<Cidr>().map_err(|e| format!("has {e}")))
        .collect::<Result<_, _>>()?;
    Ok(())
}

fn metrics_addr(d: &mut Draft, addr: String) -> Result<(), String> {
    let port = addr.rsplit_once(':').and_then(|(host, port)| {
        (!host.is_empty()).then_some(())?;
        port.parse::<u16>().ok()
    });
    if port.is_none() {
        return Err(format!("{addr:?} must be host:port, e.g. \"127.0.0.1:9898\""));
    }
    d.config.metrics_addr = Some(addr);
    Ok(())
}

fn log_level(d: &mut Draft, level: String) -> Result<(), String> {
    d.config.log_level = match level.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => {
            return Err(
                "must be one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", \"off\""
                    .into(),
            );
        }
    };
    Ok(())
}

/// An empty URL is no URL (standalone).
fn redis_url(d: &mut Draft, url: String) -> Result<(), String> {
    d.redis = if url.is_empty() { None } else { Some(RedisUrl::parse(&url)?) };
    Ok(())
}

fn cluster_name(d: &mut Draft, name: String) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("must be 1 to 64 characters of letters, digits, '-', '_' and '.'".into());
    }
    d.cluster_name = name;
    Ok(())
}

/// The keys' values on their way into a [`Config`]. Keys that only make
/// sense together wait here until [`Draft::finish`] checks them as a whole.
struct Draft {
    config: Config,
    ssl: bool,
    ssl_cert: Option<String>,
    ssl_key: Option<String>,
    redis: Option<RedisUrl>,
    cluster_name: String,
    redis_ca_file: Option<String>,
    control_socket: String,
    state_file: String,
}

impl Draft {
    /// Every key at its default. The values written here are placeholders:
    /// each is either overwritten by a default from [`KEYS`] or means "off".
    fn defaults() -> Draft {
        let mut d = Draft {
            config: Config {
                tls: None,
                server_ip: String::new(),
                server_port: 0,
                server_name: String::new(),
                server_password: String::new(),
                limits: Limits {
                    max_connections: 0,
                    max_message_bytes: 0,
                    max_outbound_bytes: 0,
                    handshake_timeout: Duration::ZERO,
                    login_timeout: Duration::ZERO,
                    message_timeout: Duration::ZERO,
                    idle_timeout: None,
                    rate_limit_per_sec: 0,
                    rate_limit_burst: 0,
                    rate_limit_bytes_per_sec: 0,
                    rate_limit_bytes_burst: 0,
                    max_connections_per_ip: 0,
                    max_handshakes_per_ip: 0,
                    login_attempts_per_minute: 0,
                    connections_per_minute_per_ip: 0,
                    logins_per_minute_per_ip: 0,
                    resume_grace: Duration::ZERO,
                },
                history_size: 0,
                history_max_bytes: 0,
                log_level: LevelFilter::Off,
                allowed_origins: Vec::new(),
                trusted_proxies: Vec::new(),
                metrics_addr: None,
                cluster: None,
                reuse_port: false,
                e2e_room: false,
                room_logins_per_sec: 0,
                control_socket: None,
                state_file: None,
                admins: Vec::new(),
            },
            ssl: false,
            ssl_cert: None,
            ssl_key: None,
            redis: None,
            cluster_name: String::new(),
            redis_ca_file: None,
            control_socket: String::new(),
            state_file: String::new(),
        };
        for key in KEYS {
            if let Some(text) = key.default {
                // The defaults are ours, not the operator's: a unit test
                // applies them all, so this cannot fail at run time.
                let value = serde_json::from_str(text).expect("a default in KEYS is JSON");
                d.set(key, &value).expect("a default in KEYS passes its own check");
            }
        }
        d
    }

    /// Checks one key's value and stores it.
    fn set(&mut self, key: &Key, value: &Value) -> Result<(), String> {
        let must_be = |what: &str| Err(format!("must be {what}, not {value}"));
        match (&key.kind, value) {
            (Bool(set), Value::Bool(b)) => set(self, *b),
            (Int { min, max, set }, Value::Number(n)) => match n.as_u64() {
                Some(v) if (*min..=*max).contains(&v) => set(self, v),
                _ => return must_be(&format!("a whole number from {min} to {max}")),
            },
            (Text(set), Value::String(s)) => set(self, s.clone()),
            (CheckedText(set), Value::String(s)) => set(self, s.clone())?,
            (List(set), Value::Array(items)) => {
                let strings = items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(format!("must be a list of strings, not hold {other}")),
                    })
                    .collect::<Result<_, _>>()?;
                set(self, strings)?
            }
            (Json(set), value) => set(self, value)?,
            (Bool(_), _) => return must_be("true or false"),
            (Int { .. }, _) => return must_be("a number"),
            (Text(_) | CheckedText(_), _) => return must_be("a string"),
            (List(_), _) => return must_be("a list of strings"),
        }
        Ok(())
    }

    /// The checks across keys; relative paths are taken from `base`.
    /// `given` is the config file's object (what was set, not defaulted).
    fn finish(self, base: &Path, given: &Map<String, Value>) -> Result<Config, ConfigError> {
        let mut c = self.config;
        if self.ssl {
            let cert = self.ssl_cert.filter(|s| !s.is_empty()).ok_or_else(|| {
                bad("SSL_Cert", "must name the certificate file when \"SSL\" is true")
            })?;
            let key = self.ssl_key.filter(|s| !s.is_empty()).ok_or_else(|| {
                bad("SSL_Key", "must name the private key file when \"SSL\" is true")
            })?;
            c.tls = Some(TlsFiles { cert: base.join(cert), key: base.join(key) });
        }
        if c.limits.rate_limit_per_sec > 0 && c.limits.rate_limit_burst == 0 {
            return Err(bad("rate_limit_burst", "must be at least 1 when rate limiting is on"));
        }
        let l = &c.limits;
        if l.rate_limit_bytes_per_sec > 0
            && (l.rate_limit_bytes_burst as usize) < l.max_message_bytes
        {
            let message = format!(
                "({}) must be at least \"max_message_bytes\" ({}), or the largest message \
                 could never be sent; raise it, or set \"rate_limit_bytes_per_sec\" to 0 to \
                 turn the byte budget off",
                l.rate_limit_bytes_burst, l.max_message_bytes
            );
            return Err(bad("rate_limit_bytes_burst", &message));
        }
        // A replay must leave room in a joiner's queue for the welcome and
        // what is said meanwhile. The default follows a smaller output limit.
        let half = c.limits.max_outbound_bytes / 2;
        if !given.contains_key("history_max_bytes") {
            c.history_max_bytes = c.history_max_bytes.min(half);
        } else if c.history_max_bytes > half {
            let message = format!(
                "({}) must be at most half of \"max_outbound_bytes\" ({half}): a joiner's \
                 replay must leave room in its queue for the welcome and what is said meanwhile",
                c.history_max_bytes
            );
            return Err(bad("history_max_bytes", &message));
        }
        let path = |p: String| (!p.is_empty()).then(|| base.join(p));
        c.control_socket = path(self.control_socket);
        c.state_file = path(self.state_file);
        match self.redis {
            Some(redis) => {
                if self.redis_ca_file.is_some() && !redis.tls {
                    return Err(bad("redis_ca_file", "is for rediss:// (TLS) URLs only"));
                }
                let redis_ca_file = self.redis_ca_file.map(|f| base.join(f));
                c.cluster = Some(Cluster { redis, name: self.cluster_name, redis_ca_file });
            }
            None => {
                for key in ["cluster_name", "redis_ca_file"] {
                    if given.contains_key(key) {
                        return Err(bad(key, "needs \"redis_url\" (it is a cluster setting)"));
                    }
                }
            }
        }
        Ok(c)
    }
}

#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Syntax {
        path: PathBuf,
        message: String,
    },
    /// `path` is empty until [`Config::load`] names the file (as for the next).
    UnknownKey {
        path: PathBuf,
        key: String,
        suggestion: Option<&'static str>,
    },
    BadValue {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

impl ConfigError {
    fn in_file(self, file: &Path) -> ConfigError {
        let file = file.to_owned();
        match self {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax { path: file, message },
            ConfigError::UnknownKey { key, suggestion, .. } => {
                ConfigError::UnknownKey { path: file, key, suggestion }
            }
            ConfigError::BadValue { key, message, .. } => {
                ConfigError::BadValue { path: file, key, message }
            }
            read @ ConfigError::Read { .. } => read,
        }
    }
}

/// "config file PATH", or "config" when no file was named.
struct Place<'a>(&'a Path);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_os_str().is_empty() {
            true => f.write_str("config"),
            false => write!(f, "config file {}", self.0.display()),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Syntax { path, message } => {
                write!(f, "{} is not valid JSON: {message}", Place(path))
            }
            ConfigError::UnknownKey { path, key, suggestion: Some(s) } => {
                write!(f, "{}: unknown key {key:?} (did you mean {s:?}?)", Place(path))
            }
            ConfigError::UnknownKey { path, key, suggestion: None } => {
                write!(f, "{}: unknown key {key:?}", Place(path))
            }
            ConfigError::BadValue { path, key, message } => {
                write!(f, "{}: {key:?} {message}", Place(path))
            }
        }
    }
}

impl std::error::Error for ConfigError {}

fn bad(key: &'static str, message: &str) -> ConfigError {
    ConfigError::BadValue { path: PathBuf::new(), key, message: message.into() }
}

impl Config {
    /// The log level in force: `RUST_LOG` when it names a level (it
    /// overrides `log_level`, at start and on a reload), else `log_level`.
    pub fn log_filter(&self) -> LevelFilter {
        let from_env = std::env::var("RUST_LOG").ok().and_then(|v| v.parse().ok());
        from_env.unwrap_or(self.log_level)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| e.in_file(path))
    }

    /// Parses config text; relative certificate paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: PathBuf::new(), message: e.to_string() })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::Syntax {
                path: PathBuf::new(),
                message: "the top level must be an object".into(),
            });
        };
        if let Some(key) = map.keys().find(|k| !KEYS.iter().any(|known| known.name == *k)) {
            let suggestion = suggest(key);
            return Err(ConfigError::UnknownKey {
                path: PathBuf::new(),
                key: key.clone(),
                suggestion,
            });
        }
        let mut draft = Draft::defaults();
        for key in KEYS {
            if let Some(value) = map.get(key.name) {
                draft.set(key, value).map_err(|message| bad(key.name, &message))?;
            }
        }
        draft.finish(base, &map)
    }
}

/// The known key an unknown one was probably meant to be: the same but for
/// case, '_' and '-', or a typo or two away (a letter wrong, missing, extra,
/// or two neighbours swapped), within 1 for keys of up to 4 letters.
fn suggest(unknown: &str) -> Option<&'static str> {
    let wanted = normalise(unknown);
    let within = if wanted.len() <= 4 { 1 } else { 2 };
    KEYS.iter()
        .map(|key| (normalise(key.name), key.name))
        // Lengths further apart than `within` are further apart than that.
        .filter(|(known, _)| known.len().abs_diff(wanted.len()) <= within)
        .map(|(known, name)| (edit_distance(&wanted, &known), name))
        .filter(|&(distance, _)| distance <= within)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, name)| name)
}

fn normalise(key: &str) -> Vec<char> {
    key.chars().filter(|c| !matches!(c, '_' | '-')).flat_map(char::to_lowercase).collect()
}

/// Edits that turn `a` into `b`, each of: a character inserted, removed,
/// replaced, or two neighbours swapped (the optimal string alignment
/// distance, Damerau's variant of Levenshtein's).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    // Three rows of the table: for a's prefixes of length i-2, i-1 and i.
    let mut before = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let replace = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            row[j] = replace.min(prev[j] + 1).min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/ragnarok"))
    }

    #[test]
    fn seed_config_parses_with_paths_next_to_the_file() {
        let c = parse(
            r#"{"SSL": true, "SSL_Cert": "self-signed.crt", "SSL_Key": "self-signed.pem",
                "server_ip": "127.0.0.1", "server_port": 12345, "server_name": "Ks",
                "server_password": "963"}"#,
        )
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/etc/ragnarok/self-signed.crt"));
        assert_eq!(tls.key, Path::new("/etc/ragnarok/self-signed.pem"));
        assert_eq!((c.server_port, c.server_name.as_str()), (12345, "Ks"));
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn optional_keys_override_defaults() {
        let c = parse(r#"{"idle_timeout_secs": 0, "rate_limit_per_sec": 0, "log_level": "DEBUG"}"#)
            .unwrap();
        assert_eq!(c.limits.idle_timeout, None);
        assert_eq!(c.limits.rate_limit_per_sec, 0);
        assert_eq!(c.log_level, LevelFilter::Debug);
        assert!(c.tls.is_none());
        let c = parse(
            r#"{"allowed_origins": ["https://chat.example.org", "http://localhost:8080"],
                "max_connections_per_ip": 0, "login_timeout_secs": 300}"#,
        )
        .unwrap();
        assert_eq!(c.allowed_origins, ["https://chat.example.org", "http://localhost:8080"]);
        assert_eq!(c.limits.max_connections_per_ip, 0);
        assert_eq!(c.limits.login_timeout, Duration::from_secs(300));
    }

    #[test]
    fn cluster_keys() {
        let c = parse(r#"{"redis_url": "redis://10.0.0.5:6380/1", "reuse_port": true}"#).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.name, DEFAULT_CLUSTER_NAME);
        assert_eq!((cluster.redis.port, cluster.redis.db), (6380, 1));
        assert!(c.reuse_port);
        let c = parse(
            r#"{"redis_url": "rediss://h", "cluster_name": "team-1", "redis_ca_file": "ca.pem"}"#,
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.name, "team-1");
        assert_eq!(cluster.redis_ca_file.unwrap(), Path::new("/etc/ragnarok/ca.pem"));
        assert!(parse("{}").unwrap().cluster.is_none());
        for (text, needle) in [
            (r#"{"redis_url": "http://h"}"#, "\"redis_url\" \"http://h\" must start with"),
            (r#"{"redis_url": "redis://h", "cluster_name": "a b"}"#, "\"cluster_name\" must be"),
            (r#"{"cluster_name": "x"}"#, "\"cluster_name\" needs \"redis_url\""),
            (r#"{"redis_url": "redis://h", "redis_ca_file": "c"}"#, "rediss://"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn every_error_names_the_key() {
        let cases = [
            (r#"{"SSl": true}"#, "\"SSl\" (did you mean \"SSL\"?)"),
            (r#"{"colour": 1}"#, "unknown key \"colour\""),
            (r#"{"server_port": "80"}"#, "\"server_port\" must be a number"),
            (r#"{"server_port": 70000}"#, "\"server_port\" must be a whole number"),
            (r#"{"SSL": "yes"}"#, "\"SSL\" must be true or false"),
            (r#"{"SSL": true}"#, "\"SSL_Cert\" must name"),
            (r#"{"max_connections": 0}"#, "\"max_connections\""),
            (r#"{"log_level": "loud"}"#, "\"log_level\" must be one of"),
            (r#"{"rate_limit_burst": 0}"#, "\"rate_limit_burst\" must be at least 1"),
            (
                r#"{"rate_limit_bytes_burst": 1000}"#,
                "\"rate_limit_bytes_burst\" (1000) must be at least \"max_message_bytes\" (16384)",
            ),
            (
                r#"{"max_message_bytes": 1048576}"#,
                "\"rate_limit_bytes_burst\" (131072) must be at least \"max_message_bytes\"",
            ),
            (r#"{"rate_limit_bytes_per_sec": 1.5}"#, "\"rate_limit_bytes_per_sec\" must be"),
            (
                r#"{"history_max_bytes": 524289}"#,
                "\"history_max_bytes\" (524289) must be at most half of \"max_outbound_bytes\"",
            ),
            (
                r#"{"history_max_bytes": 4096, "max_outbound_bytes": 4096}"#,
                "\"history_max_bytes\" (4096) must be at most half",
            ),
            (
                r#"{"trusted_proxies": ["nginx"]}"#,
                "\"trusted_proxies\" has \"nginx\" is not an address",
            ),
            (r#"{"metrics_addr": "9898"}"#, "\"metrics_addr\" \"9898\" must be host:port"),
            (r#"{"allowed_origins": "x"}"#, "\"allowed_origins\" must be a list of strings"),
            (r#"{"allowed_origins": [1]}"#, "\"allowed_origins\" must be a list of strings"),
            (r#"{"allowed_origins": ["https://a.org/chat"]}"#, "an origin looks like"),
            (r#"{"max_handshakes_per_ip": -1}"#, "\"max_handshakes_per_ip\" must be a whole"),
            (r#"{"server_port": 1"#, "not valid JSON"),
            (r#"[1]"#, "top level must be an object"),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn the_byte_budgets() {
        let c = Config::default();
        let l = &c.limits;
        assert_eq!((l.max_message_bytes, l.max_outbound_bytes), (16384, 1 << 20));
        assert_eq!((l.rate_limit_bytes_per_sec, l.rate_limit_bytes_burst), (32768, 131072));
        assert_eq!(c.history_max_bytes, 65536);
        // The byte budget off: any message size.
        let c = parse(r#"{"rate_limit_bytes_per_sec": 0, "max_message_bytes": 1048576}"#).unwrap();
        assert_eq!(c.limits.max_message_bytes, 1 << 20);
        let c = parse(r#"{"rate_limit_bytes_burst": 16384}"#).unwrap();
        assert_eq!(c.limits.rate_limit_bytes_burst, 16384, "exactly one largest message");
        // The default history budget follows a smaller output limit; a
        // given one must fit it.
        assert_eq!(parse(r#"{"max_outbound_bytes": 65536}"#).unwrap().history_max_bytes, 32768);
        let c = parse(r#"{"history_max_bytes": 524288}"#).unwrap();
        assert_eq!(c.history_max_bytes, 524288);
        assert_eq!(parse(r#"{"history_max_bytes": 0}"#).unwrap().history_max_bytes, 0);
    }

    #[test]
    fn the_defaults_are_the_keys_defaults() {
        // A config file's files are next to it; a config made in code
        // (tests, fuzzing) has none.
        let mut c = parse("{}").unwrap();
        assert_eq!(c.control_socket.take(), Some("/etc/ragnarok/ragnarok.sock".into()));
        assert_eq!(c.state_file.take(), Some("/etc/ragnarok/ragnarok-state.json".into()));
        assert_eq!(c, Config::default());
        let c = parse(r#"{"control_socket": "", "state_file": "/var/lib/ragnarok/state.json"}"#);
        let c = c.unwrap();
        assert_eq!(
            (c.control_socket, c.state_file),
            (None, Some("/var/lib/ragnarok/state.json".into()))
        );
        let c = Config::default();
        assert_eq!((c.server_ip.as_str(), c.server_port), ("127.0.0.1", 12345));
        assert_eq!((c.history_size, c.log_level), (50, LevelFilter::Info));
        let l = Limits::default();
        assert_eq!((l.max_connections, l.max_outbound_bytes), (16384, 1 << 20));
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(60)));
        let cluster = parse(r#"{"redis_url": "redis://h"}"#).unwrap().cluster.unwrap();
        assert_eq!(cluster.name, DEFAULT_CLUSTER_NAME);
    }

    /// docs/CONFIG.md's two config tables list exactly the keys of `KEYS`, with
    /// the same defaults: a literal in backticks, or a word for "none".
    #[test]
    fn config_md_lists_every_key_with_its_default() {
        let readme = include_str!("../docs/CONFIG.md");
        let start = readme.find("\n## config.json").expect("CONFIG.md has a config.json section");
        let section = &readme[start + 1..];
        let section = &section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 1)];
        let mut listed = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`');
            let default = cells[2].strip_prefix('`').and_then(|d| d.strip_suffix('`'));
            let key = KEYS.iter().find(|k| k.name == name);
            let key =
                key.unwrap_or_else(|| panic!("docs/CONFIG.md lists {name:?}, which is no key"));
            assert_eq!(default, key.default, "docs/CONFIG.md's default for {name:?}");
            listed.push(name);
        }
        for key in KEYS {
            let times = listed.iter().filter(|&&n| n == key.name).count();
            assert_eq!(times, 1, "docs/CONFIG.md lists {:?} {times} times", key.name);
        }
    }

    #[test]
    fn every_restart_key_is_a_key() {
        for name in RESTART_KEYS {
            assert!(
                KEYS.iter().any(|k| k.name == *name),
                "{name:?} is in RESTART_KEYS, not in KEYS"
            );
        }
        let mut sorted = RESTART_KEYS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), RESTART_KEYS.len(), "a key twice in RESTART_KEYS");
    }

    #[test]
    fn an_unknown_key_gets_the_nearest_known_one() {
        for (typo, meant) in [
            ("server_prot", Some("server_port")),
            ("server_pasword", Some("server_password")),
            ("max_conections", Some("max_connections")),
            ("SSL_cert", Some("SSL_Cert")),
            ("ssl-key", Some("SSL_Key")),
            ("reuseport", Some("reuse_port")),
            ("Rate_Limit_Burts", Some("rate_limit_burst")),
            ("ssh", Some("SSL")),
            ("port", None),
            ("colour", None),
            ("", None),
        ] {
            assert_eq!(suggest(typo), meant, "{typo:?}");
        }
        let e = parse(r#"{"server_prot": 1}"#).unwrap_err().to_string();
        assert_eq!(e, "config: unknown key \"server_prot\" (did you mean \"server_port\"?)");
        // A huge key costs no more than its length.
        assert_eq!(suggest(&"x".repeat(1 << 20)), None);
    }

    #[test]
    fn no_two_keys_are_one_typo_apart() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                let d = edit_distance(&normalise(a.name), &normalise(b.name));
                assert!(
                    d > 2,
                    "{} and {} are {d} apart: a typo would be ambiguous",
                    a.name,
                    b.name
                );
            }
        }
    }

    #[test]
    fn edit_distances() {
        let d = |a: &str, b: &str| {
            edit_distance(&a.chars().collect::<Vec<_>>(), &b.chars().collect::<Vec<_>>())
        };
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("port", "prot"), 1);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("ca", "abc"), 3, "no edit of a swapped pair (optimal string alignment)");
        assert_eq!(d("same", "same"), 0);
    }

    #[test]
    fn loaded_errors_name_the_file() {
        let path =
            std::env::temp_dir().join(format!("ragnarok-config-{}.json", std::process::id()));
        for (text, expected) in [
            (r#"{"server_pasword": ""}"#, "unknown key \"server_pasword\" (did you mean"),
            (r#"{"server_port": -1}"#, "\"server_port\" must be a whole number"),
            (r#"{"SSL": true}"#, "\"SSL_Cert\" must name"),
        ] {
            std::fs::write(&path, text).unwrap();
            let message = Config::load(&path).unwrap_err().to_string();
            let place = format!("config file {}: ", path.display());
            assert!(message.starts_with(&place) && message.contains(expected), "{message}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
