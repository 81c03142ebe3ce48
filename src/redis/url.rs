//! `redis_url`: where the cluster's Redis is, parsed once from the config.
//! `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS.

use std::fmt;

/// A parsed `redis_url`. `Display` hides the password (it goes to logs).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(format!(
                "{:?} must start with redis:// or rediss:// (TLS), e.g. \"redis://127.0.0.1:6379\"",
                Self::hidden(url)
            ));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, password) = match u.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => ("", Some(u)),
                };
                let user = (!user.is_empty()).then(|| percent_decode(user)).transpose()?;
                let password =
                    password.filter(|p| !p.is_empty()).map(percent_decode).transpose()?;
                (user, password)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("has an unclosed '[' in its host")?;
            let port = after.strip_prefix(':');
            if !after.is_empty() && port.is_none() {
                return Err("has text after its IPv6 host; expected \":port\"".into());
            }
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err("names no host, e.g. \"redis://127.0.0.1:6379\"".into());
        }
        let port = match port {
            None => 6379,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("has port {p:?}: expected a number from 1 to 65535"))?,
        };
        let db = match path.split(['?', '#']).next().unwrap_or("") {
            "" => 0,
            d => d.parse::<u32>().map_err(|_| format!("has database {d:?}: expected a number"))?,
        };
        Ok(RedisUrl { tls, host: host.to_owned(), port, user, password, db })
    }

    /// `host:port`, for connecting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL with its password replaced by `***`.
    fn hidden(url: &str) -> String {
        match (url.split_once("://"), url.rfind('@')) {
            (Some((scheme, rest)), Some(_)) => {
                let (auth, host) = rest.rsplit_once('@').unwrap_or(("", rest));
                let user = auth.split_once(':').map_or("", |(u, _)| u);
                format!("{scheme}://{user}:***@{host}")
            }
            _ => url.to_owned(),
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        write!(f, "{scheme}://")?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => write!(f, ":***@")?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.address(), self.db)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or("has a bad %-escape in its user or password")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "has a user or password that is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.db), (false, "127.0.0.1", 6380, 2));
        assert_eq!((u.user, u.password), (None, None));
        let u = RedisUrl::parse("rediss://chat:p%40ss@redis.example.org").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 6379);
        assert_eq!(u.user.as_deref(), Some("chat"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        let u = RedisUrl::parse("redis://:secret@[::1]:7000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert_eq!(u.address(), "[::1]:7000");
        assert_eq!((u.user, u.password.as_deref()), (None, Some("secret")));
    }

    #[test]
    fn refuses_nonsense_and_hides_passwords() {
        for bad in [
            "http://x",
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h/x",
            "redis://[::1",
            "redis://u:%zz@h",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
        let e = RedisUrl::parse("http://u:hunter2@h").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let u = RedisUrl::parse("redis://u:hunter2@h").unwrap();
        assert!(!format!("{u} {u:?}").contains("hunter2"));
    }
}
