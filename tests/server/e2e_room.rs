//! The encrypted room (`e2e_room`): the WebCrypto test vector and the scheme's refusals
//! without a server, then Rust clients chatting through a real one beside a client of the
//! seed's protocol, which (like the history) only ever holds ciphertext.

use std::time::Duration;

use ragnarok_testkit::e2e::{self, Keys, PeerKey};
use ragnarok_testkit::e2e_room::*;
use ragnarok_testkit::*;
use serde_json::{Value, json};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn hex32(s: &str) -> [u8; 32] {
    hex(s).try_into().unwrap()
}

/// PROTOCOL.md, "A room test vector" (and the keys of "A test vector").
mod vector {
    pub const ASA: &str = "\u{c5}sa";
    pub const ASA_KEY: &str = concat!(
        "e2e2:BIWKh3xmeBG/foVKD1h3QbWRzASZhLUy+OHiylOtxT9CCjED0nE9IsLMVasQ17TFVkK2IYKPLxJY4CuWQTXdwEI=",
        ":BFA99SSLp4wVUTmRPasNLQuiF5wui7BaTTZcgPUe9Ul40xd1U8wcqV+STm843OpcLY405BcrNyFEpGGds0apKNY="
    );
    pub const BOB_IK: &str = "bd97295f9cdb72e9a9d0d9a282c1f36d6ddf159b7ae2174a737bd5ef7380decb";
    pub const BOB_EK: &str = "0e9211761169888b50a12a5e1188c608b17f54ef26d14ab2f46288d87af7dc7f";
    /// kHL: Åsa → bob.
    pub const ASA_SENDS: &str = "9595fe7963a07380ec0d7ff94b382ff17c508d8edfa30706715d5e3a5ac00187";
    pub const CK1: &str = "f1e1d1c1b1a191817161514131211101f0e0d0c0b0a090807060504030201000";
    pub const MK1: &str = "e846f0846c6fbd98844a7d3a3b01b9fa9f8eae47ab26a77f1712c68157c66238";
    pub const CK2: &str = "7afb5f0bb1466929101a23dc670cda34ddb519a235518b5630d2ef47c15d85f1";
    pub const SIGNING: &str = "d73ba9cb6d719657da87bc0d7698a28b5ebb75da6690b15929d10f5497def3b5";
    pub const SPK: &str =
        "BLMMHRgl+fVdLBZQlM5CnvVCBVQ2rIhCGsWVV3mdYjE+cZNjazq41aPbmby28xxvUiQaaspEQ76TUK7nz/BQSso=";
    pub const IV1: &str = "a0a1a2a3a4a5a6a7a8a9aaab";
    pub const TEXT1: &str = "hello room ✓";
    pub const IV3: &str = "b0b1b2b3b4b5b6b7b8b9babb";
    pub const TEXT3: &str = "third, after a lost second";
    pub const ROOM1: &str = concat!(
        "e2er1:1:1:oKGio6SlpqeoqaqreVSkv2rbPi7bp9ZZ+Fn4ZMiUllytjZ9gUJSRhtd+5wI2NXmq4znOqnLxGaMhzJTX",
        "USChuJWvbdaXTfZ8yqlFWHW86kMgqfcG9EbHqN1qDQ1SVgivWUsir2sO1bFz1Q=="
    );
    pub const ROOM3: &str = concat!(
        "e2er1:1:3:sLGys7S1tre4ubq7JA+dpUB5/tGV5a/tnHzfim2jZO+FcAvvezw0qE0qg98KurnT52na8+myCxJxb2WJ",
        "e9rSQei/RvuSV18QebezzavdXBoVfQBqdJYc9+PD5XrRqZMnuCDVqdwckjOavpuKP0AOiZbwnsc4Ug=="
    );
    pub const KEY_MESSAGE: &str = concat!(
        "e2e2k:3:yIvBi66umwBpl27R62aP4BLG/dmZEZRMOOJ0QhRpHH8ny2SUVMtK1HTlhPHEmvf+55MOGOee6opAlWsS",
        "qHg649nmH/xYxCTY7VzSAGmuSHxIYlQfaQfU5dOt16KDCWRCm/LV0ID7QdVEB87PtWCqhNFau4KDudbw/YE="
    );
}

/// Bob of the vector, knowing his name and Åsa's key, in room `Ks`.
fn vector_bob() -> e2e::Client {
    use vector::*;
    let keys = Keys {
        identity: e2e::KeyPair::from_secret_bytes(&hex(BOB_IK)).unwrap(),
        session: e2e::KeyPair::from_secret_bytes(&hex(BOB_EK)).unwrap(),
    };
    let mut bob = e2e::Client::new(keys);
    let own = bob.published().to_owned();
    assert_eq!(bob.on_key("bob", &own), e2e::KeyEvent::Mine);
    assert_eq!(bob.on_key(ASA, ASA_KEY), e2e::KeyEvent::First);
    bob.set_room("Ks");
    bob
}

