//! The JSON protocol on the wire: what clients send (`Request`), what the
//! server sends (`Reply`), and the stable error codes. Field names and
//! `msgType` values keep the original Python server's spelling.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A parsed message from a logged-in client.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Broadcast {
        text: String,
    },
    PrivateMessage {
        target: String,
        text: String,
    },
    OnlineUsers,
    /// Publishes the sender's public key (opaque to the server).
    PublicKey {
        key: String,
    },
    /// A moderator's action (`cmd`, `target`, `for_secs`, `reason`,
    /// `text`: the fields of `ragnarok ctl`'s requests), the whole object
    /// for `moderation::Action::of_json`.
    Moderate(Value),
}

/// What a logged-in user is: a member, or a moderator (an admin of the
/// config, logged in with their own password).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Member,
    Moderator,
}

/// Why a client's message was refused. Each maps to a stable `code` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    MissingField,
    InvalidField,
    BinaryUnsupported,
    UserOffline,
    WrongPassword,
    InvalidName,
    NameTaken,
    RateLimited,
    LoginTimeout,
    MessageTooBig,
    SlowReader,
    KeyTooLarge,
    TooManyAttempts,
    TooManyConnections,
    /// Past `logins_per_minute_per_ip`: the name was not tried.
    TooManyLogins,
    /// A node of a cluster cannot reach Redis: what needs the cluster waits.
    ClusterUnavailable,
    /// A node lost messages of the cluster (its link broke or was cut).
    MessagesLost,
    /// Sent while a cluster was asked for the name, past what is held
    /// until it answers: not delivered.
    LoginPending,
    /// A message did not arrive whole within `message_timeout_secs`.
    MessageTimeout,
    /// Plaintext in an `e2e_room`: only the sealed form is relayed.
    EncryptionRequired,
    /// Removed from the room by its owner or a moderator.
    Kicked,
    /// The name, the address or its network is banned.
    Banned,
    /// `ctl lock`: no new logins.
    RoomLocked,
    /// Muted: what you send reaches no one.
    Muted,
    /// A `Moderate` from a user who is not a moderator.
    NotAModerator,
    /// A moderator's action that was not done (not online, not banned, a
    /// moderator's name...): the text says why.
    ModerationRefused,
    /// A `Resume` for a name held by a session with another token.
    ResumeRefused,
    /// This connection's session was resumed by another connection.
    ResumedElsewhere,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::BinaryUnsupported => "binary_unsupported",
            ErrorCode::UserOffline => "user_offline",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LoginTimeout => "login_timeout",
            ErrorCode::MessageTooBig => "message_too_big",
            ErrorCode::SlowReader => "slow_reader",
            ErrorCode::KeyTooLarge => "key_too_large",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooManyLogins => "too_many_logins",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
            ErrorCode::MessagesLost => "messages_lost",
            ErrorCode::LoginPending => "login_pending",
            ErrorCode::MessageTimeout => "message_timeout",
            ErrorCode::EncryptionRequired => "encryption_required",
            ErrorCode::Kicked => "kicked",
            ErrorCode::Banned => "banned",
            ErrorCode::RoomLocked => "room_locked",
            ErrorCode::Muted => "muted",
            ErrorCode::NotAModerator => "not_a_moderator",
            ErrorCode::ModerationRefused => "moderation_refused",
            ErrorCode::ResumeRefused => "resume_refused",
            ErrorCode::ResumedElsewhere => "resumed_elsewhere",
        }
    }
}

/// WebSocket close codes the server sends (RFC 6455, section 7.4.1).
pub mod close_code {
    /// A goodbye: a resumable session leaves at once.
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// What a server message is, by its `msgType` (or `ServerName`): how
/// deliveries are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Broadcast,
    PrivateMessage,
    OnlineUsers,
    UsersJoined,
    UsersLeft,
    PublicKeys,
    PublicKey,
    Error,
    ServerName,
    Announcement,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Broadcast => "Broadcast",
            Kind::PrivateMessage => "PrivateMessage",
            Kind::OnlineUsers => "OnlineUsers",
            Kind::UsersJoined => "UsersJoined",
            Kind::UsersLeft => "UsersLeft",
            Kind::PublicKeys => "PublicKeys",
            Kind::PublicKey => "PublicKey",
            Kind::Error => "Error",
            Kind::ServerName => "ServerName",
            Kind::Announcement => "Announcement",
        }
    }
}

