//! What nodes tell each other through Redis (`Event`, and its JSON, which
//! nodes of every version must read alike), and what the server and the
//! cluster hand each other about users (`Origin`, `Proposed`, the users).

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A local connection that asked something, by slab key and the serial
/// that tells it from a later connection under the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub id: usize,
    pub serial: u64,
}

impl Origin {
    /// No connection: request `ticket` of `ragnarok ctl`, waiting for its
    /// answer. A refusal goes to that answer; no connection has this id.
    pub fn control(ticket: u64) -> Origin {
        Origin { id: CONTROL, serial: ticket }
    }

    /// The ticket of a `control` origin.
    pub fn ticket(self) -> Option<u64> {
        (self.id == CONTROL).then_some(self.serial)
    }

    /// "id.serial" (or "ctl.ticket"), as a `Join` or `Moderate` event
    /// carries it.
    pub fn parse(conn: &str) -> Option<Origin> {
        let (id, serial) = conn.split_once('.')?;
        let serial = serial.parse().ok()?;
        match id {
            "ctl" => Some(Origin::control(serial)),
            id => Some(Origin { id: id.parse().ok().filter(|&id| id != CONTROL)?, serial }),
        }
    }

    /// The inverse of `parse`.
    pub fn to_conn(self) -> String {
        match self.ticket() {
            Some(ticket) => format!("ctl.{ticket}"),
            None => format!("{}.{}", self.id, self.serial),
        }
    }
}

/// The id of `Origin::control`: never a slab key.
const CONTROL: usize = usize::MAX;

/// In a cluster, what a local user asked that the whole room must see in
/// one order: the server publishes it, and it takes effect when it comes
/// back from Redis as an `Event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposed {
    Say {
        name: Rc<str>,
        text: String,
    },
    PublicKey {
        name_key: Rc<str>,
        key: String,
    },
    Private {
        to_key: Rc<str>,
        to_name: Rc<str>,
        from: Rc<str>,
        text: String,
    },
    /// A moderator's action (`action`: as `moderation::Action::to_json`
    /// writes it) by `by`, at `at` (Unix seconds: its durations run from
    /// then on every node), and what Redis keeps of it.
    Moderate {
        by: String,
        at: u64,
        action: Json,
        kept: Kept,
    },
}

/// What a moderator's action leaves on Redis, for the nodes that (re)join
/// later (`moderate.lua`): bans by their target as shown, mutes by name
/// key, each as its JSON; the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    Nothing,
    Ban { target: String, ban: String },
    Unban { target: String },
    Mute { key: String, mute: String },
    Unmute { key: String },
    Lock,
    Unlock,
}

/// The room's rules as Redis keeps them, read back at each sync: the bans'
/// JSON, the mutes' (name key, JSON), the lock. (Ended bans and mutes are
/// left out: the sync drops them.)
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeptRules {
    pub bans: Vec<String>,
    pub mutes: Vec<(String, String)>,
    pub locked: bool,
}

/// A user online on another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUser {
    pub node: Rc<str>,
    pub name: String,
    pub key: Option<String>,
}

/// A user of this node, as the cluster registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name_key: Rc<str>,
    pub name: Rc<str>,
    /// The public key, if published.
    pub key: Option<Box<str>>,
    /// A resumable session's token hash (kept on Redis for its resume).
    pub token: Option<Box<str>>,
}

/// An event of the room, as every node sees it, in one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "lowercase")]
pub enum Event {
    /// `node` gave `name` (comparison key `key`) to one of its connections
    /// (`conn`: "id.serial", meaningful to `node` only).
    Join {
        node: String,
        conn: String,
        key: String,
        name: String,
    },
    Leave {
        node: String,
        key: String,
    },
    /// The session under `key` (`name`) is `node`'s now, resumed by its
    /// connection `conn` (see `Join`): no leave, no join.
    Resume {
        node: String,
        conn: String,
        key: String,
        name: String,
    },
    Say {
        name: String,
        text: String,
    },
    #[serde(rename = "pubkey")]
    PublicKey {
        node: String,
        key: String,
        pk: String,
    },
    #[serde(rename = "pm")]
    Private {
        to: String,
        from: String,
        text: String,
    },
    /// `node` (re)registered: these are all its users now.
    Node {
        node: String,
        users: Json,
    },
    /// `node` stopped renewing its lease: its users are gone.
    Dead {
        node: String,
    },
    /// A moderator's action, proposed by `node` for `conn` (see `Join`; a
    /// `ctl` request is "ctl.<ticket>"): every node applies it to its own
    /// users and rules. `at`: Unix seconds, when its durations start.
    #[serde(rename = "mod")]
    Moderate {
        node: String,
        conn: String,
        by: String,
        at: u64,
        action: Json,
    },
}