#[test]
fn the_room_vector_made_with_webcrypto_reads() {
    use vector::*;
    let (ck1, ck2) = (hex32(CK1), hex32(CK2));
    assert_eq!(ratchet(&ck1), (hex32(MK1), ck2));
    let signing = SigningKey::from_slice(&hex(SIGNING)).unwrap();
    let spk = spk_of(&signing);
    assert_eq!(e2e::b64_encode(spk), SPK);

    // The key message is made exactly as a private message: same bytes.
    let plain = key_plaintext(1, &ck1, &spk);
    assert_eq!(plain.len(), 106);
    assert_eq!(e2e::seal_key_with(&hex32(ASA_SENDS), 3, ASA, "bob", &plain), KEY_MESSAGE);

    // Sealing again gives the same iv and ciphertext; the signature is
    // another (ECDSA is randomized in WebCrypto), and both verify.
    let mk3 = ratchet(&ratchet(&ck2).1).0;
    for (index, mk, iv, text, theirs) in
        [(1, hex32(MK1), IV1, TEXT1, ROOM1), (3, mk3, IV3, TEXT3, ROOM3)]
    {
        let place = Place { room: "Ks", sender: ASA, epoch: 1, index };
        let ours = seal_room_with(&place, &mk, &hex(iv).try_into().unwrap(), &signing, text);
        let (ours, theirs) = (parse_room_text(&ours).unwrap(), parse_room_text(theirs).unwrap());
        assert_eq!((ours.epoch, ours.index, ours.iv, &ours.ct), (1, index, theirs.iv, &theirs.ct));
    }

    // Bob reads the key message, index 3 (stepping over 2, kept), index 1.
    let mut bob = vector_bob();
    assert_eq!(bob.open_key_message(ASA, KEY_MESSAGE), Ok(1));
    let read = bob.open_room(ASA, ROOM3).unwrap();
    assert_eq!((read.text.as_str(), read.epoch, read.index, read.mine), (TEXT3, 1, 3, false));
    assert_eq!(bob.open_room(ASA, ROOM1).unwrap().text, TEXT1);
    assert_eq!(bob.open_room(ASA, ROOM1), Err(RoomRefused::Replayed));
    assert_eq!(bob.open_room(ASA, ROOM3), Err(RoomRefused::Replayed));
    // The same key message again: the pair's replay window.
    let again = bob.open_key_message(ASA, KEY_MESSAGE);
    assert_eq!(again, Err(KeyRefused::Private(e2e::Refused::Replayed)));

    // Bound to the room and the sender: another title, or the name as
    // typed (decomposed), does not read.
    let mut bob = vector_bob();
    bob.open_key_message(ASA, KEY_MESSAGE).unwrap();
    bob.set_room("Test Room");
    assert_eq!(bob.open_room(ASA, ROOM1), Err(RoomRefused::Forged));
    assert_eq!(bob.open_room("A\u{30a}sa", ROOM1), Err(RoomRefused::NoKey));
    bob.set_room("Ks");
    assert_eq!(bob.open_room(ASA, ROOM1).unwrap().text, TEXT1);
}

/// Clients that know each other's keys as the server would relay them, in
/// room "Test Room" (no server).
fn offline(names: &[&str]) -> Vec<e2e::Client> {
    let mut clients: Vec<e2e::Client> =
        names.iter().map(|_| e2e::Client::new(Keys::generate())).collect();
    let published: Vec<String> = clients.iter().map(|c| c.published().to_owned()).collect();
    for client in &mut clients {
        for (name, key) in names.iter().zip(&published) {
            client.on_key(name, key);
        }
        client.set_room("Test Room");
    }
    clients
}

/// Hands `to` (named `name`) its key messages of `sealed`, from `from`.
fn give_keys(sealed: &RoomSealed, from: &str, name: &str, to: &mut e2e::Client) {
    for (_, text) in sealed.key_messages.iter().filter(|(r, _)| r == name) {
        to.open_key_message(from, text).unwrap();
    }
}

/// A sender of the test's own making, with a sender key it can misuse:
/// alice's keys, an epoch, its chain key and signing key, and the pairwise
/// key to bob (whose client knows alice's published key).
struct Crafted {
    pair: e2e::Pair,
    epoch: u64,
    chain: [u8; 32],
    signing: SigningKey,
}

impl Crafted {
    fn new(alice: &Keys, bob: &e2e::Client, epoch: u64) -> Self {
        let pair = alice.pairwise(&PeerKey::parse(bob.published()).unwrap()).unwrap();
        let signing = new_signing_key();
        Crafted { pair, epoch, chain: [epoch as u8; 32], signing }
    }

    fn key_message(&mut self) -> String {
        self.key_message_of(key_plaintext(self.epoch, &self.chain, &spk_of(&self.signing)))
    }

    fn key_message_of(&mut self, plaintext: Vec<u8>) -> String {
        self.pair.seal_key("alice", "bob", &plaintext)
    }

    /// Alice's message of `index`, signed with `signing`.
    fn message_signed(&self, index: u64, text: &str, signing: &SigningKey) -> String {
        let mut chain = self.chain;
        for _ in 1..index {
            chain = ratchet(&chain).1;
        }
        let place = Place { room: "Test Room", sender: "alice", epoch: self.epoch, index };
        seal_room_with(&place, &ratchet(&chain).0, &[7; 12], signing, text)
    }

