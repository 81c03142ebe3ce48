//! The e2e2 private-message scheme of docs/PROTOCOL.md ("End-to-end encrypted
//! private messages"), written from that section alone: identity and session
//! keys, the published key string and its strict parsing, the 3DH pairwise
//! keys, sealing and opening with counters and a replay window (text
//! messages, and the room's key messages: `e2e_room.rs`), fingerprints and
//! safety numbers. Shared by the tests and `examples/e2e_peer.rs`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand_core::OsRng;
use sha2::{Digest, Sha256};

/// What a published key and a private message's text start with.
pub const PREFIX: &str = "e2e2:";
/// What a key message's text starts with (the room's sender keys: `e2e_room`).
pub const KEY_PREFIX: &str = "e2e2k:";
/// A P-256 public key: the uncompressed SEC1 point `0x04 ‖ X ‖ Y`.
pub const POINT_BYTES: usize = 65;
/// A point in (canonical, padded) base64.
pub const POINT_CHARS: usize = 88;
/// `e2e2:` + identity key + `:` + session key.
pub const KEY_CHARS: usize = PREFIX.len() + POINT_CHARS + 1 + POINT_CHARS;
/// The largest message counter (what a JavaScript number holds exactly).
pub const MAX_COUNTER: u64 = (1 << 53) - 1;
/// How far below the highest accepted counter a message may still arrive.
pub const WINDOW: u64 = 64;
/// The HKDF info's prefix and the associated data's first line.
const LABEL: &str = "ragnarok-e2e-v2";
/// The associated data's first line of a key message.
const KEY_LABEL: &str = "ragnarok-e2e-v2-key";
const SAFETY_LABEL: &[u8] = b"ragnarok-safety-v1";
/// AES-GCM's tag, at the end of every ciphertext.
const TAG_BYTES: usize = 16;

/// A raw public key: the 65-byte uncompressed point.
pub type Point = [u8; POINT_BYTES];

/// An ECDH P-256 key pair that takes part in any number of agreements (an
/// identity key is used with every peer, for as long as the client lives).
#[derive(Clone)]
pub struct KeyPair {
    secret: SecretKey,
    public: Point,
}

impl KeyPair {
    pub fn generate() -> Self {
        Self::from_secret(SecretKey::random(&mut OsRng))
    }

    /// From a 32-byte private scalar (a kept identity key, a test vector);
    /// `None` if it is not a valid scalar.
    pub fn from_secret_bytes(bytes: &[u8]) -> Option<Self> {
        SecretKey::from_slice(bytes).ok().map(Self::from_secret)
    }

    fn from_secret(secret: SecretKey) -> Self {
        let encoded = secret.public_key().to_encoded_point(false);
        let public = encoded.as_bytes().try_into().expect("an uncompressed point is 65 bytes");
        KeyPair { secret, public }
    }

    /// The private scalar, big-endian: what a client keeps of it.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes().into()
    }

    pub fn public(&self) -> &Point {
        &self.public
    }

    /// ECDH with `theirs`: the 32-byte X coordinate of the shared point.
    fn agree(&self, theirs: &PublicKey) -> [u8; 32] {
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), theirs.as_affine());
        (*shared.raw_secret_bytes()).into()
    }
}

/// A client's keys for one connection: its identity key (kept across
/// connections, shared by the tabs of one browser) and a session key made
/// for this connection.
#[derive(Clone)]
pub struct Keys {
    pub identity: KeyPair,
    pub session: KeyPair,
}

impl Keys {
    /// A new identity and a new session.
    pub fn generate() -> Self {
        Keys::with_identity(KeyPair::generate())
    }

    /// A new session of a kept identity.
    pub fn with_identity(identity: KeyPair) -> Self {
        Keys { identity, session: KeyPair::generate() }
    }

    /// `PublicKey.key`: `e2e2:` + base64(IK) + `:` + base64(EK).
    pub fn published(&self) -> String {
        let (ik, ek) =
            (STANDARD.encode(self.identity.public), STANDARD.encode(self.session.public));
        format!("{PREFIX}{ik}:{ek}")
    }