impl Event {
    /// The users of a `Node` event: (key, name, public key).
    pub fn node_users(users: &Json) -> Vec<(String, String, Option<String>)> {
        let Some(list) = users.as_array() else { return Vec::new() }; // cjson: {} = []
        list.iter()
            .filter_map(|u| {
                let u = u.as_array()?;
                let s = |i: usize| u.get(i).and_then(Json::as_str).map(str::to_owned);
                Some((s(0)?, s(1)?, s(2).filter(|k| !k.is_empty())))
            })
            .collect()
    }

    /// The event as published.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A published message, `<seq> <event>`; `None` when it is not one this
    /// version understands.
    pub fn parse_published(payload: &str) -> Option<(u64, Event)> {
        let (seq, json) = payload.split_once(' ')?;
        Some((seq.parse().ok()?, serde_json::from_str(json).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_cjson_lists_parse() {
        let e = Event::Join {
            node: "n".into(),
            conn: Origin { id: 3, serial: 7 }.to_conn(),
            key: "bob".into(),
            name: "Bob".into(),
        };
        let json = e.to_json();
        assert_eq!(json, r#"{"e":"join","node":"n","conn":"3.7","key":"bob","name":"Bob"}"#);
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        assert_eq!(Origin::parse("3.7"), Some(Origin { id: 3, serial: 7 }));
        assert_eq!(Origin::parse("3"), None);
        // A ctl request: no connection's id.
        assert_eq!(Origin::parse("ctl.9"), Some(Origin::control(9)));
        assert_eq!(Origin::control(9).ticket(), Some(9));
        assert_eq!(Origin { id: 3, serial: 9 }.ticket(), None);
        assert_eq!(Origin::parse(&format!("{}.1", usize::MAX)), None);
        let node: Event = serde_json::from_str(
            r#"{"e":"node","node":"n","users":[["bob","Bob",""],["al","Al","K"]]}"#,
        )
        .unwrap();
        let Event::Node { users, .. } = node else { panic!() };
        assert_eq!(
            Event::node_users(&users),
            [("bob".into(), "Bob".into(), None), ("al".into(), "Al".into(), Some("K".into()))]
        );
        assert!(Event::node_users(&serde_json::json!({})).is_empty(), "cjson's empty list");
        let dead: Event = serde_json::from_str(r#"{"e":"dead","node":"x"}"#).unwrap();
        assert_eq!(dead, Event::Dead { node: "x".into() });
    }

    #[test]
    fn the_wire_is_what_every_version_reads() {
        let events = [
            (
                Event::Leave { node: "n".into(), key: "k".into() },
                r#"{"e":"leave","node":"n","key":"k"}"#,
            ),
            (
                Event::Say { name: "A".into(), text: "t".into() },
                r#"{"e":"say","name":"A","text":"t"}"#,
            ),
            (
                Event::PublicKey { node: "n".into(), key: "k".into(), pk: "P".into() },
                r#"{"e":"pubkey","node":"n","key":"k","pk":"P"}"#,
            ),
            (
                Event::Private { to: "b".into(), from: "A".into(), text: "t".into() },
                r#"{"e":"pm","to":"b","from":"A","text":"t"}"#,
            ),
            (Event::Dead { node: "n".into() }, r#"{"e":"dead","node":"n"}"#),
            (
                Event::Moderate {
                    node: "n".into(),
                    conn: Origin::control(7).to_conn(),
                    by: "ctl".into(),
                    at: 1_700_000_000,
                    action: serde_json::json!({"cmd": "lock"}),
                },
                r#"{"e":"mod","node":"n","conn":"ctl.7","by":"ctl","at":1700000000,"action":{"cmd":"lock"}}"#,
            ),
        ];
        for (event, json) in events {
            assert_eq!(event.to_json(), json);
            assert_eq!(Event::parse_published(&format!("12 {json}")), Some((12, event)));
        }
        assert_eq!(Event::parse_published(r#"x {"e":"dead","node":"n"}"#), None);
        assert_eq!(Event::parse_published(r#"3 {"e":"future"}"#), None);
    }
}