    fn message(&self, index: u64, text: &str) -> String {
        self.message_signed(index, text, &self.signing)
    }
}

/// Bob, who knows alice (`alice`'s keys) and his own name.
fn bob_knowing(alice: &Keys) -> e2e::Client {
    let mut bob = e2e::Client::new(Keys::generate());
    let own = bob.published().to_owned();
    bob.on_key("bob", &own);
    bob.on_key("alice", &alice.published());
    bob.set_room("Test Room");
    bob
}

#[test]
fn the_ratchet_reads_late_messages_once_and_refuses_too_far_ahead() {
    let alice = Keys::generate();
    let mut bob = bob_knowing(&alice);
    let mut crafted = Crafted::new(&alice, &bob, 1);
    let key = crafted.key_message();
    assert_eq!(bob.open_key_message("alice", &key), Ok(1));
    let read = |bob: &mut e2e::Client, i: u64| bob.open_room("alice", &crafted.message(i, "m"));
    assert_eq!(read(&mut bob, 1).unwrap().index, 1);
    assert_eq!(read(&mut bob, 3).unwrap().index, 3);
    assert_eq!(read(&mut bob, 2).unwrap().index, 2, "a skipped index reads once, late");
    for i in 1..=3 {
        assert_eq!(read(&mut bob, i), Err(RoomRefused::Replayed));
    }
    // 70 after 3: 66 skipped, the newest 64 kept (6 to 69).
    assert_eq!(read(&mut bob, 70).unwrap().index, 70);
    assert_eq!(read(&mut bob, 5), Err(RoomRefused::Replayed));
    assert_eq!(read(&mut bob, 6).unwrap().index, 6);
    assert_eq!(read(&mut bob, 69).unwrap().index, 69);
    // The next expected is 71: 1000 steps beyond it reads, 1001 do not.
    assert_eq!(read(&mut bob, 71 + 1001), Err(RoomRefused::TooFarAhead));
    assert_eq!(read(&mut bob, 71 + 1000).unwrap().index, 1071);
    assert_eq!(read(&mut bob, 1072 + 1001), Err(RoomRefused::TooFarAhead));
    assert_eq!(read(&mut bob, 1072).unwrap().text, "m", "a refusal does not move the chain");
}

#[test]
fn forged_tampered_and_malformed_room_messages_are_refused() {
    let alice = Keys::generate();
    let mut bob = bob_knowing(&alice);
    let mut crafted = Crafted::new(&alice, &bob, 1);
    bob.open_key_message("alice", &crafted.key_message()).unwrap();

    // Carol holds alice's chain key (a member does) and writes as alice,
    // signing with her own key: forged, and the chain has not moved.
    let carol = new_signing_key();
    let forged = crafted.message_signed(1, "alice says: pay carol", &carol);
    assert_eq!(bob.open_room("alice", &forged), Err(RoomRefused::Forged));
    // A flipped byte anywhere in iv, ciphertext or signature: forged too.
    let good = crafted.message(1, "hello");
    let sealed = parse_room_text(&good).unwrap();
    let body = [&sealed.iv[..], &sealed.ct, &sealed.sig].concat();
    for at in [0, 12, body.len() - 65, body.len() - 1] {
        let mut bad = body.clone();
        bad[at] ^= 1;
        let text = format!("e2er1:1:1:{}", e2e::b64_encode(bad));
        assert_eq!(bob.open_room("alice", &text), Err(RoomRefused::Forged), "byte {at}");
    }
    // Another index or epoch in the header: the signature covers them.
    let moved = good.replacen("e2er1:1:1:", "e2er1:1:2:", 1);
    assert_eq!(bob.open_room("alice", &moved), Err(RoomRefused::Forged));
    assert_eq!(
        bob.open_room("alice", &good.replacen("e2er1:1:", "e2er1:2:", 1)),
        Err(RoomRefused::NoKey)
    );
    // WebCrypto's signatures have a high s half of the time: (r, n - s) verifies.
    let flipped = format!(
        "e2er1:1:1:{}",
        e2e::b64_encode([&body[..body.len() - 32], &neg_s(&sealed.sig)].concat())
    );
    assert_ne!(flipped, good);
    assert_eq!(bob.open_room("alice", &flipped).unwrap().text, "hello");
    assert_eq!(bob.open_room("alice", &good), Err(RoomRefused::Replayed));

    // Not the sealed form: could not be decrypted, before anything else.
    let b64 = &good["e2er1:1:1:".len()..];
    for bad in [
        "hello".to_owned(),
        format!("e2er1:01:2:{b64}"),
        format!("e2er1:1:02:{b64}"),
        format!("e2er1:1:0:{b64}"),
        format!("e2er1:9007199254740992:2:{b64}"),
        format!("e2er1:1:2:{}", &b64[1..]),
        format!("e2er1:1:2:{b64} "),
        format!("e2er1:1:2:{}", e2e::b64_encode([0u8; 91])),
        format!("e2e2:1:{b64}"),
    ] {
        assert_eq!(bob.open_room("alice", &bad), Err(RoomRefused::Undecryptable), "{bad}");
    }
    // Signed by alice but not decrypting under its index's key (a broken
    // sender): could not be decrypted, and nothing moved (only a message
    // read moves the chain): the real index 2 still reads.
    let place = Place { room: "Test Room", sender: "alice", epoch: 1, index: 2 };
    let broken = seal_room_with(&place, &[0; 32], &[1; 12], &crafted.signing, "x");
    assert_eq!(bob.open_room("alice", &broken), Err(RoomRefused::Undecryptable));
    assert_eq!(bob.open_room("alice", &crafted.message(2, "x")).unwrap().text, "x");
    assert_eq!(bob.open_room("alice", &crafted.message(2, "x")), Err(RoomRefused::Replayed));
    // Not UTF-8, signed and sealed with the right key: could not be decrypted.
    let mut chain = crafted.chain;
    for _ in 1..3 {
        chain = ratchet(&chain).1;
    }
    let place = Place { index: 3, ..place };
    let latin1 = seal_room_with(&place, &ratchet(&chain).0, &[2; 12], &crafted.signing, b"caf\xe9");
    assert_eq!(bob.open_room("alice", &latin1), Err(RoomRefused::Undecryptable));
    assert_eq!(bob.open_room("alice", &crafted.message(4, "still")).unwrap().text, "still");
}

