//! The encrypted room of PROTOCOL.md, from its section alone: sender keys sent in key
//! messages over e2e2, the HMAC ratchet, AES-GCM, ECDSA signatures, a new epoch when the
//! readers change. It extends `e2e::Client`; `Client::take` reads any server message.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::{Signer, Verifier};
pub use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::e2e::{self, Client, KeyEvent, MAX_COUNTER, Point, Refused};

/// What a room message's text starts with.
pub const ROOM_PREFIX: &str = "e2er1:";
/// The associated data's first line.
const ROOM_LABEL: &str = "ragnarok-room-v1";
const IV_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const SIG_BYTES: usize = 64;
/// `iv ‖ ct ‖ sig` of an empty message.
pub const MIN_SEALED: usize = IV_BYTES + TAG_BYTES + SIG_BYTES;
/// A key message's plaintext: `0x01` ‖ epoch ‖ `CK1` ‖ `SPK`.
pub const KEY_PLAINTEXT: usize = 1 + 8 + 32 + 65;
/// The most chain steps a receiver takes for one message.
pub const MAX_STEPS: u64 = 1000;
/// The skipped message keys a receiver keeps per epoch.
pub const MAX_SKIPPED: usize = 64;
/// The epochs a receiver keeps per sender.
pub const KEPT_EPOCHS: usize = 4;
/// Own messages remembered for showing them when the server relays them.
const KEPT_SENT: usize = 1024;
/// Room messages held while their key message may still be on its way.
const MAX_HELD: usize = 64;

/// `MKi` and `CKi+1` from `CKi`: HMAC-SHA-256 of the byte 1, and of the byte 2.
pub fn ratchet(chain: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let step = |byte: u8| -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(chain).expect("HMAC takes any key length");
        mac.update(&[byte]);
        mac.finalize().into_bytes().into()
    };
    (step(1), step(2))
}

/// `0x01` ‖ epoch (8 bytes big-endian) ‖ `CK1` ‖ `SPK`: a key message's plaintext.
pub fn key_plaintext(epoch: u64, chain: &[u8; 32], spk: &Point) -> Vec<u8> {
    [&[1u8][..], &epoch.to_be_bytes(), chain, spk].concat()
}

/// A sender key as a key message gives it.
#[derive(Clone, Debug)]
pub struct SenderKey {
    pub epoch: u64,
    pub chain: [u8; 32],
    pub spk: VerifyingKey,
}

/// Exactly 106 bytes, first `0x01`, an epoch of 1 to 2^53 - 1, an `SPK`
/// that imports as an uncompressed P-256 point; `None` otherwise.
pub fn parse_key_plaintext(bytes: &[u8]) -> Option<SenderKey> {
    if bytes.len() != KEY_PLAINTEXT || bytes[0] != 1 || bytes[41] != 4 {
        return None;
    }
    let epoch = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let chain = bytes[9..41].try_into().ok()?;
    let spk = VerifyingKey::from_sec1_bytes(&bytes[41..]).ok()?;
    (1..=MAX_COUNTER).contains(&epoch).then_some(SenderKey { epoch, chain, spk })
}

/// A new ECDSA P-256 signing key: an epoch's.
pub fn new_signing_key() -> SigningKey {
    SigningKey::random(&mut OsRng)
}

/// The public half of a signing key: its 65-byte uncompressed point.
pub fn spk_of(signing: &SigningKey) -> Point {
    let point = signing.verifying_key().to_encoded_point(false);
    point.as_bytes().try_into().expect("an uncompressed point is 65 bytes")
}

/// What a room message is bound to: the room's title, its sender (names as
/// the server has them), its epoch and index.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub room: &'a str,
    pub sender: &'a str,
    pub epoch: u64,
    pub index: u64,
}

impl Place<'_> {
    /// `"ragnarok-room-v1\n" + T + "\n" + S + "\n" + e + "\n" + i`.
    pub fn aad(&self) -> String {
        let Place { room, sender, epoch, index } = self;
        format!("{ROOM_LABEL}\n{room}\n{sender}\n{epoch}\n{index}")
    }
}