    /// The pair of directional keys shared with the holder of `peer`, or
    /// `None` if `peer` is this very key (there is no lower party).
    pub fn pairwise(&self, peer: &PeerKey) -> Option<Pair> {
        let mine = [self.identity.public, self.session.public].concat();
        let theirs = [peer.identity, peer.session].concat();
        let lower = match mine.cmp(&theirs) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => return None,
        };
        let (ik, ek) = (&self.identity, &self.session);
        let (pik, pek) = (&peer.identity_key, &peer.session_key);
        // s = ECDH(IKl, EKh) ‖ ECDH(EKl, IKh) ‖ ECDH(EKl, EKh), from either side.
        let s = if lower {
            [ik.agree(pek), ek.agree(pik), ek.agree(pek)]
        } else {
            [ek.agree(pik), ik.agree(pek), ek.agree(pek)]
        }
        .concat();
        let (l, h) = if lower { (&mine, &theirs) } else { (&theirs, &mine) };
        let info = [LABEL.as_bytes(), l, h].concat(); // IKl ‖ EKl ‖ IKh ‖ EKh
        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(Some(&[0u8; 32]), &s)
            .expand(&info, &mut okm)
            .expect("64 bytes is a valid HKDF-SHA-256 length");
        let (k_lh, k_hl): ([u8; 32], [u8; 32]) =
            (okm[..32].try_into().unwrap(), okm[32..].try_into().unwrap());
        let (send, receive) = if lower { (k_lh, k_hl) } else { (k_hl, k_lh) };
        Some(Pair { send, receive, sent: 0, window: ReplayWindow::default() })
    }
}

/// Why a published key string is not a usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not 182 bytes, not `e2e2:`, or no `:` between the two points.
    Format,
    /// A half is not canonical standard base64 with padding.
    Base64,
    /// A half does not decode to 65 bytes beginning with 0x04.
    NotUncompressed,
    /// A half is not a point on P-256.
    NotOnCurve,
}

/// A peer's published key, parsed strictly: both points on the curve.
#[derive(Clone, Debug)]
pub struct PeerKey {
    identity: Point,
    session: Point,
    identity_key: PublicKey,
    session_key: PublicKey,
}

impl PartialEq for PeerKey {
    fn eq(&self, other: &Self) -> bool {
        (self.identity, self.session) == (other.identity, other.session)
    }
}
impl Eq for PeerKey {}

impl PeerKey {
    /// Exactly `e2e2:` + 88 + `:` + 88 characters, each half canonical
    /// base64 of an uncompressed point on P-256; anything else is refused.
    pub fn parse(key: &str) -> Result<PeerKey, KeyError> {
        let bytes = key.as_bytes();
        if bytes.len() != KEY_CHARS
            || !bytes.starts_with(PREFIX.as_bytes())
            || bytes[PREFIX.len() + POINT_CHARS] != b':'
        {
            return Err(KeyError::Format);
        }
        let start = PREFIX.len();
        let (identity, identity_key) = point(&bytes[start..start + POINT_CHARS])?;
        let (session, session_key) = point(&bytes[start + POINT_CHARS + 1..])?;
        Ok(PeerKey { identity, session, identity_key, session_key })
    }

    /// The raw identity key: what records, fingerprints and safety numbers
    /// are made of.
    pub fn identity(&self) -> &Point {
        &self.identity
    }

    pub fn session(&self) -> &Point {
        &self.session
    }
}

/// One half of a key string: 88 characters of base64 of a point on P-256.
fn point(b64: &[u8]) -> Result<(Point, PublicKey), KeyError> {
    let raw = STANDARD.decode(b64).map_err(|_| KeyError::Base64)?;
    let raw: Point = raw.try_into().map_err(|_| KeyError::NotUncompressed)?;
    if raw[0] != 0x04 {
        return Err(KeyError::NotUncompressed);
    }
    let key = PublicKey::from_sec1_bytes(&raw).map_err(|_| KeyError::NotOnCurve)?;
    Ok((raw, key))
}

/// Why a private message was not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not `e2e2:` + counter + `:` + base64 of at least a tag.
    Malformed,
    /// Does not authenticate with this pair's key for that direction, these
    /// names and this counter (or its plaintext is not UTF-8).
    Unauthentic,
    /// Authentic, but its counter was accepted before or is 64 or more
    /// below the highest accepted.
    Replayed,
    /// No usable, confirmed key of the sender's (or this client does not
    /// know its own name yet).
    NoKey,
}