/// `n - s` for the `r ‖ s` signature `sig`: the other valid `s`.
fn neg_s(sig: &[u8; 64]) -> [u8; 32] {
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(n[i]) - i16::from(sig[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + 256 * borrow) as u8;
    }
    out
}

#[test]
fn key_messages_are_strict_and_share_the_pairs_counter() {
    let alice = Keys::generate();
    let mut bob = bob_knowing(&alice);
    let mut crafted = Crafted::new(&alice, &bob, 1);
    let spk = spk_of(&crafted.signing);
    // A text message and a key message use one counter: 1, then 2.
    let text = crafted.pair.seal("alice", "bob", "hi");
    assert!(text.starts_with("e2e2:1:"), "{text}");
    let key = crafted.key_message();
    assert!(key.starts_with("e2e2k:2:"), "{key}");
    // Each is refused as the other: another prefix, another label.
    assert_eq!(bob.open("alice", &key), Err(e2e::Refused::Malformed));
    let as_key = text.replacen("e2e2:", "e2e2k:", 1);
    let refused = bob.open_key_message("alice", &as_key);
    assert_eq!(refused, Err(KeyRefused::Private(e2e::Refused::Unauthentic)));
    let as_text = key.replacen("e2e2k:", "e2e2:", 1);
    assert_eq!(bob.open("alice", &as_text), Err(e2e::Refused::Unauthentic));
    assert_eq!(bob.open_key_message("alice", &key), Ok(1));
    // One window: the text, 1, is still fresh; the key, 2, is not.
    assert_eq!(bob.open("alice", &text).unwrap().text, "hi");
    assert_eq!(
        bob.open_key_message("alice", &key),
        Err(KeyRefused::Private(e2e::Refused::Replayed))
    );
    // A second key for epoch 1 (fresh counter): refused, the first stays.
    let second = crafted.key_message();
    assert_eq!(bob.open_key_message("alice", &second), Err(KeyRefused::Duplicate));
    assert_eq!(bob.open_room("alice", &crafted.message(1, "one")).unwrap().text, "one");
    // Not a sender key: length, first byte, epoch 0 or over 2^53 - 1, SPK.
    let good = key_plaintext(2, &[2; 32], &spk);
    let mut bads = vec![good[..105].to_vec(), [&good[..], &[0]].concat()];
    for (at, value) in [(0, 2), (41, 2), (50, 0)] {
        let mut bad = good.clone();
        bad[at] = value;
        bads.push(bad);
    }
    bads.push(key_plaintext(0, &[2; 32], &spk));
    bads.push(key_plaintext(1 << 53, &[2; 32], &spk));
    for bad in bads {
        let text = crafted.key_message_of(bad.clone());
        assert_eq!(bob.open_key_message("alice", &text), Err(KeyRefused::Invalid), "{bad:?}");
    }
    assert_eq!(bob.open_key_message("alice", &crafted.key_message_of(good)), Ok(2));
}