/// `Broadcast.text` for `text` sealed with message key `mk` and `iv`,
/// signed with `signing`. (Public so tests can make texts a correct client
/// never would: a reused key, a wrong signer.)
pub fn seal_room_with(
    place: &Place,
    mk: &[u8; 32],
    iv: &[u8; IV_BYTES],
    signing: &SigningKey,
    text: impl AsRef<[u8]>,
) -> String {
    let aad = place.aad();
    let ct = Aes256Gcm::new(mk.into())
        .encrypt(iv.into(), Payload { msg: text.as_ref(), aad: aad.as_bytes() })
        .expect("AES-GCM seals any message under 64 GiB");
    let signed = [aad.as_bytes(), iv, &ct].concat();
    let sig: Signature = signing.sign(&signed);
    let body = [&iv[..], &ct, &sig.to_bytes()].concat();
    format!("{ROOM_PREFIX}{}:{}:{}", place.epoch, place.index, e2e::b64_encode(body))
}

/// A room message's text, parsed strictly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomText {
    pub epoch: u64,
    pub index: u64,
    pub iv: [u8; IV_BYTES],
    /// Ciphertext then the 16-byte tag.
    pub ct: Vec<u8>,
    /// `r ‖ s`.
    pub sig: [u8; SIG_BYTES],
}

/// `e2er1:` + epoch + `:` + index + `:` + canonical base64 of at least 92
/// bytes; epoch and index each 1 to 16 digits, no leading zero, at most
/// 2^53 - 1.
pub fn parse_room_text(text: &str) -> Option<RoomText> {
    let mut parts = text.strip_prefix(ROOM_PREFIX)?.splitn(3, ':');
    let epoch = e2e::parse_counter(parts.next()?)?;
    let index = e2e::parse_counter(parts.next()?)?;
    let body = e2e::b64_decode(parts.next()?).filter(|b| b.len() >= MIN_SEALED)?;
    let (iv, rest) = body.split_at(IV_BYTES);
    let (ct, sig) = rest.split_at(rest.len() - SIG_BYTES);
    Some(RoomText {
        epoch,
        index,
        iv: iv.try_into().ok()?,
        ct: ct.to_vec(),
        sig: sig.try_into().ok()?,
    })
}

/// Why a room message was not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRefused {
    /// Not in the sealed form, or the ciphertext does not decrypt (to UTF-8).
    Undecryptable,
    /// No sender key of the sender's current session for that epoch (sent
    /// before this client joined, or by a session it has no key of).
    NoKey,
    /// The signature is not the epoch's signing key's.
    Forged,
    /// That index was read before, or is older than the keys kept.
    Replayed,
    /// More than 1000 steps beyond the next index expected.
    TooFarAhead,
}

impl RoomRefused {
    /// What a client shows instead of the text.
    pub fn shown(self) -> &'static str {
        match self {
            RoomRefused::Undecryptable => "could not be decrypted",
            RoomRefused::NoKey => "no key",
            RoomRefused::Forged => "forged: the signature does not match",
            RoomRefused::Replayed => "replayed",
            RoomRefused::TooFarAhead => "too far ahead",
        }
    }
}

/// Why a key message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefused {
    /// Not read as a private message (malformed, not authentic, replayed,
    /// or no usable, confirmed key of the sender's).
    Private(Refused),
    /// Read, but not a sender key: not 106 bytes, not `0x01`, epoch 0 or
    /// too large, `SPK` not a point.
    Invalid,
    /// A second key for an epoch this sender's session gave before.
    Duplicate,
}

impl KeyRefused {
    pub fn shown(self) -> &'static str {
        match self {
            KeyRefused::Private(why) => why.shown(),
            KeyRefused::Invalid => "not a sender key",
            KeyRefused::Duplicate => "a second key for one epoch",
        }
    }
}

/// Why a room message was not sent. Never sent in the clear instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomNotSent {
    /// Not in an encrypted room yet ([`Client::set_room`]), or this client
    /// has not seen the relay of its own key.
    NotReady,
    /// These online users' identity keys changed and were not confirmed.
    Unconfirmed(Vec<String>),
}