impl Refused {
    /// What a client shows instead of the text.
    pub fn shown(self) -> &'static str {
        match self {
            Refused::Malformed | Refused::Unauthentic | Refused::NoKey => "could not be decrypted",
            Refused::Replayed => "replayed",
        }
    }
}

/// A message read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub text: String,
    pub counter: u64,
    /// How many counters were skipped before this one: messages that never
    /// arrived (or arrive later, out of order).
    pub missed: u64,
}

/// The keys and state between this client's session and one peer's
/// session: one key per direction, the counter of what was sent, and the
/// window of what was received.
pub struct Pair {
    send: [u8; 32],
    receive: [u8; 32],
    sent: u64,
    window: ReplayWindow,
}

impl Pair {
    /// (key for sending, key for receiving): `kLH` and `kHL`, this side's way round.
    pub fn keys(&self) -> ([u8; 32], [u8; 32]) {
        (self.send, self.receive)
    }

    /// `PrivateMessage.text` for `plaintext` from `sender` to `recipient`
    /// (names as the server has them), with the next counter.
    pub fn seal(&mut self, sender: &str, recipient: &str, plaintext: &str) -> String {
        let n = self.next();
        seal_kind(Kind::Text, &self.send, n, sender, recipient, plaintext.as_bytes())
    }

    /// A key message's text (`e2e2k:`) for `plaintext`: the same counter as
    /// text messages, another label.
    pub fn seal_key(&mut self, sender: &str, recipient: &str, plaintext: &[u8]) -> String {
        let n = self.next();
        seal_kind(Kind::Key, &self.send, n, sender, recipient, plaintext)
    }

    fn next(&mut self) -> u64 {
        assert!(self.sent < MAX_COUNTER, "the counter of a pair of sessions ran out");
        self.sent += 1;
        self.sent
    }

    /// Reads `text` from `sender` to `recipient`: the plaintext, or why not.
    /// Only an authentic, fresh message moves the replay window.
    pub fn open(&mut self, sender: &str, recipient: &str, text: &str) -> Result<Opened, Refused> {
        let (plain, counter, missed) = self.open_kind(Kind::Text, sender, recipient, text)?;
        let text = String::from_utf8(plain).map_err(|_| Refused::Unauthentic)?;
        Ok(Opened { text, counter, missed })
    }

    /// Reads a key message (`e2e2k:`): its plaintext bytes and counter. The
    /// same parsing, order of checks and replay window as [`Pair::open`].
    pub fn open_key(
        &mut self,
        sender: &str,
        recipient: &str,
        text: &str,
    ) -> Result<(Vec<u8>, u64), Refused> {
        let (plain, counter, _) = self.open_kind(Kind::Key, sender, recipient, text)?;
        Ok((plain, counter))
    }

    fn open_kind(
        &mut self,
        kind: Kind,
        sender: &str,
        recipient: &str,
        text: &str,
    ) -> Result<(Vec<u8>, u64, u64), Refused> {
        let (counter, ct) = parse_with(kind.prefix(), text).ok_or(Refused::Malformed)?;
        let cipher = Aes256Gcm::new(&self.receive.into());
        let aad = aad(kind, sender, recipient, counter);
        let plain = cipher
            .decrypt(&nonce(counter), Payload { msg: &ct, aad: aad.as_bytes() })
            .map_err(|_| Refused::Unauthentic)?;
        // A text must be UTF-8: checked before the window, as authentication.
        if kind == Kind::Text && std::str::from_utf8(&plain).is_err() {
            return Err(Refused::Unauthentic);
        }
        if !self.window.fresh(counter) {
            return Err(Refused::Replayed);
        }
        Ok((plain, counter, self.window.accept(counter)))
    }
}

/// A text message (`e2e2:`) or a key message (`e2e2k:`): one prefix and
/// one label each.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Key,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Text => PREFIX,
            Kind::Key => KEY_PREFIX,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Text => LABEL,
            Kind::Key => KEY_LABEL,
        }
    }
}

/// AES-256-GCM of `plaintext` under `key` with counter `n`: the message
/// text. (Public so tests can make texts a correct client never would.)
pub fn seal_with(key: &[u8; 32], n: u64, sender: &str, recipient: &str, plaintext: &str) -> String {
    seal_kind(Kind::Text, key, n, sender, recipient, plaintext.as_bytes())
}