#[test]
fn a_receiver_keeps_four_epochs_and_drops_them_with_the_session() {
    let alice = Keys::generate();
    let mut bob = bob_knowing(&alice);
    let mut epochs: Vec<Crafted> = (1..=5).map(|e| Crafted::new(&alice, &bob, e)).collect();
    // Every key message over one pair (epochs[0]'s), as one session sends them.
    for e in 0..5 {
        let key = key_plaintext(epochs[e].epoch, &epochs[e].chain, &spk_of(&epochs[e].signing));
        let text = epochs[0].key_message_of(key);
        assert_eq!(bob.open_key_message("alice", &text), Ok(e as u64 + 1));
    }
    assert_eq!(bob.open_room("alice", &epochs[0].message(1, "old")), Err(RoomRefused::NoKey));
    for crafted in &epochs[1..] {
        assert_eq!(bob.open_room("alice", &crafted.message(1, "kept")).unwrap().text, "kept");
    }
    // Alice's new session (a new PublicKey): her sender keys are gone.
    let mut bob2 = bob_knowing(&alice);
    let mut crafted = Crafted::new(&alice, &bob2, 1);
    bob2.open_key_message("alice", &crafted.key_message()).unwrap();
    let same = bob2.published().to_owned();
    bob2.on_key("bob", &same);
    bob2.on_key("alice", &alice.published());
    assert_eq!(bob2.open_room("alice", &crafted.message(1, "a")).unwrap().text, "a");
    bob2.on_key("alice", &Keys::with_identity(alice.identity.clone()).published());
    assert_eq!(bob2.open_room("alice", &crafted.message(2, "b")), Err(RoomRefused::NoKey));
    // And when she leaves.
    bob.on_left("alice");
    assert_eq!(bob.open_room("alice", &epochs[4].message(2, "gone")), Err(RoomRefused::NoKey));
}

#[test]
fn a_sender_makes_a_new_epoch_when_its_readers_change() {
    let names = ["alice", "bob", "carol", "dave"];
    let mut clients = offline(&names);
    let dave = clients.pop().unwrap();
    let [mut alice, mut bob, mut carol]: [e2e::Client; 3] = clients.try_into().ok().unwrap();
    // dave left before anyone spoke.
    for c in [&mut alice, &mut bob, &mut carol] {
        c.on_left("dave");
    }
    assert_eq!(alice.room_readers(), ["bob", "carol"]);
    let first = alice.seal_room("one").unwrap();
    assert_eq!((first.epoch, first.index), (1, 1));
    let to: Vec<&str> = first.key_messages.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(to, ["bob", "carol"]);
    let second = alice.seal_room("two").unwrap();
    assert_eq!((second.epoch, second.index, second.key_messages.len()), (1, 2, 0));
    for (name, c) in [("bob", &mut bob), ("carol", &mut carol)] {
        give_keys(&first, "alice", name, c);
        assert_eq!(c.open_room("alice", &first.text).unwrap().text, "one");
        assert_eq!(c.open_room("alice", &second.text).unwrap().text, "two");
    }
    // Alice's own messages are shown from what she kept, once.
    let own = alice.open_room("alice", &first.text).unwrap();
    assert_eq!((own.text.as_str(), own.mine), ("one", true));
    assert_eq!(alice.open_room("alice", &first.text), Err(RoomRefused::Replayed));
    let other_text = second.text.replacen("e2er1:1:2:", "e2er1:1:1:", 1);
    assert_eq!(alice.open_room("alice", &other_text), Err(RoomRefused::Forged));
    let later = first.text.replacen("e2er1:1:1:", "e2er1:1:9:", 1);
    assert_eq!(alice.open_room("alice", &later), Err(RoomRefused::NoKey));

    // Carol leaves: a new epoch, for bob only; carol's keys do not read it.
    alice.on_left("carol");
    let third = alice.seal_room("three").unwrap();
    assert_eq!((third.epoch, third.index), (2, 1));
    assert_eq!(third.key_messages.len(), 1);
    assert_eq!(third.key_messages[0].0, "bob");
    give_keys(&third, "alice", "bob", &mut bob);
    assert_eq!(bob.open_room("alice", &third.text).unwrap().text, "three");
    assert_eq!(carol.open_room("alice", &third.text), Err(RoomRefused::NoKey));
    // Bob's new session (a new key): a new epoch for it.
    let bob_again = e2e::Client::new(Keys::with_identity(bob.keys().identity.clone()));
    assert_eq!(alice.on_key("bob", bob_again.published()), e2e::KeyEvent::Known);
    let fourth = alice.seal_room("four").unwrap();
    assert_eq!((fourth.epoch, fourth.key_messages.len()), (3, 1));
    // A user with an unusable key is no reader; dave comes back as one.
    assert_eq!(
        alice.on_key("dave", &dave.published()[..181]),
        e2e::KeyEvent::Unusable(e2e::KeyError::Format)
    );
    let fifth = alice.seal_room("five").unwrap();
    assert_eq!((fifth.epoch, fifth.index, fifth.key_messages.len()), (3, 2, 0));
}

#[test]
fn a_changed_identity_key_blocks_the_room_until_confirmed() {
    let mut clients = offline(&["alice", "bob", "carol"]);
    let alice = &mut clients[0];
    alice.seal_room("before").unwrap();
    // Carol comes back with another identity key.
    alice.on_left("carol");
    let new_carol = e2e::Client::new(Keys::generate());
    assert_eq!(alice.on_key("carol", new_carol.published()), e2e::KeyEvent::Changed);
    assert_eq!(alice.seal_room("blocked"), Err(RoomNotSent::Unconfirmed(vec!["carol".into()])));
    alice.confirm("carol");
    let sent = alice.seal_room("after").unwrap();
    assert_eq!(sent.key_messages.len(), 2);
    // Or until the user leaves again.
    alice.on_key("carol", e2e::Client::new(Keys::generate()).published());
    assert!(matches!(alice.seal_room("x"), Err(RoomNotSent::Unconfirmed(_))));
    alice.on_left("carol");
    assert_eq!(alice.seal_room("y").unwrap().key_messages.len(), 1);
}