/// A refused input: a stable code plus a human-readable explanation, and
/// the user it is about (`TgtUser`) where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub text: String,
    pub target: Option<String>,
}

impl Rejection {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Rejection { code, text: text.into(), target: None }
    }

    /// A private message to a user who is not online (here or, in a
    /// cluster, anywhere): the one wording, with the target named.
    pub fn user_offline(target: &str) -> Self {
        let target = shortened(target);
        let text = format!("{target:?} is not online; the message was not delivered");
        Rejection { code: ErrorCode::UserOffline, text, target: Some(target) }
    }

    /// What a login or message that needs the cluster gets while it is away.
    pub fn cluster_unavailable() -> Self {
        Rejection::new(
            ErrorCode::ClusterUnavailable,
            "this server has lost its link to the rest of the room: \
             not sent; try again in a moment",
        )
    }

    pub fn to_json(&self) -> String {
        let target = self.target.as_deref();
        Reply::Error { code: self.code.as_str(), text: &self.text, target }.to_json()
    }
}

/// The fields a request may carry, read straight off the JSON (no map of
/// every key; unknown keys are skipped). `Some` when the key is present,
/// even with a `null` or non-string value, so that the errors below can
/// tell "missing" from "not a string".
#[derive(Deserialize)]
struct Fields {
    #[serde(rename = "msgType", default, deserialize_with = "present")]
    msg_type: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    text: Option<Value>,
    #[serde(rename = "TgtUser", default, deserialize_with = "present")]
    target: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    key: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parses one text frame from a logged-in client.
pub fn parse_request(frame: &str) -> Result<Request, Rejection> {
    let not_json = |e: serde_json::Error| {
        Rejection::new(ErrorCode::BadJson, format!("message is not valid JSON: {e}"))
    };
    // (serde would also read a JSON array into `Fields`, field by field.)
    if !frame.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(frame).map_err(not_json)?;
        return Err(Rejection::new(ErrorCode::BadJson, "message must be a JSON object"));
    }
    let fields: Fields = serde_json::from_str(frame).map_err(not_json)?;
    let take = |value: Option<Value>, name: &str| -> Result<String, Rejection> {
        match value {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(Rejection::new(
                ErrorCode::InvalidField,
                format!("field \"{name}\" must be a string"),
            )),
            None => {
                Err(Rejection::new(ErrorCode::MissingField, format!("field \"{name}\" is missing")))
            }
        }
    };
    let kind = take(fields.msg_type, "msgType")?;
    match kind.as_str() {
        "Broadcast" => Ok(Request::Broadcast { text: take(fields.text, "text")? }),
        "PrivateMessage" => {
            let target = take(fields.target, "TgtUser")?;
            Ok(Request::PrivateMessage { target, text: take(fields.text, "text")? })
        }
        "OnlineUsers" => Ok(Request::OnlineUsers),
        // Its fields are read as `ragnarok ctl`'s are (moderation.rs).
        "Moderate" => serde_json::from_str(frame).map(Request::Moderate).map_err(not_json),
        "PublicKey" => {
            let key = take(fields.key, "key")?;
            check_public_key(&key)?;
            Ok(Request::PublicKey { key })
        }
        _ => Err(Rejection::new(
            ErrorCode::UnknownType,
            format!(
                "unknown msgType {:?}: expected \"Broadcast\", \"PrivateMessage\", \"PublicKey\", \"OnlineUsers\" or \"Moderate\"",
                shortened(&kind)
            ),
        )),
    }
}

/// Length of a published public key, `e2e2:` + identity key + `:` + session
/// key, each key standard base64 (88 characters, with padding) of the 65-byte
/// uncompressed P-256 point `0x04 || X || Y` (docs/PROTOCOL.md).
pub const PUBLIC_KEY_CHARS: usize = KEY_PREFIX.len() + 2 * POINT_CHARS + 1;

/// What a published key starts with: the scheme's version.
const KEY_PREFIX: &[u8] = b"e2e2:";

