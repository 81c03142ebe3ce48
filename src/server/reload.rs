//! Live config: SIGHUP (and `ragnarok ctl reload`) read config.json again.
//! What a running server can take is applied without dropping anyone or the
//! history; keys that need a restart are reported and keep their old values.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use log::{error, warn};
use mio::event::Source;

use super::Server;
use crate::config::{Config, ConfigError, KEYS, RESTART_KEYS};
use crate::http::HttpPolicy;
use crate::transport::Socket;

/// What a reload changed: key names of `config.json`, in `KEYS` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Changed, and in force now.
    pub applied: Vec<&'static str>,
    /// Changed in the file, but kept at their old values until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// `applied ["server_password"]; needs a restart, kept: ["server_port"]`.
impl fmt::Display for Reloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "applied {:?}; needs a restart, kept: {:?}", self.applied, self.needs_restart)
    }
}

impl<S: Socket + Source> Server<S> {
    /// Where `reload_config` reads the config (the file the server started
    /// from; relative paths in it are taken from its folder, as at start).
    pub fn set_config_path(&mut self, path: PathBuf) {
        self.config_path = Some(path);
    }

    /// Reads the config file again and applies what changed, or nothing:
    /// a file that does not load (unreadable, not JSON, an unknown key, a
    /// bad value) is refused whole and returned (its message names the key
    /// and the file); the config in force stays. Keys that need a restart
    /// keep their old values and are listed, not applied.
    pub fn reload_config(&mut self, now: Instant) -> Result<Reloaded, ConfigError> {
        let Some(path) = &self.config_path else {
            return Err(ConfigError::Read {
                path: PathBuf::from("(none)"),
                source: io::Error::new(io::ErrorKind::NotFound, "started without a config file"),
            });
        };
        let new = Config::load(path)?;
        let reloaded = compare(&self.config, &new);
        let config = effective(&self.config, new);
        self.apply_config(config, now);
        Ok(reloaded)
    }

    /// Puts `config` (what `effective` kept of the file) in force, all in
    /// this one place. Existing sessions and connections:
    /// - take at once: the rate limits (messages and bytes) and every
    ///   timeout (read from `self.limits` at each use; `Session::
    ///   limits_changed` adds or drops a session's bucket), the per-address
    ///   limits and `max_connections` (checked for what comes next, nobody
    ///   open is closed for them), `allowed_origins` and `trusted_proxies`
    ///   (for HTTP requests not finished yet), the password (for a password
    ///   not sent yet), the history's bounds (trimmed now), `log_level`;
    /// - take only a larger `max_message_bytes` or `max_outbound_bytes`
    ///   once in the room: a smaller one applies from the next login (the
    ///   message limit) or to connections not in the room yet (the output
    ///   limit), so that nobody is cut off for what was fine a moment ago;
    /// - keep the title they were welcomed with: `server_name` is sent to
    ///   joiners from now on;
    /// - `admins` counts for logins from now on, and a moderator online
    ///   whose name is no longer in it is a member from now on.
    fn apply_config(&mut self, config: Config, now: Instant) {
        let limits = &config.limits;
        if limits.max_connections > self.limits.max_connections {
            let wanted = limits.max_connections as u64 + 64;
            let got = crate::fdlimit::raise(wanted);
            if got < wanted {
                warn!(
                    "open file limit is {got}: fewer than max_connections ({}) can connect",
                    limits.max_connections
                );
            }
        }
        self.http = HttpPolicy {
            allowed_origins: config.allowed_origins.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            max_message_bytes: limits.max_message_bytes,
            e2e_room: config.e2e_room,
            rate_limit: (limits.rate_limit_per_sec, limits.rate_limit_burst),
            room_name: config.server_name.clone(),
        };
        // The owner's rules stay; the room-wide login rate and where bans
        // are kept follow the file (the next ban writes the new file).
        self.rules.set_logins_per_sec(config.room_logins_per_sec);
        if self.state_file != config.state_file {
            // Another file: its bans are taken too, and it gets them all.
            self.state_file = config.state_file.clone();
            if self.cluster.is_none()
                && let Err(e) = self.load_rules()
            {
                error!("state_file: {e}; its bans were not taken");
            }
            self.save_rules();
        }
        self.addresses.set_limits(limits);
        self.room.set_title_and_password(&config.server_name, &config.server_password);
        let demoted = self.admins.set(&config.admins);
        self.room.set_history_limits(config.history_size, config.history_max_bytes);
        self.room.set_outbound_limit(limits.max_outbound_bytes);
        self.room.set_max_away(super::max_away(limits));
        if let Some(cluster) = &mut self.cluster {
            cluster.set_history(self.room.history().limits());
        }
        for (id, client) in &mut self.clients {
            client.session.limits_changed(limits, now);
            if let Some(key) = self.room.name_key_of(id)
                && demoted.iter().any(|k| **k == *key)
            {
                client.session.demote();
            }
            if client.conn.is_closing() {
                continue;
            }
            if client.session.is_chatting() {
                client.conn.raise_limits(limits.max_message_bytes, limits.max_outbound_bytes);
            } else {
                // Not in the room yet: its queue holds a few small replies.
                client.conn.set_outbound_limit(limits.max_outbound_bytes);
            }
        }
        // Read by the next `reload_tls` (this SIGHUP's).
        self.tls_files = config.tls.clone();
        log::set_max_level(config.log_filter());
        self.limits = config.limits.clone();
        self.config = config;
    }
}