/// A member of an encrypted room over a real server: its socket and its
/// client of both schemes, which takes every message read.
struct Member {
    name: String,
    ws: Client,
    e2e: e2e::Client,
    /// What was read and not yet looked at.
    events: Vec<Event>,
}

impl Member {
    fn join(server: &TestServer, name: &str) -> Member {
        Member::join_as(server, name, Keys::generate())
    }

    /// Logs in, checks the welcome, publishes its keys and waits for their
    /// relay (it knows its name then).
    fn join_as(server: &TestServer, name: &str, keys: Keys) -> Member {
        let mut ws = server.connect();
        ws.send_text(&server.password);
        ws.send_text(name);
        let mut e2e = e2e::Client::new(keys);
        let welcome = e2e.take(&ws.recv_json());
        assert_eq!(welcome, [Event::Welcome { title: "Test Room".into(), e2e_room: true }]);
        ws.send_json(json!({"msgType": "PublicKey", "key": e2e.published()}));
        let mut member = Member { name: name.into(), ws, e2e, events: Vec::new() };
        member.until(|c, _| c.name() == Some(name));
        member
    }

    /// Reads messages until `done` holds.
    fn until(&mut self, mut done: impl FnMut(&e2e::Client, &[Event]) -> bool) {
        while !done(&self.e2e, &self.events) {
            let m = self.ws.recv_json();
            assert_ne!(m["msgType"], "Error", "{}: {m}", self.name);
            let events = self.e2e.take(&m);
            self.events.extend(events);
        }
    }

    /// Reads until it has the keys of all of `users` (and has seen the
    /// others leave: `gone`).
    fn knows(&mut self, users: &[&str], gone: &[&str]) {
        let me = self.name.clone();
        let has = |c: &e2e::Client, u: &&str| *u == me || c.has_key(u);
        self.until(|c, _| users.iter().all(|u| has(c, u)) && !gone.iter().any(|u| c.has_key(u)));
    }

    fn say(&mut self, text: &str) -> RoomSealed {
        let sealed = self.e2e.seal_room(text).unwrap();
        for m in sealed.messages() {
            self.ws.send_json(m);
        }
        sealed
    }

    /// The next room message from `from` (its text and what it read as).
    fn room_from(&mut self, from: &str) -> (String, Result<RoomOpened, RoomRefused>) {
        let is_it = |e: &Event| matches!(e, Event::Room { from: f, .. } if f == from);
        self.until(|_, events| events.iter().any(is_it));
        let at = self.events.iter().position(is_it).unwrap();
        match self.events.remove(at) {
            Event::Room { text, read, .. } => (text, read),
            _ => unreachable!(),
        }
    }

    /// Reads `from`'s next live room message (past the history): it must
    /// be `text`.
    fn reads(&mut self, from: &str, text: &str) -> RoomOpened {
        let live =
            |e: &Event| matches!(e, Event::Room { from: f, history: false, .. } if f == from);
        self.events.retain(|e| !matches!(e, Event::Room { history: true, .. }));
        self.until(|_, events| events.iter().any(live));
        let (_, read) = self.room_from(from);
        let read = read.unwrap_or_else(|why| panic!("{}: {from}'s {text:?}: {why:?}", self.name));
        assert_eq!(read.text, text, "{}", self.name);
        read
    }
}

/// Everything a raw client is sent until it has been quiet for 300 ms.
fn drain(raw: &mut RawClient) -> Vec<String> {
    let mut seen = Vec::new();
    while let Got::Frame { payload, .. } = raw.next(Duration::from_millis(300)) {
        seen.push(String::from_utf8(payload).unwrap());
    }
    seen
}

fn e2e_room() -> TestServer {
    TestServer::start(json!({"e2e_room": true}))
}

#[test]
fn plaintext_is_refused_and_the_welcome_says_so() {
    let server = e2e_room();
    let mut alice = server.connect();
    alice.send_text(PASSWORD);
    alice.send_text("alice");
    assert_eq!(alice.recv_json(), json!({"ServerName": "Test Room", "e2e_room": true}));
    alice.recv_type("OnlineUsers");
    let mut bob = server.login("bob");
    alice.recv_type("OnlineUsers");
    alice.send_json(broadcast("hello in the clear"));
    let refused = alice.recv_json();
    assert_eq!(refused["code"], "encryption_required", "{refused}");
    alice.send_json(json!({"msgType": "PrivateMessage", "TgtUser": "bob", "text": "psst"}));
    let refused = alice.recv_json();
    assert_eq!(refused["code"], "encryption_required", "{refused}");
    bob.expect_silence(Duration::from_millis(500));
    alice.expect_silence(Duration::from_millis(100));
    // Nothing was kept either: a joiner's welcome has no history.
    let mut carol = server.login("carol");
    carol.expect_silence(Duration::from_millis(300));

    // A plain room: no field, and a plain broadcast goes through.
    let plain = TestServer::start(json!({}));
    let mut alice = plain.connect();
    alice.send_text(PASSWORD);
    alice.send_text("alice");
    assert_eq!(alice.recv_json(), json!({"ServerName": "Test Room"}));
    alice.recv_type("OnlineUsers");
    alice.send_json(broadcast("hello in the clear"));
    assert_eq!(alice.recv_type("Broadcast")["text"], "hello in the clear");
}

