//! `config.json`: the original server's keys plus optional limits, checked
//! key by key so that every mistake is reported with the key's name. Paths
//! are resolved against the config file's folder.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::addresses::{Cidr, PerAddressLimits};
use crate::redis::RedisUrl;
use serde_json::{Map, Value};

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

/// `cluster_name` when the config has none.
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
    /// Silence before a ping; `None` turns pings off.
    pub idle_timeout: Option<Duration>,
    /// Messages per second per user; 0 turns rate limiting off.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Open connections from one address (IPv6: one /64); 0 = no limit.
    pub max_connections_per_ip: u32,
    /// Connections from one address not logged in yet; 0 = no limit.
    pub max_handshakes_per_ip: u32,
    /// Wrong passwords from one address per minute; 0 = no limit.
    pub login_attempts_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16384,
            max_message_bytes: 65536,
            max_outbound_bytes: 1 << 20,
            handshake_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(60),
            idle_timeout: Some(Duration::from_secs(60)),
            rate_limit_per_sec: 20,
            rate_limit_burst: 40,
            max_connections_per_ip: 64,
            max_handshakes_per_ip: 16,
            login_attempts_per_minute: 10,
        }
    }
}

/// The per-address part, for `Addresses::new(&limits)`.
impl From<&Limits> for PerAddressLimits {
    fn from(l: &Limits) -> Self {
        PerAddressLimits {
            connections: l.max_connections_per_ip,
            handshakes: l.max_handshakes_per_ip,
            wrong_passwords_per_minute: l.login_attempts_per_minute,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tls: None,
            server_ip: "127.0.0.1".into(),
            server_port: 12345,
            server_name: "Ragnarok".into(),
            server_password: String::new(),
            limits: Limits::default(),
            history_size: 50,
            log_level: LevelFilter::Info,
            allowed_origins: Vec::new(),
            metrics_addr: None,
            trusted_proxies: Vec::new(),
            cluster: None,
            reuse_port: false,
        }
    }
}