/// One point of a key, in base64.
const POINT_CHARS: usize = 88;

/// Longest `key` looked at, in bytes (a longer one is `key_too_large`,
/// before anything else).
pub const MAX_KEY_BYTES: usize = 1024;

/// A `PublicKey`'s `key` must be what the end-to-end scheme publishes:
/// exactly [`PUBLIC_KEY_CHARS`] bytes, `e2e2:`, a point, `:`, a point,
/// each point canonical standard base64 (letters, digits, `+`, `/`, one `=`
/// of padding, the unused bits zero) of 65 bytes starting with 0x04. The
/// length is checked first, then the characters, then what they decode to;
/// nothing is decoded before the length is right. (Whether the points are
/// on the curve is left to the clients, which import them.)
pub fn check_public_key(key: &str) -> Result<(), Rejection> {
    let invalid = |why: &str| Err(Rejection::new(ErrorCode::InvalidField, why));
    if key.len() > MAX_KEY_BYTES {
        let why = format!("a public key may have at most {MAX_KEY_BYTES} bytes");
        return Err(Rejection::new(ErrorCode::KeyTooLarge, why));
    }
    if key.is_empty() {
        return invalid("field \"key\" must not be empty");
    }
    const FORMAT: &str = "field \"key\" must be an e2e2 public key: \"e2e2:\", a P-256 point, \
                          \":\", a P-256 point (182 characters); each point standard base64 \
                          (88 characters, with padding) of the 65-byte uncompressed 0x04 || X || Y";
    // Bytes, never `str` slices: a multi-byte character must not split.
    let bytes = key.as_bytes();
    if bytes.len() != PUBLIC_KEY_CHARS {
        return invalid(FORMAT);
    }
    let (prefix, rest) = bytes.split_at(KEY_PREFIX.len());
    let (identity, rest) = rest.split_at(POINT_CHARS);
    let (colon, session) = rest.split_at(1);
    if prefix != KEY_PREFIX || colon != b":" {
        return invalid(FORMAT);
    }
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut points = [[0u8; POINT_CHARS - 1]; 2];
    for (point, values) in [identity, session].into_iter().zip(&mut points) {
        let (body, pad) = point.split_at(POINT_CHARS - 1);
        for (value, &c) in values.iter_mut().zip(body) {
            match sextet(c) {
                Some(v) => *value = v,
                None => return invalid(FORMAT),
            }
        }
        if pad != b"=" {
            return invalid(FORMAT);
        }
    }
    for values in points {
        // 0x04 is 000001|00, so the first character is 'B' and the second's
        // top two bits are zero; 65 bytes leave two unused bits in the 87th
        // character, which must be zero (canonical).
        if values[0] != 1 || values[1] >> 4 != 0 || values[POINT_CHARS - 2] & 0b11 != 0 {
            return invalid(FORMAT);
        }
    }
    Ok(())
}

impl Request {
    /// Its `msgType`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Broadcast { .. } => "Broadcast",
            Request::PrivateMessage { .. } => "PrivateMessage",
            Request::OnlineUsers => "OnlineUsers",
            Request::PublicKey { .. } => "PublicKey",
            Request::Moderate(_) => "Moderate",
        }
    }
}