#[test]
fn the_server_and_a_seed_client_see_only_ciphertext() {
    let server = e2e_room();
    let mut observer = server.raw_login("observer");
    let mut members: Vec<Member> =
        ["alice", "bob", "carol"].iter().map(|n| Member::join(&server, n)).collect();
    for m in &mut members {
        m.knows(&["alice", "bob", "carol"], &[]);
        // The client of the seed's protocol has no key: no reader.
        assert_eq!(m.e2e.room_readers().len(), 2, "{}", m.name);
    }
    let mut said = Vec::new();
    for round in 0..3 {
        for at in 0..3 {
            let text = format!("secret {round} of {} ✓ marker-{round}{at}", members[at].name);
            let sealed = members[at].say(&text);
            assert_eq!(sealed.key_messages.len(), if round == 0 { 2 } else { 0 });
            let from = members[at].name.clone();
            for m in &mut members {
                let read = m.reads(&from, &text);
                assert_eq!(read.mine, m.name == from);
                assert_eq!((read.epoch, read.index), (1, round + 1));
            }
            said.push(text);
        }
    }
    // A later joiner of the seed's protocol: the history, ciphertext too.
    let mut late = server.raw_login("late");
    let (seen, history) = (drain(&mut observer), drain(&mut late));
    let broadcasts = |all: &[String]| {
        all.iter()
            .map(|s| serde_json::from_str::<Value>(s).unwrap())
            .filter(|m| m["msgType"] == "Broadcast")
            .count()
    };
    assert_eq!(broadcasts(&seen), 9);
    assert_eq!(broadcasts(&history), 9);
    for raw in seen.iter().chain(&history) {
        let m: Value = serde_json::from_str(raw).unwrap();
        assert_ne!(m["msgType"], "PrivateMessage", "no key message for a non-member: {raw}");
        if m["msgType"] == "Broadcast" {
            assert!(m["text"].as_str().unwrap().starts_with("e2er1:1:"), "{raw}");
        }
        for text in &said {
            assert!(!raw.contains(text.as_str()) && !raw.contains("marker-"), "{raw}");
        }
    }
    // A later member reads none of it ("sent before you joined"), and
    // what is said after it joined, once the others know its key.
    let mut dave = Member::join(&server, "dave");
    let history: Vec<_> = (0..3).map(|_| dave.room_from("alice").1).collect();
    assert!(history.iter().all(|r| *r == Err(RoomRefused::NoKey)), "{history:?}");
    members[0].knows(&["dave"], &[]);
    let sealed = members[0].say("welcome dave");
    assert_eq!((sealed.epoch, sealed.key_messages.len()), (2, 3));
    dave.reads("alice", "welcome dave");
}

/// Members named `names`, each knowing the others' keys.
fn room_of(server: &TestServer, names: &[&str]) -> Vec<Member> {
    let mut members: Vec<Member> = names.iter().map(|n| Member::join(server, n)).collect();
    for m in &mut members {
        m.knows(names, &[]);
    }
    members
}

#[test]
fn tampered_replayed_and_passed_off_broadcasts_are_refused() {
    let server = e2e_room();
    let [mut alice, mut bob, mut carol]: [Member; 3] =
        room_of(&server, &["alice", "bob", "carol"]).try_into().ok().unwrap();
    let first = alice.say("the plan, marker-1");
    bob.reads("alice", "the plan, marker-1");
    bob.say("bob's own");
    carol.reads("alice", "the plan, marker-1");
    carol.reads("bob", "bob's own");

    // A flipped ciphertext byte, sent from alice's connection.
    let mut body = e2e::b64_decode(&first.text["e2er1:1:1:".len()..]).unwrap();
    body[20] ^= 0x40;
    let tampered = format!("e2er1:1:1:{}", e2e::b64_encode(body));
    // The very text again, from alice's connection: the server relays it.
    for text in [&tampered, &first.text] {
        alice.ws.send_json(broadcast(text));
    }
    // Alice's text passed off as bob's, from bob's connection.
    bob.ws.send_json(broadcast(&first.text));
    for reader in [&mut bob, &mut carol] {
        assert_eq!(reader.room_from("alice").1, Err(RoomRefused::Forged));
        assert_eq!(reader.room_from("alice").1, Err(RoomRefused::Replayed));
    }
    assert_eq!(carol.room_from("bob").1, Err(RoomRefused::Forged));
    assert_eq!(alice.room_from("alice").1.unwrap().text, "the plan, marker-1");
    assert_eq!(alice.room_from("alice").1, Err(RoomRefused::Forged));
    assert_eq!(alice.room_from("alice").1, Err(RoomRefused::Replayed));
    // None of it moved a chain: alice's next message reads.
    alice.say("still fine");
    bob.reads("alice", "still fine");
    carol.reads("alice", "still fine");
}