/// A room message read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOpened {
    pub text: String,
    pub epoch: u64,
    pub index: u64,
    /// This client's own message, shown from what it kept when sending.
    pub mine: bool,
}

/// What to send for one room message: the key messages first (a new
/// epoch), then the broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSealed {
    /// (recipient, `PrivateMessage.text`), one per reader, empty unless this
    /// message starts an epoch.
    pub key_messages: Vec<(String, String)>,
    /// `Broadcast.text`.
    pub text: String,
    pub epoch: u64,
    pub index: u64,
}

impl RoomSealed {
    /// The protocol messages to send, in order.
    pub fn messages(&self) -> Vec<Value> {
        let keys = self
            .key_messages
            .iter()
            .map(|(to, text)| json!({"msgType": "PrivateMessage", "TgtUser": to, "text": text}));
        keys.chain([json!({"msgType": "Broadcast", "text": self.text})]).collect()
    }
}

/// One epoch of a sender's, as a receiver keeps it: the chain at the next
/// index expected and the keys of indexes skipped.
#[derive(Clone)]
struct Chain {
    spk: VerifyingKey,
    next: u64,
    chain: [u8; 32],
    skipped: VecDeque<(u64, [u8; 32])>,
}

impl Chain {
    /// The message key of `index`, forgotten as it is handed out.
    fn take(&mut self, index: u64) -> Result<[u8; 32], RoomRefused> {
        if index < self.next {
            let at = self.skipped.iter().position(|&(i, _)| i == index);
            let taken = at.and_then(|at| self.skipped.remove(at));
            return taken.map(|(_, mk)| mk).ok_or(RoomRefused::Replayed);
        }
        if index - self.next > MAX_STEPS {
            return Err(RoomRefused::TooFarAhead);
        }
        loop {
            let (mk, chain) = ratchet(&self.chain);
            let at = self.next;
            (self.chain, self.next) = (chain, at + 1);
            if at == index {
                return Ok(mk);
            }
            if self.skipped.len() == MAX_SKIPPED {
                self.skipped.pop_front();
            }
            self.skipped.push_back((at, mk));
        }
    }
}

/// The sender keys one session of a peer gave this client.
#[derive(Default)]
pub(crate) struct Senders {
    /// Every epoch given, kept or not: a second key for one is refused.
    had: BTreeSet<u64>,
    /// The newest [`KEPT_EPOCHS`].
    chains: BTreeMap<u64, Chain>,
}

/// This client's current epoch as a sender.
struct Epoch {
    number: u64,
    /// The chain key of the next index.
    chain: [u8; 32],
    signing: SigningKey,
    /// Who it was given to: each name with the exact key published.
    readers: BTreeMap<String, (Point, Point)>,
    /// The last index used.
    index: u64,
}

/// An own message, kept to show it when the server relays it.
struct Sent {
    epoch: u64,
    index: u64,
    text: String,
    plaintext: String,
    shown: bool,
}

/// A live room message with no key yet, and when it came.
struct Held {
    since: Instant,
    from: String,
    text: String,
}

/// A client's side of the room: the title, its epochs, what it sent.
#[derive(Default)]
pub(crate) struct Room {
    title: Option<String>,
    made: u64,
    current: Option<Epoch>,
    sent: VecDeque<Sent>,
    held: VecDeque<Held>,
}

/// What a server message meant to a client of both schemes ([`Client::take`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The welcome: the room's title and whether it is encrypted.
    Welcome { title: String, e2e_room: bool },
    /// A key of `user`'s was seen.
    Key { user: String, event: KeyEvent },
    /// `user` left: their keys are gone.
    Left(String),
    /// A private message (`e2e2:`), read or not.
    Private { from: String, text: String, read: Result<e2e::Opened, Refused> },
    /// A key message (`e2e2k:`): the epoch taken, or why not.
    RoomKey { from: String, read: Result<u64, KeyRefused> },
    /// A room message, read or not (live ones without a key are held for a
    /// while first: [`Client::expire_held`]).
    Room { from: String, text: String, history: bool, read: Result<RoomOpened, RoomRefused> },
    /// A broadcast in a plain room (no [`Client::set_room`]): plaintext.
    Broadcast { from: String, text: String, history: bool },
}