/// [`seal_with`] for a key message (`e2e2k:`, the key label).
pub fn seal_key_with(
    key: &[u8; 32],
    n: u64,
    sender: &str,
    recipient: &str,
    bytes: &[u8],
) -> String {
    seal_kind(Kind::Key, key, n, sender, recipient, bytes)
}

fn seal_kind(
    kind: Kind,
    key: &[u8; 32],
    n: u64,
    sender: &str,
    recipient: &str,
    msg: &[u8],
) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let aad = aad(kind, sender, recipient, n);
    let ct = cipher
        .encrypt(&nonce(n), Payload { msg, aad: aad.as_bytes() })
        .expect("AES-GCM seals any message under 64 GiB");
    format!("{}{n}:{}", kind.prefix(), STANDARD.encode(ct))
}

/// 4 zero bytes ‖ the counter as 8 bytes big-endian.
fn nonce(n: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce.into()
}

fn aad(kind: Kind, sender: &str, recipient: &str, n: u64) -> String {
    format!("{}\n{sender}\n{recipient}\n{n}", kind.label())
}

/// `e2e2:` + counter (decimal, 1 to 2^53 - 1, no leading zeros) + `:` +
/// canonical base64 of at least the 16-byte tag.
pub fn parse_text(text: &str) -> Option<(u64, Vec<u8>)> {
    parse_with(PREFIX, text)
}

fn parse_with(prefix: &str, text: &str) -> Option<(u64, Vec<u8>)> {
    let (digits, b64) = text.strip_prefix(prefix)?.split_once(':')?;
    let counter = parse_counter(digits)?;
    let ct = STANDARD.decode(b64).ok().filter(|ct| ct.len() >= TAG_BYTES)?;
    Some((counter, ct))
}

/// 1 to 16 decimal digits, no sign, no leading zero, at most 2^53 - 1: a
/// counter, and the room's epochs and indexes.
pub fn parse_counter(digits: &str) -> Option<u64> {
    let canonical = !digits.is_empty()
        && digits.len() <= 16
        && digits.bytes().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    canonical.then(|| digits.parse().ok()).flatten().filter(|&n| n <= MAX_COUNTER)
}

/// The highest counter accepted and which of the 64 below it were.
#[derive(Default, Debug, Clone)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `d`: `highest - d` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Not accepted before, and less than 64 below the highest accepted.
    pub fn fresh(&self, n: u64) -> bool {
        if n > self.highest {
            return true;
        }
        let below = self.highest - n;
        below < WINDOW && self.seen & (1 << below) == 0
    }

    /// Records `n` as accepted (it must be fresh); returns how many
    /// counters it skipped above the highest before it.
    pub fn accept(&mut self, n: u64) -> u64 {
        if n > self.highest {
            let step = n - self.highest;
            self.seen = if step >= WINDOW { 0 } else { self.seen << step };
            self.seen |= 1;
            self.highest = n;
            step - 1
        } else {
            self.seen |= 1 << (self.highest - n);
            0
        }
    }
}

/// The first 16 bytes of SHA-256(raw identity key), lower-case hex in
/// groups of four.
pub fn fingerprint(identity: &[u8]) -> String {
    let hash = Sha256::digest(identity);
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    let groups: Vec<&str> = (0..8).map(|i| &hex[4 * i..4 * i + 4]).collect();
    groups.join(" ")
}

/// The safety number of two identity keys: the same whichever way round.
/// Ten groups of five digits, separated by single spaces.
pub fn safety_number(a: &[u8], b: &[u8]) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let h = Sha256::new().chain_update(SAFETY_LABEL).chain_update(lo).chain_update(hi).finalize();
    let groups: Vec<String> = h[..30]
        .chunks(3)
        .map(|c| {
            let v = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
            format!("{:05}", v % 100_000)
        })
        .collect();
    groups.join(" ")
}

/// What a key seen for a user meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    /// This client's own key, relayed: the name is this client's, as the
    /// server has it.
    Mine,
    /// The first identity key seen for that name: recorded (trust on first use).
    First,
    /// The identity key on record (a new session, or the same key again).
    Known,
    /// An identity key other than the one on record: nothing is sent to
    /// that user until [`Client::confirm`].
    Changed,
    /// Not a usable key: nothing is sent to that user; other users' keys
    /// are not affected.
    Unusable(KeyError),
}

