//! Moderators in the room (`admins`): each a name with its own password,
//! kept as an Argon2 PHC string (`ragnarok hash-password` makes one). A
//! login under an admin's name (or a look-alike of it) must give that
//! admin's password, which is checked here, on the event loop's thread: so
//! the hash is cheap to check (a few ms, [`M_COST_KIB`] and [`T_COST`]), a
//! configured hash may not ask for much more ([`MAX_M_COST_KIB`],
//! [`MAX_COST`]), and the whole
//! server checks at most [`CHECKS_PER_SEC`] admin passwords a second.

use std::collections::HashMap;
use std::time::Instant;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use serde_json::Value;

use crate::names;
use crate::ratelimit::{TokenBucket, Verdict};

/// Memory of `ragnarok hash-password`'s Argon2id, in KiB (8 MiB), and its
/// passes: a check takes about 5 ms on one core (measured in release on an
/// AMD EPYC: 5.1 ms median, 5.6 ms p90; docs/DEPLOY.md section 15), on the
/// one thread that serves everyone, where OWASP's first choice (19 MiB, 2
/// passes) takes 14 ms.
pub const M_COST_KIB: u32 = 8 * 1024;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

/// The most a configured hash may ask for: 19 MiB of memory, and 40 MiB ×
/// passes of work (about 15 ms a check at most; memory costs more than
/// passes: 40 MiB × 1 took 40 ms). OWASP's recommended Argon2id settings
/// (19 MiB × 2 and lighter) pass; a heavier hash would stall the room at
/// each moderator's login and is refused when the config is read.
pub const MAX_M_COST_KIB: u32 = 19 * 1024;
pub const MAX_COST: u64 = 40 * 1024;

/// Admin passwords checked per second in the whole server, and at once:
/// past it a login under an admin's name gets `too_many_attempts` unchecked.
/// 4 a second of 5 ms is at most 2 % of the loop (6 % with the heaviest
/// hash allowed), whatever a crowd of addresses tries.
pub const CHECKS_PER_SEC: u32 = 4;

/// One moderator, as the config names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// As configured (NFC).
    pub name: String,
    /// The comparison key of the name (`names::check`): its look-alikes
    /// are this admin too.
    pub key: String,
    /// The PHC string of the password (`$argon2id$v=19$m=...`).
    pub hash: String,
}

/// `admins` in the config: `{"name": "$argon2id$...", ...}`. Each name must
/// be a valid username, no two may look alike, each hash must be an Argon2
/// PHC string within [`MAX_M_COST_KIB`] and [`MAX_COST`]. The error
/// follows the key's name.
pub fn of_json(value: &Value) -> Result<Vec<Admin>, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "must be an object of names and password hashes \
             ({{\"alice\": \"$argon2id$...\"}}, made by `ragnarok hash-password`), not {value}"
        ));
    };
    let mut admins: Vec<Admin> = Vec::with_capacity(map.len());
    for (name, hash) in map {
        let checked = names::check(name)
            .map_err(|why| format!("has {name:?}, which is not a username: {}", why.text))?;
        if let Some(other) = admins.iter().find(|a| a.key == checked.key) {
            return Err(format!(
                "has {:?} and {name:?}, which look alike (names are compared ignoring case \
                 and look-alike characters): they would be one moderator",
                other.name
            ));
        }
        let Value::String(hash) = hash else {
            return Err(format!("{name:?} must be a password hash (a string), not {hash}"));
        };
        check_hash(hash).map_err(|why| format!("{name:?}: {why}"))?;
        admins.push(Admin { name: checked.display, key: checked.key, hash: hash.clone() });
    }
    Ok(admins)
}

/// Whether `phc` is an Argon2 PHC string this server can check within
/// [`MAX_M_COST_KIB`] and [`MAX_COST`]. Never echoes the hash.
pub fn check_hash(phc: &str) -> Result<(), String> {
    const MAKE: &str = "make one with `ragnarok hash-password`";
    let hash =
        PasswordHash::new(phc).map_err(|e| format!("is not a PHC password hash ({e}); {MAKE}"))?;
    Algorithm::try_from(hash.algorithm.as_str())
        .map_err(|_| format!("is a {} hash, not Argon2; {MAKE}", hash.algorithm))?;
    if hash.hash.is_none() || hash.salt.is_none() {
        return Err(format!("has no salt or no hash; {MAKE}"));
    }
    let params = Params::try_from(&hash)
        .map_err(|e| format!("has Argon2 parameters this server cannot use ({e}); {MAKE}"))?;
    let cost = u64::from(params.m_cost()) * u64::from(params.t_cost());
    if params.m_cost() > MAX_M_COST_KIB || cost > MAX_COST {
        return Err(format!(
            "asks for {} KiB × {} passes: checking it would hold up the whole room at each \
             login (at most {MAX_M_COST_KIB} KiB, and {MAX_COST} KiB × passes); {MAKE}",
            params.m_cost(),
            params.t_cost()
        ));
    }
    Ok(())
}

/// The PHC string of `password` with [`M_COST_KIB`], [`T_COST`],
/// [`P_COST`] and a random 16-byte salt (from the system, through ring).
pub fn hash_password(password: &str) -> Result<String, String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt).map_err(|_| "no random numbers from the system")?;
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| e.to_string())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let hash = argon2.hash_password_with_salt(password.as_bytes(), &salt);
    hash.map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// What a login under a name gets from [`Admins::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not an admin's name: the room password applies.
    NotAnAdmin,
    /// The admin's password.
    Right,
    Wrong,
    /// Past [`CHECKS_PER_SEC`] in the whole server: not checked.
    Busy,
}