/// At most 32 characters of a client's string, for quoting it in an error.
pub fn shortened(s: &str) -> String {
    match s.char_indices().nth(32) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Everything the server sends, serialized with the original's field names.
#[derive(Serialize)]
#[serde(tag = "msgType")]
pub enum Reply<'a> {
    Broadcast {
        #[serde(rename = "SrcUser")]
        source: &'a str,
        text: &'a str,
        /// Set on replays of recent history sent to a joiner.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        history: bool,
    },
    PrivateMessage {
        #[serde(rename = "SrcUser")]
        source: &'a str,
        text: &'a str,
    },
    OnlineUsers {
        #[serde(rename = "Users")]
        users: Vec<&'a str>,
        /// More names follow in `UsersJoined` (a list too long for one message).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    PublicKey {
        #[serde(rename = "SrcUser")]
        source: &'a str,
        key: &'a str,
    },
    PublicKeys {
        #[serde(rename = "Keys")]
        keys: std::collections::BTreeMap<&'a str, &'a str>,
    },
    UsersJoined {
        #[serde(rename = "Users")]
        users: Vec<&'a str>,
    },
    UsersLeft {
        #[serde(rename = "Users")]
        users: Vec<&'a str>,
    },
    Error {
        code: &'a str,
        text: &'a str,
        #[serde(rename = "TgtUser", skip_serializing_if = "Option::is_none")]
        target: Option<&'a str>,
    },
    /// The server's own words (the owner's `say`, moderation): from no user.
    Announcement { text: &'a str },
}

impl Reply<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Reply::Broadcast { .. } => Kind::Broadcast,
            Reply::PrivateMessage { .. } => Kind::PrivateMessage,
            Reply::OnlineUsers { .. } => Kind::OnlineUsers,
            Reply::PublicKey { .. } => Kind::PublicKey,
            Reply::PublicKeys { .. } => Kind::PublicKeys,
            Reply::UsersJoined { .. } => Kind::UsersJoined,
            Reply::UsersLeft { .. } => Kind::UsersLeft,
            Reply::Announcement { .. } => Kind::Announcement,
            Reply::Error { .. } => Kind::Error,
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing plain strings and lists into a String cannot fail.
        serde_json::to_string(self).expect("reply serializes")
    }
}

/// `{"ServerName": ...}`, the first thing a user receives after logging in,
/// with `"e2e_room": true` in an end-to-end encrypted room and `"role":
/// "moderator"` for a moderator (members get no `role`).
pub fn server_name_json(name: &str, e2e_room: bool, role: Role) -> String {
    welcome(name, e2e_room, role).to_string()
}

fn welcome(name: &str, e2e_room: bool, role: Role) -> serde_json::Value {
    let mut welcome = serde_json::json!({ "ServerName": name });
    if e2e_room {
        welcome["e2e_room"] = true.into();
    }
    if role == Role::Moderator {
        welcome["role"] = "moderator".into();
    }
    welcome
}

/// A resumable session's welcome: the `ServerName` one, with what resuming
/// needs (docs/PROTOCOL.md, "Opting in").
pub fn resumable_welcome_json(
    name: &str,
    e2e_room: bool,
    role: Role,
    token: &str,
    epoch: &str,
    seq: u64,
) -> String {
    let mut welcome = welcome(name, e2e_room, role);
    welcome["resume"] = serde_json::json!({ "token": token, "epoch": epoch, "seq": seq });
    welcome.to_string()
}

/// The answer to a `Resume`: `missed` messages follow (`Some`), or a reset,
/// and `why` (docs/PROTOCOL.md, "Resuming").
#[allow(clippy::too_many_arguments)]
pub fn resumed_json(
    name: &str,
    e2e_room: bool,
    role: Role,
    token: Option<&str>,
    epoch: &str,
    seq: u64,
    missed: Option<usize>,
    why: Option<&str>,
) -> String {
    let mut resumed = welcome(name, e2e_room, role);
    resumed["msgType"] = "Resumed".into();
    resumed["resume"] = match token {
        Some(token) => serde_json::json!({ "token": token, "epoch": epoch, "seq": seq }),
        None => serde_json::json!({ "epoch": epoch, "seq": seq }),
    };
    match missed {
        Some(missed) => resumed["missed"] = missed.into(),
        None => {
            resumed["reset"] = true.into();
            resumed["why"] = why.unwrap_or("").into();
        }
    }
    resumed.to_string()
}

/// In an `e2e_room`: refuses a `Broadcast` text that is not a sealed room
/// message, `e2er1:<epoch>:<index>:<base64>`, or a `PrivateMessage` text
/// that is not `e2e2:<n>:<base64>` / `e2e2k:<n>:<base64>` (docs/PROTOCOL.md,
/// "What the server does"). The form only: the server holds no key. One
/// pass over the bytes, nothing allocated.
pub fn check_sealed(request: &Request) -> Result<(), Rejection> {
    let (ok, what) = match request {
        Request::Broadcast { text } => (sealed_room_message(text.as_bytes()), "a Broadcast"),
        Request::PrivateMessage { text, .. } => {
            (sealed_private_message(text.as_bytes()), "a PrivateMessage")
        }
        Request::OnlineUsers | Request::PublicKey { .. } | Request::Moderate(_) => return Ok(()),
    };
    match ok {
        true => Ok(()),
        false => Err(Rejection::new(
            ErrorCode::EncryptionRequired,
            format!(
                "this room is end-to-end encrypted: {what} must be sealed by your client \
                 (docs/PROTOCOL.md, \"The end-to-end encrypted room\"); plaintext is not relayed"
            ),
        )),
    }
}