/// Why a message was not sent. Never sent in the clear instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// This client has not yet seen the relay of its own key.
    NotReady,
    /// The user is not online or has published no key.
    NoKey,
    /// The user's key is not usable.
    Unusable,
    /// The user's identity key changed and was not confirmed.
    Unconfirmed,
}

/// What a client keeps per name: the identity key it last accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub identity: Point,
    pub verified: bool,
}

/// A user's current key and the pair of keys shared with it.
pub(crate) struct Peer {
    pub(crate) key: Result<PeerKey, KeyError>,
    pub(crate) pair: Option<Pair>,
    /// The identity differs from the record and was not confirmed.
    pub(crate) unconfirmed: bool,
    /// The room's sender keys this session of theirs gave us: they go with
    /// the session (a new key, a leave).
    pub(crate) senders: crate::e2e_room::Senders,
}

impl Peer {
    fn unusable(e: KeyError) -> Self {
        Peer { key: Err(e), pair: None, unconfirmed: false, senders: Default::default() }
    }
}

/// One connection's client side of the scheme: its keys, its name as the
/// server has it, the current keys of the users online and the records of
/// every name seen (which outlive the users' presence: a leave and a
/// return with another key is still a change).
pub struct Client {
    pub(crate) keys: Keys,
    published: String,
    pub(crate) me: Option<String>,
    pub(crate) online: std::collections::HashMap<String, Peer>,
    records: std::collections::HashMap<String, Record>,
    /// This client's side of the encrypted room (`e2e_room`).
    pub(crate) room: crate::e2e_room::Room,
    /// The state of pairs whose key went (a leave, a new key), by key: a key
    /// that comes back goes on with its counters, window and epochs, never
    /// from 1 again (that would reuse nonces and take old messages as new).
    retired: std::collections::HashMap<(Point, Point), (Pair, crate::e2e_room::Senders)>,
    /// Who is online by the server's lists, once one came (readers are
    /// taken from it: a key alone makes nobody a reader).
    pub(crate) listed: Option<std::collections::BTreeSet<String>>,
}

impl Client {
    pub fn new(keys: Keys) -> Self {
        let published = keys.published();
        Client {
            keys,
            published,
            me: None,
            online: Default::default(),
            records: Default::default(),
            room: Default::default(),
            retired: Default::default(),
            listed: None,
        }
    }

    /// `user`'s key is gone from the picture: its pair's state is kept.
    fn retire(&mut self, user: &str) {
        if let Some(Peer { key: Ok(key), pair: Some(pair), senders, .. }) = self.online.remove(user)
        {
            self.retired.insert((key.identity, key.session), (pair, senders));
        }
    }