/// The moderators of the room, and the server-wide bound on checking
/// their passwords.
#[derive(Debug, Default)]
pub struct Admins {
    /// By comparison key.
    by_key: HashMap<String, Admin>,
    checks: Option<TokenBucket>,
}

impl Admins {
    pub fn new(admins: &[Admin]) -> Admins {
        let by_key = admins.iter().map(|a| (a.key.clone(), a.clone())).collect();
        Admins { by_key, checks: None }
    }

    /// The list of a reloaded config (the bound on checks goes on).
    /// Takes a new list: the keys of admins removed, or whose password
    /// changed (a session that logged in with the old one is one no more).
    pub fn set(&mut self, admins: &[Admin]) -> Vec<String> {
        let new: HashMap<String, Admin> =
            admins.iter().map(|a| (a.key.clone(), a.clone())).collect();
        let gone = self.by_key.iter().filter(|(k, a)| new.get(*k).is_none_or(|n| n.hash != a.hash));
        let gone = gone.map(|(k, _)| k.clone()).collect();
        self.by_key = new;
        gone
    }

    /// No admins: logins are as in a room without moderators.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether the name of comparison key `key` is a moderator's.
    pub fn is_admin(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// Whether `password` is the one of the admin whose name has `key`.
    pub fn check(&mut self, key: &str, password: &str, now: Instant) -> Check {
        let Some(admin) = self.by_key.get(key) else { return Check::NotAnAdmin };
        let bucket = self.checks.get_or_insert_with(|| TokenBucket::new(CHECKS_PER_SEC, now));
        if bucket.level(now, CHECKS_PER_SEC, CHECKS_PER_SEC) < 1.0 {
            return Check::Busy;
        }
        let _: Verdict = bucket.take(now, CHECKS_PER_SEC, CHECKS_PER_SEC);
        match Argon2::default().verify_password(password.as_bytes(), admin.hash.as_str()) {
            Ok(()) => Check::Right,
            Err(_) => Check::Wrong,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn a_new_list_names_who_is_an_admin_no_more() {
        let (one, two) = (hash_password("one").unwrap(), hash_password("two").unwrap());
        let mut admins = Admins::default();
        assert!(admins.set(&of_json(&json!({"alice": one, "bob": one})).unwrap()).is_empty());
        // bob's password changed, alice was removed, carol is new.
        let gone = admins.set(&of_json(&json!({"bob": two, "carol": one})).unwrap());
        let mut gone: Vec<&str> = gone.iter().map(String::as_str).collect();
        gone.sort();
        assert_eq!(gone, ["alice", "bob"]);
    }

    #[test]
    fn a_hash_checks_its_own_password_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=8192,t=2,p=1$"), "{hash}");
        assert_ne!(hash, hash_password("correct horse").unwrap(), "a salt of its own");
        assert_eq!(check_hash(&hash), Ok(()));
        let admins = of_json(&json!({ "Alice": hash })).unwrap();
        assert_eq!((admins[0].name.as_str(), admins[0].key.as_str()), ("Alice", "alice"));
        let mut admins = Admins::new(&admins);
        let now = Instant::now();
        assert_eq!(admins.check("alice", "correct horse", now), Check::Right);
        assert_eq!(admins.check("alice", "correct horse ", now), Check::Wrong);
        assert_eq!(admins.check("bob", "correct horse", now), Check::NotAnAdmin);
        assert!(admins.is_admin("alice") && !admins.is_admin("bob"));
    }

    #[test]
    fn the_whole_server_checks_a_few_a_second() {
        let hash = hash_password("pw").unwrap();
        let mut admins = Admins::new(&of_json(&json!({ "alice": hash })).unwrap());
        let now = Instant::now();
        let checked = (0..10).filter(|_| admins.check("alice", "x", now) != Check::Busy).count();
        assert_eq!(checked, CHECKS_PER_SEC as usize);
        assert_eq!(admins.check("alice", "pw", now), Check::Busy, "not even the right one");
        assert_eq!(admins.check("bob", "x", now), Check::NotAnAdmin, "others are not held up");
        let later = now + Duration::from_secs(1) / CHECKS_PER_SEC;
        assert_eq!(admins.check("alice", "pw", later), Check::Right);
    }

    #[test]
    fn the_config_is_checked_naming_what_is_wrong() {
        let hash = hash_password("pw").unwrap();
        let err = |v: Value| of_json(&v).unwrap_err();
        assert!(err(json!(["alice"])).contains("must be an object"));
        assert!(err(json!({ "bell\u{7}": hash })).contains("not a username"));
        let both = err(json!({ "bob": hash, "B0B": hash }));
        assert!(both.contains("look alike"), "{both}");
        assert!(err(json!({ "alice": 5 })).contains("a password hash"));
        for bad in [
            "hunter2",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            "$argon2id$v=19$m=8192,t=2,p=1",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        ] {
            let why = err(json!({ "alice": bad }));
            assert!(why.contains("\"alice\"") && why.contains("hash-password"), "{bad}: {why}");
            assert!(!why.contains(bad), "the hash is not echoed: {why}");
        }
        let heavy = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$\
                     aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let why = err(json!({ "alice": heavy }));
        assert!(why.contains("65536 KiB × 3 passes"), "{why}");
        let wide = "$argon2id$v=19$m=40960,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                    aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert!(err(json!({ "alice": wide })).contains("40960 KiB × 1 passes"), "memory");
        assert_eq!(of_json(&json!({})).unwrap(), []);
        // Made elsewhere, within the bound: OWASP's (19 MiB, 2 passes).
        let owasp = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                     aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert_eq!(check_hash(owasp), Ok(()));
    }
}