impl Client {
    /// Turns the room on: `title` is the welcome's `ServerName`, bound into
    /// every room message.
    pub fn set_room(&mut self, title: &str) {
        self.room.title = Some(title.to_owned());
    }

    /// Who the next room message is for: every online user but this client
    /// with a usable key, sorted.
    pub fn room_readers(&self) -> Vec<String> {
        self.readers().into_keys().collect()
    }

    fn readers(&self) -> BTreeMap<String, (Point, Point)> {
        let usable = |(name, peer): (&String, &e2e::Peer)| match (&peer.key, &peer.pair) {
            (Ok(key), Some(_)) => Some((name.clone(), (*key.identity(), *key.session()))),
            _ => None,
        };
        // Only those the server lists as online (once it sent a list).
        let listed = |(name, _): &(&String, &e2e::Peer)| {
            self.listed.as_ref().is_none_or(|l| l.contains(name.as_str()))
        };
        self.online.iter().filter(listed).filter_map(usable).collect()
    }

    /// Seals `text` for the room: a new epoch and its key messages first if
    /// the readers are not those of the current one. Refused while an online
    /// user's identity key changed and was not confirmed.
    pub fn seal_room(&mut self, text: &str) -> Result<RoomSealed, RoomNotSent> {
        let me = self.me.clone().ok_or(RoomNotSent::NotReady)?;
        let title = self.room.title.clone().ok_or(RoomNotSent::NotReady)?;
        let mut unconfirmed: Vec<String> =
            self.online.iter().filter(|(_, p)| p.unconfirmed).map(|(n, _)| n.clone()).collect();
        if !unconfirmed.is_empty() {
            unconfirmed.sort();
            return Err(RoomNotSent::Unconfirmed(unconfirmed));
        }
        let readers = self.readers();
        let mut key_messages = Vec::new();
        let stale = |e: &Epoch| e.readers != readers || e.index == MAX_COUNTER;
        if self.room.current.as_ref().is_none_or(stale) {
            assert!(self.room.made < MAX_COUNTER, "the epochs of a session ran out");
            self.room.made += 1;
            let mut chain = [0u8; 32];
            OsRng.fill_bytes(&mut chain);
            let signing = new_signing_key();
            let plain = key_plaintext(self.room.made, &chain, &spk_of(&signing));
            for name in readers.keys() {
                let pair = self.online.get_mut(name).and_then(|p| p.pair.as_mut());
                let pair = pair.expect("a reader has a pairwise key");
                key_messages.push((name.clone(), pair.seal_key(&me, name, &plain)));
            }
            let number = self.room.made;
            self.room.current = Some(Epoch { number, chain, signing, readers, index: 0 });
        }
        let epoch = self.room.current.as_mut().expect("an epoch was made above");
        epoch.index += 1;
        let (mk, next) = ratchet(&epoch.chain);
        epoch.chain = next;
        let mut iv = [0u8; IV_BYTES];
        OsRng.fill_bytes(&mut iv);
        let (number, index) = (epoch.number, epoch.index);
        let place = Place { room: &title, sender: &me, epoch: number, index };
        let sealed = seal_room_with(&place, &mk, &iv, &epoch.signing, text);
        if self.room.sent.len() == KEPT_SENT {
            self.room.sent.pop_front();
        }
        self.room.sent.push_back(Sent {
            epoch: number,
            index,
            text: sealed.clone(),
            plaintext: text.to_owned(),
            shown: false,
        });
        Ok(RoomSealed { key_messages, text: sealed, epoch: number, index })
    }