/// Which keys differ between `old` and `new`, split into what a running
/// server takes and what needs a restart (`RESTART_KEYS`, and
/// `server_name` while `old` has `e2e_room` on).
pub fn compare(old: &Config, new: &Config) -> Reloaded {
    let mut reloaded = Reloaded::default();
    for key in KEYS {
        if differs(key.name, old, new) != Some(true) {
            continue;
        }
        match needs_restart(key.name, old) {
            true => reloaded.needs_restart.push(key.name),
            false => reloaded.applied.push(key.name),
        }
    }
    reloaded
}

fn needs_restart(key: &str, old: &Config) -> bool {
    // The room's title is bound into every encrypted room message.
    RESTART_KEYS.contains(&key) || (key == "server_name" && old.e2e_room)
}

/// What a running server takes of `new`: `new`, with the values of the
/// keys that need a restart kept as they are in `old`.
pub fn effective(old: &Config, mut new: Config) -> Config {
    if old.tls.is_some() != new.tls.is_some() {
        new.tls.clone_from(&old.tls); // `SSL` on or off
    }
    new.server_ip.clone_from(&old.server_ip);
    new.server_port = old.server_port;
    new.reuse_port = old.reuse_port;
    new.cluster.clone_from(&old.cluster); // `redis_url`, `cluster_name`, `redis_ca_file`
    new.metrics_addr.clone_from(&old.metrics_addr);
    new.control_socket.clone_from(&old.control_socket);
    new.e2e_room = old.e2e_room;
    if old.e2e_room {
        new.server_name.clone_from(&old.server_name);
    }
    new
}