/// `e2er1:` epoch `:` index `:` base64 of at least 92 bytes.
pub fn sealed_room_message(text: &[u8]) -> bool {
    let Some(rest) = text.strip_prefix(b"e2er1:") else { return false };
    let Some(rest) = counter(rest) else { return false };
    let Some(rest) = counter(rest) else { return false };
    rest.len() >= 124 && base64_form(rest)
}

/// `e2e2:` or `e2e2k:`, counter `:`, base64 of at least the 16-byte tag.
pub fn sealed_private_message(text: &[u8]) -> bool {
    let Some(rest) = text.strip_prefix(b"e2e2:").or_else(|| text.strip_prefix(b"e2e2k:")) else {
        return false;
    };
    let Some(rest) = counter(rest) else { return false };
    rest.len() >= 24 && base64_form(rest)
}

/// 1 to 16 digits without a leading zero, then `:`: what follows.
fn counter(text: &[u8]) -> Option<&[u8]> {
    let digits = text.iter().take_while(|c| c.is_ascii_digit()).count();
    let rest = text.get(digits..)?.strip_prefix(b":")?;
    ((1..=16).contains(&digits) && text[0] != b'0').then_some(rest)
}

/// Standard base64 characters with at most two `=` of padding at the end,
/// a multiple of 4 long.
fn base64_form(text: &[u8]) -> bool {
    let body = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"=")).unwrap_or(text);
    text.len().is_multiple_of(4)
        && body.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(frame: &str) -> ErrorCode {
        parse_request(frame).unwrap_err().code
    }

    #[test]
    fn parses_known_messages_and_ignores_extra_fields() {
        assert_eq!(
            parse_request(r#"{"msgType":"Broadcast","text":"hi","SrcUser":"forged","x":1}"#),
            Ok(Request::Broadcast { text: "hi".into() })
        );
        assert_eq!(
            parse_request(r#"{"msgType":"PrivateMessage","TgtUser":"bob","text":"c1ph3r"}"#),
            Ok(Request::PrivateMessage { target: "bob".into(), text: "c1ph3r".into() })
        );
        assert_eq!(parse_request(r#" {"msgType":"OnlineUsers"}"#), Ok(Request::OnlineUsers));
        let kick = r#"{"msgType":"Moderate","cmd":"kick","target":"bob","for_secs":600}"#;
        let fields =
            serde_json::json!({"msgType":"Moderate","cmd":"kick","target":"bob","for_secs":600});
        assert_eq!(parse_request(kick), Ok(Request::Moderate(fields)));
        let key = e2e2(ZERO_POINT, ZERO_POINT);
        assert_eq!(
            parse_request(&format!(r#"{{"msgType":"PublicKey","key":"{key}","x":1}}"#)),
            Ok(Request::PublicKey { key })
        );
    }

    #[test]
    fn rejects_bad_input_with_stable_codes() {
        assert_eq!(code_of("not json"), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code_of(r#"["Broadcast","hi"]"#), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"msgType":"Broadcast","text":"hi"} x"#), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"msgType":"Broadcast","text":null}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"text":"hi"}"#), ErrorCode::MissingField);
        assert_eq!(code_of(r#"{"msgType":"Broadcast"}"#), ErrorCode::MissingField);
        assert_eq!(code_of(r#"{"msgType":"Broadcast","text":5}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"msgType":7}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"msgType":"Dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"msgType":"PrivateMessage","text":"x"}"#), ErrorCode::MissingField);
        let long = format!(r#"{{"msgType":"{}"}}"#, "é".repeat(60_000));
        let why = parse_request(&long).unwrap_err();
        assert!(why.text.len() < 200, "an error never echoes a long input: {}", why.text.len());
    }

    /// A P-256 point as the e2e2 key carries it (0x04 and zeros: the
    /// server does not check the curve) and a real one, base64.
    const ZERO_POINT: &str = concat!(
        "BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    const REAL_POINT: &str =
        "BFnZSCOQ2hYzKIQQTqmruWJGOXKm5OkRl6f5vRFd6CjbHFJbP46ALgeD6izapWXgfWNr/IZ5aNJDTRHN3ghd2Fc=";

    fn e2e2(identity: &str, session: &str) -> String {
        format!("e2e2:{identity}:{session}")
    }

    fn key_of(key: &str) -> Result<Request, Rejection> {
        parse_request(&serde_json::json!({"msgType": "PublicKey", "key": key}).to_string())
    }

    #[test]
    fn a_public_key_is_e2e2_an_identity_and_a_session_point() {
        assert_eq!(ZERO_POINT.len(), 88);
        let good = e2e2(ZERO_POINT, REAL_POINT);
        assert_eq!(good.len(), PUBLIC_KEY_CHARS);
        assert_eq!(key_of(&good), Ok(Request::PublicKey { key: good.clone() }));
        assert!(key_of(&e2e2(REAL_POINT, REAL_POINT)).is_ok());
        // The highest first characters a 0x04 byte allows: "BP".
        let top = format!("BP{}", &REAL_POINT[2..]);
        assert!(key_of(&e2e2(&top, ZERO_POINT)).is_ok());
    }

    /// Each way a key can be wrong, in each half where there are two: all
    /// `invalid_field`, and the explanation says what the format is.
    #[test]
    fn a_key_not_exactly_e2e2_is_invalid() {
        let good = e2e2(ZERO_POINT, REAL_POINT);
        let mut bad: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            (REAL_POINT.to_owned(), "e2e1's key: one point alone"),
            (good[..181].to_owned(), "one character short"),
            (format!("{good}="), "one character long"),
            (format!("{good}\n"), "a trailing line break"),
            (format!("e2e1:{}", &good[5..]), "another version"),
            (format!("E2E2:{}", &good[5..]), "the prefix in capitals"),
            (format!("e2e2;{}", &good[5..]), "not the prefix's colon"),
            (format!("{};{}", &good[..93], &good[94..]), "not the separating colon"),
            (format!("e2e2::{ZERO_POINT}{REAL_POINT}"), "the separator moved"),
            (
                format!("e2e2:{}é{REAL_POINT}", &ZERO_POINT[..87]),
                "a two-byte character on the colon",
            ),
            (
                format!("e2e2:{}é:{REAL_POINT}", &ZERO_POINT[..86]),
                "182 bytes, but a two-byte character in them",
            ),
        ];
        // Each half, broken the same ways.
        for (half, first) in [(0usize, true), (1, false)] {
            let with = |point: String| {
                if first { e2e2(&point, REAL_POINT) } else { e2e2(ZERO_POINT, &point) }
            };
            let p = if half == 0 { ZERO_POINT } else { REAL_POINT };
            bad.extend([
                (with(format!("{}*=", &p[..86])), "a character not of base64"),
                (with(format!("{}-=", &p[..86])), "URL-safe base64, not standard"),
                (with(format!("{}_=", &p[..86])), "URL-safe base64, not standard"),
                (with(format!("{} =", &p[..86])), "a space"),
                (with(format!("{}A", &p[..87])), "no padding"),
                (with(format!("{}==", &p[..86])), "64 bytes"),
                (with(format!("{}=A", &p[..86])), "padding inside"),
                (with(format!("C{}", &p[1..])), "first byte 0x08, not 0x04"),
                (with(format!("A{}", &p[1..])), "first byte 0x00: the point at infinity's tag"),
                (with(format!("BQ{}", &p[2..])), "first byte 0x05"),
                (with(format!("Ag{}", &p[2..])), "first byte 0x02: compressed"),
                (with(format!("{}B=", &p[..86])), "bits after the last byte are not zero"),
            ]);
        }
        for (key, why) in bad {
            let refused = key_of(&key).unwrap_err();
            assert_eq!(refused.code, ErrorCode::InvalidField, "{why}: {key:?}");
            assert!(refused.text.contains("e2e2") || key.is_empty(), "{why}: {}", refused.text);
        }
    }

    #[test]
    fn a_key_over_1024_bytes_is_too_large_before_anything_else() {
        let huge = "k".repeat(60_000);
        let why = key_of(&huge).unwrap_err();
        assert_eq!(why.code, ErrorCode::KeyTooLarge);
        assert!(why.text.len() < 200);
        // Just under and just over the 1024-byte cap: the length decides.
        assert_eq!(key_of(&"B".repeat(1024)).unwrap_err().code, ErrorCode::InvalidField);
        assert_eq!(key_of(&"B".repeat(1025)).unwrap_err().code, ErrorCode::KeyTooLarge);
        let good_then_more = format!("{}{}", e2e2(ZERO_POINT, REAL_POINT), " ".repeat(900));
        assert_eq!(key_of(&good_then_more).unwrap_err().code, ErrorCode::KeyTooLarge);
    }

    #[test]
    fn replies_use_the_original_field_names() {
        let json = Reply::Broadcast { source: "al\"ice", text: "hi", history: false }.to_json();
        assert_eq!(json, r#"{"msgType":"Broadcast","SrcUser":"al\"ice","text":"hi"}"#);
        let json = Reply::Broadcast { source: "a", text: "old", history: true }.to_json();
        assert_eq!(json, r#"{"msgType":"Broadcast","SrcUser":"a","text":"old","history":true}"#);
        let json = Reply::OnlineUsers { users: vec!["a", "b"], more: false }.to_json();
        assert_eq!(json, r#"{"msgType":"OnlineUsers","Users":["a","b"]}"#);
        let err = Reply::Error { code: "user_offline", text: "t", target: Some("bob") }.to_json();
        assert_eq!(err, r#"{"msgType":"Error","code":"user_offline","text":"t","TgtUser":"bob"}"#);
        assert_eq!(server_name_json("Ks", false, Role::Member), r#"{"ServerName":"Ks"}"#);
        assert_eq!(
            server_name_json("Ks", true, Role::Member),
            r#"{"ServerName":"Ks","e2e_room":true}"#
        );
        assert_eq!(
            server_name_json("Ks", true, Role::Moderator),
            r#"{"ServerName":"Ks","e2e_room":true,"role":"moderator"}"#
        );
    }

    #[test]
    fn only_the_sealed_forms_pass_in_an_e2e_room() {
        let b64 = |n: usize| "A".repeat(n);
        let room = |t: String| check_sealed(&Request::Broadcast { text: t });
        let private =
            |t: String| check_sealed(&Request::PrivateMessage { target: "b".into(), text: t });
        assert_eq!(room(format!("e2er1:1:1:{}", b64(124))), Ok(()));
        assert_eq!(room(format!("e2er1:12:9007199254740991:{}==", b64(126))), Ok(()));
        for bad in [
            "hello".to_owned(),
            format!("e2er1:1:1:{}", b64(120)), // shorter than an empty message
            format!("e2er1:0:1:{}", b64(124)), // epoch 0
            format!("e2er1:01:1:{}", b64(124)), // leading zero
            format!("e2er1:1:{}", b64(124)),   // no index
            format!("e2er1:1:1:{}=", b64(124)), // not a multiple of 4
            format!("e2er1:1:1:{} ", b64(127)), // a space
            format!("e2er1:1:1:{}=A", b64(126)), // padding inside
            format!("e2er1:1:11111111111111111:{}", b64(124)), // 17 digits
            format!("e2e2:1:{}", b64(124)),    // a private form to the room
        ] {
            assert_eq!(room(bad.clone()).unwrap_err().code, ErrorCode::EncryptionRequired, "{bad}");
        }
        assert_eq!(private(format!("e2e2:1:{}", b64(24))), Ok(()));
        assert_eq!(private(format!("e2e2k:7:{}", b64(144))), Ok(()));
        for bad in
            ["secret".to_owned(), format!("e2e2:1:{}", b64(20)), format!("e2e3:1:{}", b64(24))]
        {
            assert_eq!(
                private(bad.clone()).unwrap_err().code,
                ErrorCode::EncryptionRequired,
                "{bad}"
            );
        }
        assert_eq!(check_sealed(&Request::OnlineUsers), Ok(()));
    }
}