    /// Reads a key message (`PrivateMessage` text `e2e2k:`) from `from`:
    /// the epoch of the sender key taken. It counts in the pair's replay
    /// window as a text message does.
    pub fn open_key_message(&mut self, from: &str, text: &str) -> Result<u64, KeyRefused> {
        let me = self.me.clone().ok_or(KeyRefused::Private(Refused::NoKey))?;
        let peer = self.online.get_mut(from).ok_or(KeyRefused::Private(Refused::NoKey))?;
        if peer.unconfirmed {
            return Err(KeyRefused::Private(Refused::NoKey));
        }
        let pair = peer.pair.as_mut().ok_or(KeyRefused::Private(Refused::NoKey))?;
        let (plain, _) = pair.open_key(from, &me, text).map_err(KeyRefused::Private)?;
        let key = parse_key_plaintext(&plain).ok_or(KeyRefused::Invalid)?;
        let senders = &mut peer.senders;
        if !senders.had.insert(key.epoch) {
            return Err(KeyRefused::Duplicate);
        }
        let chain = Chain { spk: key.spk, next: 1, chain: key.chain, skipped: VecDeque::new() };
        senders.chains.insert(key.epoch, chain);
        while senders.chains.len() > KEPT_EPOCHS {
            senders.chains.pop_first();
        }
        Ok(key.epoch)
    }

    /// Reads a `Broadcast` text from `from` (its `SrcUser`): parse, a key,
    /// the signature, the index, then decrypt. This client's own messages
    /// are shown from what it kept, never decrypted.
    pub fn open_room(&mut self, from: &str, text: &str) -> Result<RoomOpened, RoomRefused> {
        let sealed = parse_room_text(text).ok_or(RoomRefused::Undecryptable)?;
        let (Some(me), Some(title)) = (self.me.as_deref(), self.room.title.as_deref()) else {
            return Err(RoomRefused::NoKey);
        };
        let (epoch, index) = (sealed.epoch, sealed.index);
        if from == me {
            return self.room.own(epoch, index, text);
        }
        let peer = self.online.get_mut(from).filter(|p| !p.unconfirmed);
        let chain = peer.and_then(|p| p.senders.chains.get_mut(&epoch));
        let chain = chain.ok_or(RoomRefused::NoKey)?;
        let aad = Place { room: title, sender: from, epoch, index }.aad();
        let signature = Signature::from_slice(&sealed.sig).map_err(|_| RoomRefused::Forged)?;
        let signed = [aad.as_bytes(), &sealed.iv, &sealed.ct].concat();
        chain.spk.verify(&signed, &signature).map_err(|_| RoomRefused::Forged)?;
        // Only a message that is read moves the chain: work on a copy.
        let mut moved = chain.clone();
        let mk = moved.take(index)?;
        let plain = Aes256Gcm::new(&mk.into())
            .decrypt(&sealed.iv.into(), Payload { msg: &sealed.ct, aad: aad.as_bytes() })
            .map_err(|_| RoomRefused::Undecryptable)?;
        let text = String::from_utf8(plain).map_err(|_| RoomRefused::Undecryptable)?;
        *chain = moved;
        Ok(RoomOpened { text, epoch, index, mine: false })
    }