#[test]
fn a_member_who_left_cannot_read_the_next_epoch() {
    let server = e2e_room();
    let [mut alice, mut bob, mut carol]: [Member; 3] =
        room_of(&server, &["alice", "bob", "carol"]).try_into().ok().unwrap();
    alice.say("before carol left");
    carol.reads("alice", "before carol left");
    bob.reads("alice", "before carol left");
    // Carol leaves; her client (its keys) is kept.
    let Member { ws, e2e: mut carol_keys, .. } = carol;
    drop(ws);
    alice.knows(&["bob"], &["carol"]);
    let sealed = alice.say("after carol left");
    assert_eq!(sealed.epoch, 2);
    let to: Vec<&str> = sealed.key_messages.iter().map(|(to, _)| to.as_str()).collect();
    assert_eq!(to, ["bob"], "no key message for carol");
    let (text, read) = bob.room_from("alice");
    assert_eq!(read.unwrap().text, "after carol left");
    assert_eq!(text, sealed.text);
    assert_eq!(carol_keys.open_room("alice", &text), Err(RoomRefused::NoKey));
    // Carol back (a new session): nothing of before, the next epoch yes.
    let mut carol = Member::join_as(&server, "carol", carol_keys.keys().clone());
    alice.knows(&["bob", "carol"], &[]);
    assert_eq!(carol.e2e.open_room("alice", &text), Err(RoomRefused::NoKey));
    let sealed = alice.say("welcome back");
    assert_eq!((sealed.epoch, sealed.key_messages.len()), (3, 2));
    carol.reads("alice", "welcome back");
}

#[test]
fn a_changed_identity_key_of_an_online_user_blocks_sending_until_confirmed() {
    let server = e2e_room();
    let [mut alice, mut bob, carol]: [Member; 3] =
        room_of(&server, &["alice", "bob", "carol"]).try_into().ok().unwrap();
    alice.say("one");
    bob.reads("alice", "one");
    drop(carol);
    // "carol" again, with another identity key (another browser, or the server's).
    let mut carol = Member::join(&server, "carol");
    let changed = |events: &[Event]| {
        events.iter().any(
            |e| matches!(e, Event::Key { user, event: e2e::KeyEvent::Changed } if user == "carol"),
        )
    };
    for m in [&mut alice, &mut bob] {
        m.until(|_, events| changed(events));
        let refused = m.e2e.seal_room("blocked");
        assert_eq!(refused, Err(RoomNotSent::Unconfirmed(vec!["carol".into()])));
    }
    alice.e2e.confirm("carol");
    let sealed = alice.say("carol confirmed");
    assert_eq!(sealed.key_messages.len(), 2);
    carol.reads("alice", "carol confirmed");
    bob.reads("alice", "carol confirmed");
    // Bob did not confirm: carol's leaving unblocks him.
    assert!(bob.e2e.seal_room("still blocked").is_err());
    drop(carol);
    bob.knows(&["alice"], &["carol"]);
    bob.say("carol is gone");
    alice.reads("bob", "carol is gone");
}

/// After an attacker's review: a key that leaves and comes back goes on
/// with its counter (a nonce is never used twice); a key that turns up
/// without the server listing its user makes no reader; another key under
/// one's own name is refused.
#[test]
fn a_key_that_comes_back_goes_on_and_only_listed_users_read() {
    let mut alice = e2e::Client::new(e2e::Keys::generate());
    let (bob, ghost) = (e2e::Keys::generate().published(), e2e::Keys::generate().published());
    let mine = alice.published().to_owned();
    assert_eq!(alice.on_key("alice", &mine), e2e::KeyEvent::Mine);
    alice.on_key("bob", &bob);
    assert!(alice.seal("bob", "one").unwrap().starts_with("e2e2:1:"));
    alice.on_left("bob");
    alice.on_key("bob", &bob);
    assert!(alice.seal("bob", "two").unwrap().starts_with("e2e2:2:"), "the counter goes on");
    let other = e2e::Keys::generate().published();
    assert!(matches!(alice.on_key("alice", &other), e2e::KeyEvent::Unusable(_)));
    assert!(matches!(alice.on_key("bob2", &bob), e2e::KeyEvent::Unusable(_)), "one key, two names");

    alice.take(&json!({"ServerName": "Ks", "e2e_room": true}));
    alice.take(&json!({"msgType": "OnlineUsers", "Users": ["alice", "bob"]}));
    alice.take(&json!({"msgType": "PublicKey", "SrcUser": "ghost", "key": ghost}));
    assert_eq!(alice.room_readers(), ["bob"], "a key alone makes nobody a reader");
    alice.take(&json!({"msgType": "UsersJoined", "Users": ["ghost"]}));
    assert_eq!(alice.room_readers(), ["bob", "ghost"]);
}
