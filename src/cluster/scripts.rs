//! The Lua scripts (`scripts/*.lua`) and one typed function per script
//! that builds its `EVALSHA`, naming its arguments in the order the script
//! reads them as `ARGV[n]`, here and nowhere else.

use std::sync::OnceLock;

use super::event::{Kept, LocalUser};
use crate::redis::Command;

/// One script. Every change to the room is one: it changes the state on
/// Redis, numbers the change (`INCR seq`) and publishes it on `events`, in
/// one atomic step, so that every node sees every change once and in one
/// order, and notices a gap. No script takes `KEYS`: the Redis keys are the
/// prefix (`ARGV[1]`, `ragnarok:<cluster_name>:`) followed by `users`,
/// `pubkeys`, `tokens` (resume tokens' hashes), `history`, `seq`, `epoch`,
/// `nodes`, `node:<id>`, the room's rules (`bans`, `mutes`, `locked`) and
/// the channel `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Claim,
    Leave,
    Say,
    PublicKey,
    Private,
    Lease,
    Sync,
    Moderate,
    Resume,
}

impl Script {
    pub const ALL: [Script; 9] = [
        Script::Claim,
        Script::Leave,
        Script::Say,
        Script::PublicKey,
        Script::Private,
        Script::Lease,
        Script::Sync,
        Script::Moderate,
        Script::Resume,
    ];

    pub fn text(self) -> &'static str {
        match self {
            Script::Claim => include_str!("scripts/claim.lua"),
            Script::Leave => include_str!("scripts/leave.lua"),
            // A proposal (what a user asked) first checks its deadline.
            Script::Say => {
                concat!(include_str!("scripts/deadline.lua"), include_str!("scripts/say.lua"))
            }
            Script::PublicKey => concat!(
                include_str!("scripts/deadline.lua"),
                include_str!("scripts/public_key.lua")
            ),
            Script::Private => {
                concat!(include_str!("scripts/deadline.lua"), include_str!("scripts/private.lua"))
            }
            Script::Lease => include_str!("scripts/lease.lua"),
            Script::Sync => include_str!("scripts/sync.lua"),
            Script::Moderate => {
                concat!(include_str!("scripts/deadline.lua"), include_str!("scripts/moderate.lua"))
            }
            Script::Resume => include_str!("scripts/resume.lua"),
        }
    }

    /// What `SCRIPT LOAD` answers for the text, so that `EVALSHA` can follow
    /// at once.
    pub(super) fn sha(self) -> &'static str {
        static SHAS: OnceLock<Vec<String>> = OnceLock::new();
        let shas = SHAS.get_or_init(|| Script::ALL.iter().map(|s| sha1_hex(s.text())).collect());
        &shas[self as usize]
    }

    /// `EVALSHA <sha> 0 <prefix>`: the arguments follow; ARGV[1] is always
    /// the key prefix.
    fn eval(self, prefix: &str) -> Command {
        Command::new("EVALSHA").arg(self.sha()).arg("0").arg(prefix)
    }
}

/// `SCRIPT LOAD` of `script`.
pub fn load(script: Script) -> Command {
    Command::new("SCRIPT").arg("LOAD").arg(script.text())
}

/// The subscription to the room's events (what every script publishes to).
pub fn subscribe(prefix: &str) -> Command {
    Command::new("SUBSCRIBE").arg(format!("{prefix}events"))
}

/// claim.lua. ARGV: 1 prefix, 2 node, 3 name key, 4 name, 5 the `Join`
/// event, 6 the resume token's hash or ''.
pub fn claim(
    prefix: &str,
    node: &str,
    key: &str,
    name: &str,
    event: String,
    token_hash: Option<&str>,
) -> Command {
    Script::Claim.eval(prefix).arg(node).arg(key).arg(name).arg(event).arg(token_hash.unwrap_or(""))
}

/// resume.lua. ARGV: 1 prefix, 2 node, 3 name key, 4 name, 5 the token's
/// hash, 6 the new session's token hash or '', 7 '1' if the lock keeps a
/// new session out, 8 the `Resume` event, 9 the `Join` event.
#[allow(clippy::too_many_arguments)]
pub fn resume(
    prefix: &str,
    node: &str,
    key: &str,
    name: &str,
    token_hash: &str,
    new_token_hash: Option<&str>,
    locked_out: bool,
    resumed: String,
    joined: String,
) -> Command {
    Script::Resume
        .eval(prefix)
        .arg(node)
        .arg(key)
        .arg(name)
        .arg(token_hash)
        .arg(new_token_hash.unwrap_or(""))
        .arg(if locked_out { "1" } else { "0" })
        .arg(resumed)
        .arg(joined)
}