    /// Reads one server message, keeping this client's picture (keys, who
    /// left, the welcome) up to date, and says what it meant. A live room
    /// message with no key yet is held (at most 64) until a key message of
    /// its sender's comes or [`Client::expire_held`] gives it up.
    pub fn take(&mut self, m: &Value) -> Vec<Event> {
        let str_of = |field: &str| m[field].as_str().unwrap_or_default().to_owned();
        if let Some(title) = m["ServerName"].as_str() {
            let e2e_room = m["e2e_room"] == true;
            if e2e_room {
                self.set_room(title);
            }
            return vec![Event::Welcome { title: title.to_owned(), e2e_room }];
        }
        match m["msgType"].as_str().unwrap_or_default() {
            "PublicKey" => {
                let (user, key) = (str_of("SrcUser"), str_of("key"));
                let event = self.on_key(&user, &key);
                vec![Event::Key { user, event }]
            }
            "PublicKeys" => match m["Keys"].as_object() {
                Some(keys) => self
                    .on_keys(keys)
                    .into_iter()
                    .map(|(user, event)| Event::Key { user, event })
                    .collect(),
                None => Vec::new(),
            },
            "UsersLeft" => {
                let listed = self.listed.get_or_insert_with(Default::default);
                names(m).for_each(|u| _ = listed.remove(u));
                self.left(names(m).map(str::to_owned).collect())
            }
            "UsersJoined" => {
                let listed = self.listed.get_or_insert_with(Default::default);
                listed.extend(names(m).map(str::to_owned));
                Vec::new()
            }
            // A whole list (not the first part of one): whoever is not in it left.
            "OnlineUsers" if m.get("more").is_none() => {
                let online: BTreeSet<&str> = names(m).collect();
                self.listed = Some(online.iter().map(|u| u.to_string()).collect());
                let gone = self.online.keys().filter(|u| !online.contains(u.as_str()));
                self.left(gone.cloned().collect())
            }
            "OnlineUsers" => {
                let listed = self.listed.get_or_insert_with(Default::default);
                listed.extend(names(m).map(str::to_owned));
                Vec::new()
            }
            "PrivateMessage" => {
                let (from, text) = (str_of("SrcUser"), str_of("text"));
                if !text.starts_with(e2e::KEY_PREFIX) {
                    let read = self.open(&from, &text);
                    return vec![Event::Private { from, text, read }];
                }
                let read = self.open_key_message(&from, &text);
                let mut events = vec![Event::RoomKey { from: from.clone(), read }];
                if read.is_ok() {
                    events.extend(self.retry_held(&from));
                }
                events
            }
            "Broadcast" => {
                let (from, text) = (str_of("SrcUser"), str_of("text"));
                let history = m["history"] == true;
                if self.room.title.is_none() {
                    return vec![Event::Broadcast { from, text, history }];
                }
                let read = self.open_room(&from, &text);
                if read == Err(RoomRefused::NoKey) && !history && self.has_key(&from) {
                    return self.hold(from, text);
                }
                vec![Event::Room { from, text, history, read }]
            }
            _ => Vec::new(),
        }
    }

    /// Gives up the room messages held for longer than `wait`: each is
    /// "no key" now.
    pub fn expire_held(&mut self, wait: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        while self.room.held.front().is_some_and(|h| h.since.elapsed() >= wait) {
            events.extend(self.room.held.pop_front().map(Held::no_key));
        }
        events
    }

    fn hold(&mut self, from: String, text: String) -> Vec<Event> {
        self.room.held.push_back(Held { since: Instant::now(), from, text });
        match self.room.held.len() > MAX_HELD {
            true => self.room.held.pop_front().map(Held::no_key).into_iter().collect(),
            false => Vec::new(),
        }
    }

    /// The held messages of `from`'s that a new key opens (or refuses for
    /// another reason); those still without a key stay held.
    fn retry_held(&mut self, from: &str) -> Vec<Event> {
        let mut events = Vec::new();
        for held in std::mem::take(&mut self.room.held) {
            let read = match held.from == from {
                true => self.open_room(&held.from, &held.text),
                false => Err(RoomRefused::NoKey),
            };
            match read {
                Err(RoomRefused::NoKey) => self.room.held.push_back(held),
                read => events.push(Event::Room {
                    from: held.from,
                    text: held.text,
                    history: false,
                    read,
                }),
            }
        }
        events
    }

    fn left(&mut self, users: Vec<String>) -> Vec<Event> {
        users
            .into_iter()
            .map(|user| {
                self.on_left(&user);
                Event::Left(user)
            })
            .collect()
    }
}

impl Room {
    /// This client's own message, relayed: shown once from what was kept,
    /// matched by epoch and index (and the very text).
    fn own(&mut self, epoch: u64, index: u64, text: &str) -> Result<RoomOpened, RoomRefused> {
        let sent = self.sent.iter_mut().find(|s| (s.epoch, s.index) == (epoch, index));
        let sent = sent.ok_or(RoomRefused::NoKey)?;
        if sent.text != text {
            return Err(RoomRefused::Forged);
        }
        if std::mem::replace(&mut sent.shown, true) {
            return Err(RoomRefused::Replayed);
        }
        Ok(RoomOpened { text: sent.plaintext.clone(), epoch, index, mine: true })
    }
}

impl Held {
    fn no_key(self) -> Event {
        let read = Err(RoomRefused::NoKey);
        Event::Room { from: self.from, text: self.text, history: false, read }
    }
}

fn names(m: &Value) -> impl Iterator<Item = &str> {
    m["Users"].as_array().into_iter().flatten().filter_map(Value::as_str)
}