/// Whether `key`'s value differs; `None` for a key not known here (a unit
/// test checks that every key of `KEYS` is). A key whose value lives inside
/// another's (`SSL_Cert` in `SSL`, `cluster_name` in `redis_url`) differs
/// only while the other is set in both.
fn differs(key: &str, a: &Config, b: &Config) -> Option<bool> {
    let (l, m) = (&a.limits, &b.limits);
    let tls = a.tls.as_ref().zip(b.tls.as_ref());
    let cluster = a.cluster.as_ref().zip(b.cluster.as_ref());
    Some(match key {
        "SSL" => a.tls.is_some() != b.tls.is_some(),
        "SSL_Cert" => tls.is_some_and(|(x, y)| x.cert != y.cert),
        "SSL_Key" => tls.is_some_and(|(x, y)| x.key != y.key),
        "server_ip" => a.server_ip != b.server_ip,
        "server_port" => a.server_port != b.server_port,
        "server_name" => a.server_name != b.server_name,
        "server_password" => a.server_password != b.server_password,
        "max_connections" => l.max_connections != m.max_connections,
        "max_connections_per_ip" => l.max_connections_per_ip != m.max_connections_per_ip,
        "max_handshakes_per_ip" => l.max_handshakes_per_ip != m.max_handshakes_per_ip,
        "login_attempts_per_minute" => l.login_attempts_per_minute != m.login_attempts_per_minute,
        "connections_per_minute_per_ip" => {
            l.connections_per_minute_per_ip != m.connections_per_minute_per_ip
        }
        "logins_per_minute_per_ip" => l.logins_per_minute_per_ip != m.logins_per_minute_per_ip,
        "room_logins_per_sec" => a.room_logins_per_sec != b.room_logins_per_sec,
        "max_message_bytes" => l.max_message_bytes != m.max_message_bytes,
        "max_outbound_bytes" => l.max_outbound_bytes != m.max_outbound_bytes,
        "handshake_timeout_secs" => l.handshake_timeout != m.handshake_timeout,
        "login_timeout_secs" => l.login_timeout != m.login_timeout,
        "resume_grace_secs" => l.resume_grace != m.resume_grace,
        "message_timeout_secs" => l.message_timeout != m.message_timeout,
        "idle_timeout_secs" => l.idle_timeout != m.idle_timeout,
        "rate_limit_per_sec" => l.rate_limit_per_sec != m.rate_limit_per_sec,
        "rate_limit_burst" => l.rate_limit_burst != m.rate_limit_burst,
        "rate_limit_bytes_per_sec" => l.rate_limit_bytes_per_sec != m.rate_limit_bytes_per_sec,
        "rate_limit_bytes_burst" => l.rate_limit_bytes_burst != m.rate_limit_bytes_burst,
        "history_size" => a.history_size != b.history_size,
        "history_max_bytes" => a.history_max_bytes != b.history_max_bytes,
        "allowed_origins" => a.allowed_origins != b.allowed_origins,
        "trusted_proxies" => a.trusted_proxies != b.trusted_proxies,
        "metrics_addr" => a.metrics_addr != b.metrics_addr,
        "reuse_port" => a.reuse_port != b.reuse_port,
        "e2e_room" => a.e2e_room != b.e2e_room,
        "control_socket" => a.control_socket != b.control_socket,
        "state_file" => a.state_file != b.state_file,
        "log_level" => a.log_level != b.log_level,
        "redis_url" => a.cluster.as_ref().map(|c| &c.redis) != b.cluster.as_ref().map(|c| &c.redis),
        "cluster_name" => cluster.is_some_and(|(x, y)| x.name != y.name),
        "redis_ca_file" => cluster.is_some_and(|(x, y)| x.redis_ca_file != y.redis_ca_file),
        "admins" => a.admins != b.admins,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::path::Path;

    /// Every key set, so that each can be changed on its own.
    fn base() -> Value {
        json!({
            "SSL": true, "SSL_Cert": "a.crt", "SSL_Key": "a.pem",
            "redis_url": "rediss://h", "metrics_addr": "127.0.0.1:9898",
            "allowed_origins": ["https://a.org"], "trusted_proxies": ["10.0.0.1"],
        })
    }

    /// Each key of `KEYS` with a value other than `base`'s (and valid with it).
    const CHANGED: &[(&str, &str)] = &[
        ("SSL", "false"),
        ("SSL_Cert", r#""b.crt""#),
        ("SSL_Key", r#""b.pem""#),
        ("server_ip", r#""::1""#),
        ("server_port", "443"),
        ("server_name", r#""Other""#),
        ("server_password", r#""secret""#),
        ("max_connections", "100"),
        ("max_connections_per_ip", "3"),
        ("max_handshakes_per_ip", "3"),
        ("login_attempts_per_minute", "3"),
        ("connections_per_minute_per_ip", "3"),
        ("logins_per_minute_per_ip", "3"),
        ("max_message_bytes", "1000"),
        ("max_outbound_bytes", "2000000"),
        ("handshake_timeout_secs", "3"),
        ("login_timeout_secs", "3"),
        ("resume_grace_secs", "0"),
        ("message_timeout_secs", "3"),
        ("idle_timeout_secs", "0"),
        ("rate_limit_per_sec", "3"),
        ("rate_limit_burst", "3"),
        ("rate_limit_bytes_per_sec", "0"),
        ("rate_limit_bytes_burst", "20000"),
        ("history_size", "3"),
        ("history_max_bytes", "1000"),
        ("allowed_origins", "[]"),
        ("trusted_proxies", r#"["10.0.0.0/8"]"#),
        ("metrics_addr", r#""127.0.0.1:9899""#),
        ("reuse_port", "true"),
        ("e2e_room", "true"),
        ("control_socket", r#""other.sock""#),
        ("state_file", r#""other.json""#),
        ("room_logins_per_sec", "7"),
        ("log_level", r#""debug""#),
        ("redis_url", r#""rediss://other""#),
        ("cluster_name", r#""other""#),
        ("redis_ca_file", r#""ca.pem""#),
        (
            "admins",
            r#"{"zed": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"}"#,
        ),
    ];

    fn config(value: &Value) -> Config {
        Config::parse(&value.to_string(), Path::new("/etc/ragnarok")).unwrap()
    }

    fn with(key: &str, json: &str) -> Config {
        let mut value = base();
        value[key] = serde_json::from_str(json).unwrap();
        config(&value)
    }

    #[test]
    fn every_key_is_compared() {
        let a = config(&base());
        for key in KEYS {
            assert!(
                differs(key.name, &a, &a).is_some(),
                "reload.rs: differs() lacks {:?}",
                key.name
            );
            assert!(CHANGED.iter().any(|(k, _)| *k == key.name), "CHANGED lacks {:?}", key.name);
        }
    }

    /// Each key changed alone is reported alone, as applied or as needing a
    /// restart (`RESTART_KEYS`); what `effective` keeps of it then differs
    /// from the old config in exactly the applied keys.
    #[test]
    fn each_key_changed_alone() {
        let old = config(&base());
        assert_eq!(compare(&old, &old), Reloaded::default());
        for (key, json) in CHANGED {
            let new = with(key, json);
            let reloaded = compare(&old, &new);
            let restart = RESTART_KEYS.contains(key);
            let (changed, other) = match restart {
                true => (&reloaded.needs_restart, &reloaded.applied),
                false => (&reloaded.applied, &reloaded.needs_restart),
            };
            assert_eq!((changed.as_slice(), other.len()), (&[*key][..], 0), "{key}: {reloaded:?}");
            let kept = effective(&old, new.clone());
            let after = compare(&old, &kept);
            assert_eq!(after.applied, reloaded.applied, "{key}");
            assert!(after.needs_restart.is_empty(), "{key}: {after:?}");
            match restart {
                true => assert_eq!(kept, old, "{key}: kept old"),
                false => assert_eq!(kept, new, "{key}: nothing else kept old"),
            }
        }
    }

    #[test]
    fn several_keys_in_keys_order() {
        let old = config(&base());
        let mut value = base();
        for (key, json) in [
            ("log_level", r#""warn""#),
            ("server_port", "1"),
            ("server_password", r#""x""#),
            ("redis_url", r#""rediss://h2""#),
        ] {
            value[key] = serde_json::from_str(json).unwrap();
        }
        let reloaded = compare(&old, &config(&value));
        assert_eq!(reloaded.applied, ["server_password", "log_level"]);
        assert_eq!(reloaded.needs_restart, ["server_port", "redis_url"]);
        assert_eq!(
            reloaded.to_string(),
            r#"applied ["server_password", "log_level"]; needs a restart, kept: ["server_port", "redis_url"]"#
        );
    }

    /// Keys inside another: turning `SSL` or `redis_url` off reports that
    /// one key, not the files that went with it.
    #[test]
    fn a_key_switched_off_is_one_change() {
        let old = config(&base());
        let mut value = base();
        value.as_object_mut().unwrap().remove("redis_url");
        value["SSL"] = json!(false);
        let reloaded = compare(&old, &config(&value));
        assert_eq!(reloaded.needs_restart, ["SSL", "redis_url"]);
        assert!(reloaded.applied.is_empty());
        let kept = effective(&old, config(&value));
        assert_eq!((kept.tls, kept.cluster), (old.tls.clone(), old.cluster.clone()));
    }

    /// In an end-to-end encrypted room the title is bound into every room
    /// message: renaming it needs a restart. In a plain room it is live.
    #[test]
    fn an_encrypted_room_keeps_its_name() {
        let mut value = base();
        value["e2e_room"] = json!(true);
        let old = config(&value);
        value["server_name"] = json!("Renamed");
        value["server_password"] = json!("new");
        let new = config(&value);
        let reloaded = compare(&old, &new);
        assert_eq!(reloaded.applied, ["server_password"]);
        assert_eq!(reloaded.needs_restart, ["server_name"]);
        let kept = effective(&old, new);
        assert_eq!((kept.server_name.as_str(), kept.server_password.as_str()), ("Ragnarok", "new"));
        // Turning e2e_room on needs a restart; until then the name is live.
        let plain = config(&base());
        let reloaded = compare(&plain, &with("server_name", r#""X""#));
        assert_eq!(reloaded.applied, ["server_name"]);
    }
}