/// leave.lua. ARGV: 1 prefix, 2 node, 3 name key, 4 the `Leave` event.
pub fn leave(prefix: &str, node: &str, key: &str, event: String) -> Command {
    Script::Leave.eval(prefix).arg(node).arg(key).arg(event)
}

/// deadline.lua + say.lua. ARGV: 1 prefix, 2 deadline (ms, Redis's clock),
/// 3 history count, 4 the `Say` event.
pub fn say(prefix: &str, deadline_ms: i64, history_count: usize, event: String) -> Command {
    Script::Say.eval(prefix).arg(deadline_ms.to_string()).arg(history_count.to_string()).arg(event)
}

/// deadline.lua + public_key.lua. ARGV: 1 prefix, 2 deadline, 3 node,
/// 4 name key, 5 public key, 6 the `PublicKey` event.
pub fn public_key(
    prefix: &str,
    deadline_ms: i64,
    node: &str,
    key: &str,
    pk: String,
    event: String,
) -> Command {
    Script::PublicKey
        .eval(prefix)
        .arg(deadline_ms.to_string())
        .arg(node)
        .arg(key)
        .arg(pk)
        .arg(event)
}

/// deadline.lua + private.lua. ARGV: 1 prefix, 2 deadline, 3 the target's
/// name key, 4 the `Private` event.
pub fn private(prefix: &str, deadline_ms: i64, to_key: &str, event: String) -> Command {
    Script::Private.eval(prefix).arg(deadline_ms.to_string()).arg(to_key).arg(event)
}

/// deadline.lua + moderate.lua. ARGV: 1 prefix, 2 deadline, 3 what to keep,
/// 4 its field, 5 its value, 6 the `Moderate` event.
pub fn moderate(prefix: &str, deadline_ms: i64, kept: &Kept, event: String) -> Command {
    let (keep, field, value) = match kept {
        Kept::Nothing => ("", "", ""),
        Kept::Ban { target, ban } => ("ban", &**target, &**ban),
        Kept::Unban { target } => ("unban", &**target, ""),
        Kept::Mute { key, mute } => ("mute", &**key, &**mute),
        Kept::Unmute { key } => ("unmute", &**key, ""),
        Kept::Lock => ("lock", "", ""),
        Kept::Unlock => ("unlock", "", ""),
    };
    Script::Moderate
        .eval(prefix)
        .arg(deadline_ms.to_string())
        .arg(keep)
        .arg(field)
        .arg(value)
        .arg(event)
}

/// lease.lua. ARGV: 1 prefix, 2 node, 3 lease (ms).
pub fn lease(prefix: &str, node: &str, lease_ms: u128) -> Command {
    Script::Lease.eval(prefix).arg(node).arg(lease_ms.to_string())
}

/// sync.lua. ARGV: 1 prefix, 2 node, 3 lease (ms), 4 history count,
/// 5 history bytes, 6 an epoch, 7 the last event seen (`seq`), then 4 per
/// user: name key, name, public key or "", resume token hash or "".
pub fn sync(
    prefix: &str,
    node: &str,
    lease_ms: u128,
    history: (usize, usize),
    (epoch, seq): (&str, u64),
    users: &[LocalUser],
) -> Command {
    let mut command = Script::Sync
        .eval(prefix)
        .arg(node)
        .arg(lease_ms.to_string())
        .arg(history.0.to_string())
        .arg(history.1.to_string())
        .arg(epoch)
        .arg(seq.to_string());
    for u in users {
        let key = u.key.as_deref().unwrap_or("");
        let token = u.token.as_deref().unwrap_or("");
        command = command.arg(&*u.name_key).arg(&*u.name).arg(key).arg(token);
    }
    command
}