    /// `PublicKey.key` to publish.
    pub fn published(&self) -> &str {
        &self.published
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// This client's name as the server has it, once its key was relayed.
    pub fn name(&self) -> Option<&str> {
        self.me.as_deref()
    }

    /// Whether a key of `user`'s (usable or not) is current.
    pub fn has_key(&self, user: &str) -> bool {
        self.online.contains_key(user)
    }

    pub fn record(&self, user: &str) -> Option<&Record> {
        self.records.get(user)
    }

    /// A `PublicKey` (or one entry of `PublicKeys`): `user` published `key`.
    pub fn on_key(&mut self, user: &str, key: &str) -> KeyEvent {
        if key == self.published && self.me.as_deref().is_none_or(|me| me == user) {
            self.me = Some(user.to_owned());
            return KeyEvent::Mine;
        }
        if self.me.as_deref() == Some(user) {
            // Another key under our own name: not ours, stored nowhere.
            return KeyEvent::Unusable(KeyError::Format);
        }
        let parsed = match PeerKey::parse(key) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.online.insert(user.into(), Peer::unusable(e));
                return KeyEvent::Unusable(e);
            }
        };
        if let Some(Peer { key: Ok(current), unconfirmed, .. }) = self.online.get(user)
            && *current == parsed
        {
            // The same key again: the same session, as it was.
            return if *unconfirmed { KeyEvent::Changed } else { KeyEvent::Known };
        }
        let elsewhere = self.online.iter().any(|(u, p)| u != user && p.key.as_ref() == Ok(&parsed));
        let Some(pair) = self.keys.pairwise(&parsed).filter(|_| !elsewhere) else {
            // Our own key under another name (nobody else can hold it), or
            // one key under two names at once.
            let e = KeyError::Format;
            self.retire(user);
            self.online.insert(user.into(), Peer::unusable(e));
            return KeyEvent::Unusable(e);
        };
        let (event, unconfirmed) = match self.records.get(user) {
            None => {
                let record = Record { identity: *parsed.identity(), verified: false };
                self.records.insert(user.into(), record);
                (KeyEvent::First, false)
            }
            Some(r) if r.identity == *parsed.identity() => (KeyEvent::Known, false),
            Some(_) => (KeyEvent::Changed, true),
        };
        self.retire(user);
        let kept = self.retired.remove(&(parsed.identity, parsed.session));
        let (pair, senders) = kept.unwrap_or((pair, Default::default()));
        self.online
            .insert(user.into(), Peer { key: Ok(parsed), pair: Some(pair), unconfirmed, senders });
        event
    }

    /// Every entry of a `PublicKeys` message, each on its own: a bad one
    /// (not even a string) never stops the others.
    pub fn on_keys(
        &mut self,
        keys: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(String, KeyEvent)> {
        keys.iter()
            .map(|(user, key)| {
                let event = match key.as_str() {
                    Some(key) => self.on_key(user, key),
                    None => {
                        let e = KeyError::Format;
                        self.online.insert(user.clone(), Peer::unusable(e));
                        KeyEvent::Unusable(e)
                    }
                };
                (user.clone(), event)
            })
            .collect()
    }

    /// `user` left: their key goes (a new one will come with their return);
    /// their record stays.
    pub fn on_left(&mut self, user: &str) {
        self.retire(user);
    }

    /// The user accepts `user`'s new identity key: it replaces the record,
    /// not verified.
    pub fn confirm(&mut self, user: &str) {
        if let Some(peer) = self.online.get_mut(user)
            && let Ok(key) = &peer.key
        {
            peer.unconfirmed = false;
            self.records.insert(user.into(), Record { identity: key.identity, verified: false });
        }
    }

    /// The user compared the safety number with `user` over another
    /// channel: the record is marked verified (if it is the current key).
    pub fn verify(&mut self, user: &str) -> bool {
        let current = match self.online.get(user) {
            Some(Peer { key: Ok(key), unconfirmed: false, .. }) => key.identity,
            _ => return false,
        };
        match self.records.get_mut(user) {
            Some(record) if record.identity == current => {
                record.verified = true;
                true
            }
            _ => false,
        }
    }

    /// The fingerprint of `user`'s current identity key.
    pub fn fingerprint(&self, user: &str) -> Option<String> {
        match &self.online.get(user)?.key {
            Ok(key) => Some(fingerprint(&key.identity)),
            Err(_) => None,
        }
    }

    /// The safety number with `user`'s current identity key.
    pub fn safety_number(&self, user: &str) -> Option<String> {
        match &self.online.get(user)?.key {
            Ok(key) => Some(safety_number(&self.keys.identity.public, &key.identity)),
            Err(_) => None,
        }
    }

    /// The `PrivateMessage.text` for `plaintext` to `user`, or why nothing
    /// may be sent.
    pub fn seal(&mut self, user: &str, plaintext: &str) -> Result<String, NotSent> {
        let me = self.me.clone().ok_or(NotSent::NotReady)?;
        let peer = self.online.get_mut(user).ok_or(NotSent::NoKey)?;
        if peer.unconfirmed {
            return Err(NotSent::Unconfirmed);
        }
        let pair = peer.pair.as_mut().ok_or(NotSent::Unusable)?;
        Ok(pair.seal(&me, user, plaintext))
    }

    /// Reads a `PrivateMessage` from `user`. Nothing is read before this
    /// client knows its name, nor from a user without a usable, confirmed
    /// key.
    pub fn open(&mut self, user: &str, text: &str) -> Result<Opened, Refused> {
        let me = self.me.clone().ok_or(Refused::NoKey)?;
        let peer = self.online.get_mut(user).ok_or(Refused::NoKey)?;
        if peer.unconfirmed {
            return Err(Refused::NoKey);
        }
        peer.pair.as_mut().ok_or(Refused::NoKey)?.open(user, &me, text)
    }
}

/// Standard base64 with padding, as everywhere in the scheme.
pub fn b64_encode(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// Strict standard base64: padded, canonical, nothing else; `None` otherwise.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}