#[derive(Debug)]
pub enum ConfigError {
    Read { path: PathBuf, source: std::io::Error },
    Syntax { path: PathBuf, message: String },
    UnknownKey { key: String, suggestion: Option<&'static str> },
    BadValue { key: &'static str, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Syntax { path, message } => {
                write!(f, "config file {} is not valid JSON: {message}", path.display())
            }
            ConfigError::UnknownKey { key, suggestion: Some(s) } => {
                write!(f, "config: unknown key {key:?} (did you mean {s:?}?)")
            }
            ConfigError::UnknownKey { key, suggestion: None } => {
                write!(f, "config: unknown key {key:?}")
            }
            ConfigError::BadValue { key, message } => write!(f, "config: {key:?} {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

const KEYS: &[&str] = &[
    "SSL",
    "SSL_Cert",
    "SSL_Key",
    "server_ip",
    "server_port",
    "server_name",
    "server_password",
    "max_connections",
    "max_message_bytes",
    "max_outbound_bytes",
    "handshake_timeout_secs",
    "login_timeout_secs",
    "idle_timeout_secs",
    "rate_limit_per_sec",
    "rate_limit_burst",
    "history_size",
    "log_level",
    "max_connections_per_ip",
    "max_handshakes_per_ip",
    "login_attempts_per_minute",
    "allowed_origins",
    "metrics_addr",
    "trusted_proxies",
    "redis_url",
    "cluster_name",
    "redis_ca_file",
    "reuse_port",
];

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => {
                ConfigError::Syntax { path: path.to_owned(), message }
            }
            other => other,
        })
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
        for key in map.keys() {
            if !KEYS.contains(&key.as_str()) {
                let suggestion = KEYS.iter().copied().find(|k| {
                    k.eq_ignore_ascii_case(key) || k.replace('_', "") == key.replace('_', "")
                });
                return Err(ConfigError::UnknownKey { key: key.clone(), suggestion });
            }
        }
        let keys = Keys(&map);
        let mut c = Config::default();
        let ssl = keys.bool("SSL")?.unwrap_or(false);
        let cert = keys.string("SSL_Cert")?;
        let key = keys.string("SSL_Key")?;
        if ssl {
            let cert = cert.filter(|s| !s.is_empty()).ok_or(ConfigError::BadValue {
                key: "SSL_Cert",
                message: "must name the certificate file when \"SSL\" is true".into(),
            })?;
            let key = key.filter(|s| !s.is_empty()).ok_or(ConfigError::BadValue {
                key: "SSL_Key",
                message: "must name the private key file when \"SSL\" is true".into(),
            })?;
            c.tls = Some(TlsFiles { cert: base.join(cert), key: base.join(key) });
        }
        if let Some(ip) = keys.string("server_ip")? {
            if ip.trim().is_empty() {
                return Err(bad("server_ip", "must not be empty"));
            }
            c.server_ip = ip;
        }
        if let Some(port) = keys.int("server_port", 0, u16::MAX as u64)? {
            c.server_port = port as u16;
        }
        if let Some(name) = keys.string("server_name")? {
            c.server_name = name;
        }
        if let Some(password) = keys.string("server_password")? {
            c.server_password = password;
        }
        let l = &mut c.limits;
        if let Some(n) = keys.int("max_connections", 1, 1 << 24)? {
            l.max_connections = n as usize;
        }
        if let Some(n) = keys.int("max_message_bytes", 64, 64 << 20)? {
            l.max_message_bytes = n as usize;
        }
        if let Some(n) = keys.int("max_outbound_bytes", 4096, 1 << 32)? {
            l.max_outbound_bytes = n as usize;
        }
        if let Some(n) = keys.int("handshake_timeout_secs", 1, 3600)? {
            l.handshake_timeout = Duration::from_secs(n);
        }
        if let Some(n) = keys.int("login_timeout_secs", 1, 3600)? {
            l.login_timeout = Duration::from_secs(n);
        }
        if let Some(n) = keys.int("idle_timeout_secs", 0, 86400)? {
            l.idle_timeout = (n > 0).then(|| Duration::from_secs(n));
        }
        if let Some(n) = keys.int("rate_limit_per_sec", 0, 1_000_000)? {
            l.rate_limit_per_sec = n as u32;
        }
        if let Some(n) = keys.int("rate_limit_burst", 0, 1_000_000)? {
            l.rate_limit_burst = n as u32;
        }
        if let Some(n) = keys.int("max_connections_per_ip", 0, 1 << 24)? {
            l.max_connections_per_ip = n as u32;
        }
        if let Some(n) = keys.int("max_handshakes_per_ip", 0, 1 << 24)? {
            l.max_handshakes_per_ip = n as u32;
        }
        if let Some(n) = keys.int("login_attempts_per_minute", 0, 1_000_000)? {
            l.login_attempts_per_minute = n as u32;
        }
        if l.rate_limit_per_sec > 0 && l.rate_limit_burst == 0 {
            return Err(bad("rate_limit_burst", "must be at least 1 when rate limiting is on"));
        }
        if let Some(n) = keys.int("history_size", 0, 10_000)? {
            c.history_size = n as usize;
        }
        if let Some(origins) = keys.strings("allowed_origins")? {
            for origin in &origins {
                if !valid_origin(origin) {
                    return Err(bad(
                        "allowed_origins",
                        &format!(
                            "has {origin:?}: an origin looks like \"https://chat.example.org\" (scheme, host, optional port; no path)"
                        ),
                    ));
                }
            }
            c.allowed_origins = origins;
        }
        if let Some(proxies) = keys.strings("trusted_proxies")? {
            c.trusted_proxies = proxies
                .iter()
                .map(|p| p.parse::<Cidr>().map_err(|e| bad("trusted_proxies", &format!("has {e}"))))
                .collect::<Result<_, _>>()?;
        }
        if let Some(addr) = keys.string("metrics_addr")? {
            let port = addr.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty()).then_some(())?;
                port.parse::<u16>().ok()
            });
            if port.is_none() {
                return Err(bad(
                    "metrics_addr",
                    &format!("{addr:?} must be host:port, e.g. \"127.0.0.1:9898\""),
                ));
            }
            c.metrics_addr = (!addr.is_empty()).then_some(addr);
        }
        let name = keys.string("cluster_name")?;
        let ca_file = keys.string("redis_ca_file")?;
        match keys.string("redis_url")?.filter(|u| !u.is_empty()) {
            Some(url) => {
                let redis = RedisUrl::parse(&url).map_err(|e| bad("redis_url", &e))?;
                let name = name.unwrap_or_else(|| DEFAULT_CLUSTER_NAME.into());
                if name.is_empty()
                    || name.len() > 64
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(bad(
                        "cluster_name",
                        "must be 1 to 64 characters of letters, digits, '-', '_' and '.'",
                    ));
                }
                if ca_file.is_some() && !redis.tls {
                    return Err(bad("redis_ca_file", "is for rediss:// (TLS) URLs only"));
                }
                let redis_ca_file = ca_file.map(|f| base.join(f));
                c.cluster = Some(Cluster { redis, name, redis_ca_file });
            }
            None if name.is_some() || ca_file.is_some() => {
                let key = if name.is_some() { "cluster_name" } else { "redis_ca_file" };
                return Err(bad(key, "needs \"redis_url\" (it is a cluster setting)"));
            }
            None => {}
        }
        c.reuse_port = keys.bool("reuse_port")?.unwrap_or(false);
        if let Some(level) = keys.string("log_level")? {
            c.log_level = match level.to_ascii_lowercase().as_str() {
                "off" => LevelFilter::Off,
                "error" => LevelFilter::Error,
                "warn" => LevelFilter::Warn,
                "info" => LevelFilter::Info,
                "debug" => LevelFilter::Debug,
                "trace" => LevelFilter::Trace,
                _ => {
                    return Err(bad(
                        "log_level",
                        "must be one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", \"off\"",
                    ));
                }
            };
        }
        Ok(c)
    }
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

fn bad(key: &'static str, message: &str) -> ConfigError {
    ConfigError::BadValue { key, message: message.into() }
}

/// Typed access to the config object, with errors that name the key.
struct Keys<'a>(&'a Map<String, Value>);

impl Keys<'_> {
    fn bool(&self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(bad(key, &format!("must be true or false, not {other}"))),
        }
    }

    fn string(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(key, &format!("must be a string, not {other}"))),
        }
    }

    fn strings(&self, key: &'static str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(key, &format!("must be a list of strings, not hold {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(bad(key, &format!("must be a list of strings, not {other}"))),
        }
    }

    fn int(&self, key: &'static str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(bad(key, &format!("must be a whole number from {min} to {max}, not {n}"))),
            },
            Some(other) => Err(bad(key, &format!("must be a number, not {other}"))),
        }
    }
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
}