/// The SHA-1 of `text` in hex, as Redis names a loaded script.
fn sha1_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The `n` of every `ARGV[n]` in the code of `text` (comments skipped).
    fn argv_used(text: &str) -> BTreeSet<usize> {
        let mut used = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("--").next().unwrap_or("");
            for part in code.split("ARGV[").skip(1) {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(n) = digits.parse() {
                    used.insert(n);
                }
            }
        }
        used
    }

    /// The ARGV of a built `EVALSHA <sha> 0 ARGV...`.
    fn argv(command: &Command) -> &[Vec<u8>] {
        let args = command.args();
        assert_eq!(args[0], b"EVALSHA");
        assert_eq!(args[2], b"0", "no KEYS");
        &args[3..]
    }

    fn script_of(command: &Command) -> Script {
        let sha = &command.args()[1];
        Script::ALL.into_iter().find(|s| s.sha().as_bytes() == sha).expect("a known script")
    }

    /// sync.lua's arguments before the users, and per user.
    const SYNC_FIXED: usize = 7;
    const SYNC_PER_USER: usize = 4;

    #[test]
    fn each_function_builds_what_its_script_reads() {
        let users =
            [LocalUser { name_key: "al".into(), name: "Al".into(), key: None, token: None }];
        let built = [
            claim("p:", "n", "al", "Al", "{}".into(), Some("H")),
            resume("p:", "n", "al", "Al", "H", None, true, "{}".into(), "{}".into()),
            leave("p:", "n", "al", "{}".into()),
            say("p:", 5, 50, "{}".into()),
            public_key("p:", 5, "n", "al", "K".into(), "{}".into()),
            private("p:", 5, "al", "{}".into()),
            lease("p:", "n", 10_000),
            sync("p:", "n", 10_000, (50, 1000), ("E", 0), &[]),
            moderate("p:", 5, &Kept::Lock, "{}".into()),
        ];
        for command in &built {
            let script = script_of(command);
            let used = argv_used(script.text());
            let arity = argv(command).len();
            assert_eq!(used, (1..=arity).collect(), "{script:?}: ARGV read vs built");
            assert_eq!(argv(command)[0], b"p:", "{script:?}: ARGV[1] is the prefix");
        }
        // SYNC's users follow its fixed arguments, SYNC_PER_USER each, as
        // its loops read them.
        let text = Script::Sync.text();
        let lp = format!("for i = {}, #ARGV, {} do", SYNC_FIXED + 1, SYNC_PER_USER);
        assert_eq!(text.matches(&lp).count(), 2, "{text}");
        let command = sync("p:", "n", 10_000, (50, 1000), ("E", 0), &users);
        assert_eq!(argv(&command).len(), SYNC_FIXED + SYNC_PER_USER);
        assert_eq!(&argv(&command)[SYNC_FIXED..], [&b"al"[..], b"Al", b"", b""]);
    }

    #[test]
    fn proposals_check_their_deadline_first() {
        for script in [Script::Say, Script::PublicKey, Script::Private, Script::Moderate] {
            assert!(script.text().starts_with(include_str!("scripts/deadline.lua")));
        }
        let command = say("p:", 1234, 7, "E".into());
        assert_eq!(argv(&command), [&b"p:"[..], b"1234", b"7", b"E"]);
    }

    #[test]
    fn a_moderation_names_what_redis_keeps() {
        let kept = [
            (Kept::Nothing, ["", "", ""]),
            (Kept::Ban { target: "bob".into(), ban: "B".into() }, ["ban", "bob", "B"]),
            (Kept::Unban { target: "10.0.0.0/8".into() }, ["unban", "10.0.0.0/8", ""]),
            (Kept::Mute { key: "bob".into(), mute: "M".into() }, ["mute", "bob", "M"]),
            (Kept::Unmute { key: "bob".into() }, ["unmute", "bob", ""]),
            (Kept::Lock, ["lock", "", ""]),
            (Kept::Unlock, ["unlock", "", ""]),
        ];
        let text = Script::Moderate.text();
        for (kept, [keep, field, value]) in kept {
            let command = moderate("p:", 9, &kept, "E".into());
            let args = argv(&command);
            assert_eq!(
                args,
                [&b"p:"[..], b"9", keep.as_bytes(), field.as_bytes(), value.as_bytes(), b"E"]
            );
            if !keep.is_empty() {
                assert!(text.contains(&format!("keep == '{keep}'")), "{keep} not in moderate.lua");
            }
        }
    }

    #[test]
    fn script_digests_are_what_redis_computes() {
        // SHA-1 of "return 1", as `redis-cli SCRIPT LOAD "return 1"` prints.
        assert_eq!(sha1_hex("return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        // `sha` indexes by discriminant: ALL lists the scripts in that order.
        assert!(Script::ALL.iter().enumerate().all(|(i, s)| *s as usize == i));
        let shas: BTreeSet<_> = Script::ALL.iter().map(|s| s.sha()).collect();
        assert_eq!(shas.len(), Script::ALL.len());
        assert_eq!(load(Script::Lease).args()[2], Script::Lease.text().as_bytes());
        assert_eq!(subscribe("p:").args(), [&b"SUBSCRIBE"[..], b"p:events"]);
    }
}
