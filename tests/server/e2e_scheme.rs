//! The client side of the e2e2 scheme (`ragnarok_testkit::e2e`), without a
//! server: a known-answer vector made by an independent implementation
//! (WebCrypto), both directions, reflection, tampering, replays and the
//! window, strict key parsing, safety numbers, tabs sharing an identity,
//! and the records: trust on first use, a changed key blocks sending.

use ragnarok_testkit::e2e::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn keys_from(identity: &str, session: &str) -> Keys {
    Keys {
        identity: KeyPair::from_secret_bytes(&hex(identity)).unwrap(),
        session: KeyPair::from_secret_bytes(&hex(session)).unwrap(),
    }
}

fn parse(keys: &Keys) -> PeerKey {
    PeerKey::parse(&keys.published()).unwrap()
}

/// Alice's and Bob's pairs with each other: (alice's, bob's).
fn two() -> (Pair, Pair) {
    let (alice, bob) = (Keys::generate(), Keys::generate());
    (alice.pairwise(&parse(&bob)).unwrap(), bob.pairwise(&parse(&alice)).unwrap())
}

/// Made with node's WebCrypto from the spec alone (not from this code):
/// the private keys are SHA-256 of "ragnarok e2e2 test vector: alice
/// identity" and so on. "Åsa" is composed (U+00C5), as the server has it.
mod vector {
    pub const ALICE_IK: &str = "2880e419352603b558d83943c66c9560c4bc2e0045ff4fa1aef89087c8a86bd1";
    pub const ALICE_EK: &str = "a64dba9b773746a7e1220f390771b992462c7cf08c2a2dd284f893a8d90f74b4";
    pub const BOB_IK: &str = "bd97295f9cdb72e9a9d0d9a282c1f36d6ddf159b7ae2174a737bd5ef7380decb";
    pub const BOB_EK: &str = "0e9211761169888b50a12a5e1188c608b17f54ef26d14ab2f46288d87af7dc7f";
    pub const ALICE_KEY: &str = concat!(
        "e2e2:BIWKh3xmeBG/foVKD1h3QbWRzASZhLUy+OHiylOtxT9CCjED0nE9IsLMVasQ17TFVkK2IYKPLxJY4CuWQTXdwEI=",
        ":BFA99SSLp4wVUTmRPasNLQuiF5wui7BaTTZcgPUe9Ul40xd1U8wcqV+STm843OpcLY405BcrNyFEpGGds0apKNY="
    );
    pub const BOB_KEY: &str = concat!(
        "e2e2:BF0/Lhq9tv9Mb8CVAM9xTqdPyMsOOIy7eJbJV+3d7S3LLL7vh5QLUqSjaguCVYvMLIG3wYdQi22bzBL6D2rzUFg=",
        ":BMhy9LUU8Vt1Kxt5iEnn9ZsqO2vkJTUI50tp0rAm/nGQnTfZo6W5SO3d0mtyozMMlBm2GzGdyXY7id6QCRxEzh4="
    );
    pub const ALICE_FINGERPRINT: &str = "aee1 9c7c b5f9 d778 8f26 2068 3a7c 0b05";
    pub const SAFETY_NUMBER: &str = "61117 76794 68243 56502 54320 50081 65224 41983 65342 26542";
    /// kHL: bob is L here (his IK ‖ EK is smaller).
    pub const ALICE_SENDS: &str =
        "9595fe7963a07380ec0d7ff94b382ff17c508d8edfa30706715d5e3a5ac00187";
    pub const BOB_SENDS: &str = "0b2fc26c4e91eda87a97d9f4d8afd066005ce72c15aa3942167a530a9febb0c1";
    pub const ASA_TO_BOB_1: &str = "e2e2:1:OfWxyiJezAgxtKfD1Vdq0vbchdTLiUpmpg==";
    pub const ASA_TO_BOB_2: &str = "e2e2:2:hB96NaPGPc3ziO/Lke6O8/bWcgZNf+PmzlZj";
    pub const BOB_TO_ASA_1: &str = "e2e2:1:KSb6zhQp6//hTeM8Cj5iEJVOz2Z5nwkv62B4a5jpyuU2HQQ=";
}

#[test]
fn a_vector_made_with_webcrypto_gives_the_same_bytes() {
    use vector::*;
    let alice = keys_from(ALICE_IK, ALICE_EK);
    let bob = keys_from(BOB_IK, BOB_EK);
    assert_eq!(alice.published(), ALICE_KEY);
    assert_eq!(bob.published(), BOB_KEY);
    assert_eq!(fingerprint(alice.identity.public()), ALICE_FINGERPRINT);
    assert_eq!(safety_number(alice.identity.public(), bob.identity.public()), SAFETY_NUMBER);
    assert_eq!(safety_number(bob.identity.public(), alice.identity.public()), SAFETY_NUMBER);

    let mut at_alice = alice.pairwise(&PeerKey::parse(BOB_KEY).unwrap()).unwrap();
    let mut at_bob = bob.pairwise(&PeerKey::parse(ALICE_KEY).unwrap()).unwrap();
    assert_eq!(
        at_alice.keys(),
        (hex(ALICE_SENDS).try_into().unwrap(), hex(BOB_SENDS).try_into().unwrap())
    );
    assert_eq!(
        at_bob.keys(),
        (hex(BOB_SENDS).try_into().unwrap(), hex(ALICE_SENDS).try_into().unwrap())
    );

    let asa = "\u{c5}sa";
    assert_eq!(at_alice.seal(asa, "bob", "hello bob"), ASA_TO_BOB_1);
    assert_eq!(at_alice.seal(asa, "bob", "hello again"), ASA_TO_BOB_2);
    assert_eq!(at_bob.seal("bob", asa, "echo: hello bob ✓"), BOB_TO_ASA_1);
    let got = at_bob.open(asa, "bob", ASA_TO_BOB_1).unwrap();
    assert_eq!((got.text.as_str(), got.counter, got.missed), ("hello bob", 1, 0));
    assert_eq!(at_bob.open(asa, "bob", ASA_TO_BOB_2).unwrap().text, "hello again");
    assert_eq!(at_alice.open("bob", asa, BOB_TO_ASA_1).unwrap().text, "echo: hello bob ✓");
    // The name as typed (decomposed "A\u{30a}sa") is not the name bound.
    let mut at_bob = bob.pairwise(&PeerKey::parse(ALICE_KEY).unwrap()).unwrap();
    assert_eq!(at_bob.open("A\u{30a}sa", "bob", ASA_TO_BOB_1), Err(Refused::Unauthentic));
}

#[test]
fn both_directions_work_with_counters_from_one() {
    let (mut alice, mut bob) = two();
    for i in 1..=3u64 {
        let sealed = alice.seal("alice", "bob", &format!("to bob {i}"));
        assert!(sealed.starts_with(&format!("e2e2:{i}:")), "{sealed}");
        let got = bob.open("alice", "bob", &sealed).unwrap();
        assert_eq!((got.text, got.counter, got.missed), (format!("to bob {i}"), i, 0));
        let reply = bob.seal("bob", "alice", &format!("to alice {i}"));
        assert!(reply.starts_with(&format!("e2e2:{i}:")), "{reply}");
        assert_eq!(alice.open("bob", "alice", &reply).unwrap().text, format!("to alice {i}"));
    }
    // One key per direction: what alice sends with, bob receives with.
    let ((a_send, a_recv), (b_send, b_recv)) = (alice.keys(), bob.keys());
    assert_eq!((a_send, a_recv), (b_recv, b_send));
    assert_ne!(a_send, a_recv);
    // Empty and long texts; the size is the text plus the tag, in base64.
    let sealed = alice.seal("alice", "bob", "");
    assert_eq!(bob.open("alice", "bob", &sealed).unwrap().text, "");
    let long = "é".repeat(6000);
    let sealed = alice.seal("alice", "bob", &long);
    assert_eq!(sealed.len(), "e2e2:5:".len() + (12_000usize + 16).div_ceil(3) * 4);
    assert_eq!(bob.open("alice", "bob", &sealed).unwrap().text, long);
}

#[test]
fn a_reflected_or_passed_on_message_is_refused() {
    let (alice, bob, carol) = (Keys::generate(), Keys::generate(), Keys::generate());
    let mut alice_bob = alice.pairwise(&parse(&bob)).unwrap();
    let mut bob_alice = bob.pairwise(&parse(&alice)).unwrap();
    let mut alice_carol = alice.pairwise(&parse(&carol)).unwrap();
    let mut carol_alice = carol.pairwise(&parse(&alice)).unwrap();
    let sealed = alice_bob.seal("alice", "bob", "for bob");
    // Back to alice, as if bob had sent it.
    assert_eq!(alice_bob.open("bob", "alice", &sealed), Err(Refused::Unauthentic));
    // To bob, as if it were bob's own to alice.
    assert_eq!(bob_alice.open("bob", "alice", &sealed), Err(Refused::Unauthentic));
    // Passed on to carol, from alice to carol.
    assert_eq!(carol_alice.open("alice", "carol", &sealed), Err(Refused::Unauthentic));
    // Even names swapped in the right key do not help: to carol as "bob".
    assert_eq!(carol_alice.open("alice", "bob", &sealed), Err(Refused::Unauthentic));
    // And alice's message to carol is not one to bob.
    let to_carol = alice_carol.seal("alice", "carol", "for carol");
    assert_eq!(bob_alice.open("alice", "bob", &to_carol), Err(Refused::Unauthentic));
    // None of it moved anything: the real ones still open.
    assert_eq!(bob_alice.open("alice", "bob", &sealed).unwrap().text, "for bob");
    assert_eq!(carol_alice.open("alice", "carol", &to_carol).unwrap().text, "for carol");
}

#[test]
fn a_tampered_message_is_refused() {
    let (mut alice, mut bob) = two();
    let sealed = alice.seal("alice", "bob", "pay 10 to carol");
    let (_, ct) = parse_text(&sealed).unwrap();
    // One bit of the ciphertext or the tag, anywhere.
    for byte in 0..ct.len() {
        for bit in [0, 7] {
            let mut bad = ct.clone();
            bad[byte] ^= 1 << bit;
            let text = format!("e2e2:1:{}", b64_encode(&bad));
            assert_eq!(bob.open("alice", "bob", &text), Err(Refused::Unauthentic), "{byte}/{bit}");
        }
    }
    // Shortened by one byte (the tag cut), or lengthened.
    let cut = format!("e2e2:1:{}", b64_encode(&ct[..ct.len() - 1]));
    assert_eq!(bob.open("alice", "bob", &cut), Err(Refused::Unauthentic));
    let long = format!("e2e2:1:{}", b64_encode([&ct[..], &[0]].concat()));
    assert_eq!(bob.open("alice", "bob", &long), Err(Refused::Unauthentic));
    // Another counter, the same bytes.
    for n in [2u64, 3, 1 << 40] {
        let text = format!("e2e2:{n}:{}", b64_encode(&ct));
        assert_eq!(bob.open("alice", "bob", &text), Err(Refused::Unauthentic), "{n}");
    }
    // Other names: a letter, the case, the form (NFD), a space.
    for (from, to) in [("alicf", "bob"), ("Alice", "bob"), ("alice", "Bob"), ("alice ", "bob")] {
        assert_eq!(bob.open(from, to, &sealed), Err(Refused::Unauthentic), "{from} {to}");
    }
    assert_eq!(bob.open("alice", "bob", &sealed).unwrap().text, "pay 10 to carol");
}

#[test]
fn a_replay_and_a_counter_below_the_window_are_refused() {
    let (mut alice, mut bob) = two();
    let sent: Vec<String> =
        (1..=70).map(|i| alice.seal("alice", "bob", &format!("m{i}"))).collect();
    let at = |n: usize| sent[n - 1].as_str();
    let got = bob.open("alice", "bob", at(1)).unwrap();
    assert_eq!((got.counter, got.missed), (1, 0));
    // The same text again: refused as a replay, not shown.
    assert_eq!(bob.open("alice", "bob", at(1)), Err(Refused::Replayed));
    assert_eq!(Refused::Replayed.shown(), "replayed");
    // 70 arrives: 68 never did (yet).
    let got = bob.open("alice", "bob", at(70)).unwrap();
    assert_eq!((got.counter, got.missed), (70, 68));
    assert_eq!(bob.open("alice", "bob", at(70)), Err(Refused::Replayed));
    // 64 below the highest: refused although never seen; 63 below: once.
    assert_eq!(bob.open("alice", "bob", at(6)), Err(Refused::Replayed));
    let got = bob.open("alice", "bob", at(7)).unwrap();
    assert_eq!((got.text.as_str(), got.missed), ("m7", 0));
    assert_eq!(bob.open("alice", "bob", at(7)), Err(Refused::Replayed));
    // Out of order within the window: each accepted once.
    for n in [69, 40, 41, 8] {
        assert_eq!(bob.open("alice", "bob", at(n)).unwrap().text, format!("m{n}"));
        assert_eq!(bob.open("alice", "bob", at(n)), Err(Refused::Replayed), "{n}");
    }
    // A forgery with an old counter is not "replayed": it does not authenticate.
    let forged = seal_with(&[7; 32], 7, "alice", "bob", "forged");
    assert_eq!(bob.open("alice", "bob", &forged), Err(Refused::Unauthentic));
    // A jump past the window forgets everything below it.
    let far = seal_with(&alice.keys().0, 200, "alice", "bob", "far");
    assert_eq!(bob.open("alice", "bob", &far).unwrap().missed, 129);
    assert_eq!(bob.open("alice", "bob", at(69)), Err(Refused::Replayed));
}

#[test]
fn the_window_remembers_exactly_the_64_below_the_highest() {
    let mut w = ReplayWindow::default();
    assert!(w.fresh(1) && w.fresh(MAX_COUNTER));
    assert_eq!(w.accept(100), 99);
    for n in 37..100 {
        assert!(w.fresh(n), "{n}");
    }
    assert!(!w.fresh(36) && !w.fresh(1) && !w.fresh(100));
    assert_eq!(w.accept(36 + 1), 0);
    assert!(!w.fresh(37));
    assert_eq!(w.accept(101), 0);
    assert!(!w.fresh(37), "101 - 37 = 64: out of the window");
    assert!(w.fresh(38) && !w.fresh(100) && !w.fresh(101));
    assert_eq!(w.accept(101 + 64), 63);
    assert!(!w.fresh(101) && w.fresh(102));
}

#[test]
fn a_message_text_that_does_not_parse_strictly_is_refused() {
    let (mut alice, mut bob) = two();
    let sealed = alice.seal("alice", "bob", "sixsix"); // 22 bytes: "==" padding
    let b64 = sealed.strip_prefix("e2e2:1:").unwrap();
    assert!(b64.ends_with("=="), "{b64}");
    // The last character before the padding with one unused bit set.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let last = b64.len() - 3;
    let pos = alphabet.find(&b64[last..last + 1]).unwrap();
    let loose_bits = format!("{}{}==", &b64[..last], &alphabet[pos + 1..pos + 2]);
    let short_ct = b64_encode([0u8; 15]);
    for bad in [
        "".to_owned(),
        "hello in the clear".to_owned(),
        format!("e2e1:1:{b64}"),
        format!("E2E2:1:{b64}"),
        format!("e2e2:01:{b64}"),
        format!("e2e2:0:{b64}"),
        format!("e2e2:+1:{b64}"),
        format!("e2e2:-1:{b64}"),
        format!("e2e2: 1:{b64}"),
        format!("e2e2:1 :{b64}"),
        format!("e2e2:1.0:{b64}"),
        format!("e2e2:9007199254740992:{b64}"),
        format!("e2e2:99999999999999999999:{b64}"),
        format!("e2e2::{b64}"),
        format!("e2e2:1{b64}"),
        format!("e2e2:1:{}", b64.trim_end_matches('=')),
        format!("e2e2:1:{b64}="),
        format!("e2e2:1:{loose_bits}"),
        format!("e2e2:1:*{}", &b64[1..]),
        format!("e2e2:1:-{}", &b64[1..]),
        format!("e2e2:1:_{}", &b64[1..]),
        format!("e2e2:1:{b64}\n"),
        format!("e2e2:1: {b64}"),
        format!("e2e2:1:{}\n{}", &b64[..4], &b64[4..]),
        format!("e2e2:1:{b64}:x"),
        "e2e2:1:".to_owned(),
        format!("e2e2:1:{short_ct}"),
    ] {
        assert_eq!(bob.open("alice", "bob", &bad), Err(Refused::Malformed), "{bad:?}");
    }
    assert_eq!(Refused::Malformed.shown(), "could not be decrypted");
    assert_eq!(parse_text(&format!("e2e2:9007199254740991:{b64}")).unwrap().0, MAX_COUNTER);
    assert_eq!(bob.open("alice", "bob", &sealed).unwrap().text, "sixsix");
}

#[test]
fn a_key_string_not_exactly_the_format_is_refused_by_the_parser() {
    let keys = Keys::generate();
    let good = keys.published();
    assert_eq!(good.len(), KEY_CHARS);
    assert_eq!(KEY_CHARS, 182);
    let ik = &good[5..93];
    let ek = &good[94..];
    let parsed = PeerKey::parse(&good).unwrap();
    assert_eq!(parsed.identity(), keys.identity.public());
    assert_eq!(parsed.session(), keys.session.public());
    // A point of the right form that is not on the curve (x = 1, y = 1),
    // and the zeros the load generator publishes.
    let mut off = [0u8; 65];
    off[0] = 4;
    off[32] = 1;
    off[64] = 1;
    let off = b64_encode(off);
    let zeros = format!("B{}=", "A".repeat(86));
    // A valid point with another tag byte (0x02: compressed; 0x06:
    // hybrid), and 64 or 66 bytes of it.
    let raw = b64_decode(ik).unwrap();
    let tagged = |tag: u8| b64_encode([&[tag][..], &raw[1..]].concat());
    let short = b64_encode(&raw[..64]);
    let long = b64_encode([&raw[..], &[0]].concat());
    assert_eq!((short.len(), long.len()), (88, 88));
    // The two unused bits of the 87th character, one set: the same bytes
    // to a lax decoder.
    let loose = |p: &str| {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let pos = alphabet.find(&p[86..87]).unwrap();
        format!("{}{}=", &p[..86], &alphabet[pos | 1..(pos | 1) + 1])
    };
    let cases: Vec<(String, KeyError)> = vec![
        (String::new(), KeyError::Format),
        (ik.to_owned(), KeyError::Format),
        (good[..181].to_owned(), KeyError::Format),
        (format!("{good}="), KeyError::Format),
        (format!("{good}\n"), KeyError::Format),
        (format!(" {}", &good[1..]), KeyError::Format),
        (format!("e2e1:{ik}:{ek}"), KeyError::Format),
        (format!("E2E2:{ik}:{ek}"), KeyError::Format),
        (format!("e2e2:{ik};{ek}"), KeyError::Format),
        (format!("e2e2:{ek}{ik}:"), KeyError::Format),
        (format!("e2e2:{}é{ek}", &ik[..87]), KeyError::Format),
        (format!("e2e2:{}é:{ek}", &ik[..86]), KeyError::Base64),
        (format!("e2e2:{}*=:{ek}", &ik[..86]), KeyError::Base64),
        (format!("e2e2:{ik}:{}-=", &ek[..86]), KeyError::Base64),
        (format!("e2e2:{ik}:{}_=", &ek[..86]), KeyError::Base64),
        // No padding: 88 characters of base64 are 66 bytes.
        (format!("e2e2:{}A:{ek}", &ik[..87]), KeyError::NotUncompressed),
        (format!("e2e2:{ik}:{}=A", &ek[..86]), KeyError::Base64),
        (format!("e2e2:{}:{ek}", loose(ik)), KeyError::Base64),
        (format!("e2e2:{ik}:{}", loose(ek)), KeyError::Base64),
        (format!("e2e2:{short}:{ek}"), KeyError::NotUncompressed),
        (format!("e2e2:{ik}:{long}"), KeyError::NotUncompressed),
        (format!("e2e2:{}:{ek}", tagged(2)), KeyError::NotUncompressed),
        (format!("e2e2:{ik}:{}", tagged(6)), KeyError::NotUncompressed),
        (format!("e2e2:C{}:{ek}", &ik[1..]), KeyError::NotUncompressed),
        (format!("e2e2:{ik}:{off}"), KeyError::NotOnCurve),
        (format!("e2e2:{zeros}:{ek}"), KeyError::NotOnCurve),
        (format!("e2e2:{zeros}:{zeros}"), KeyError::NotOnCurve),
    ];
    for (key, why) in cases {
        assert_eq!(PeerKey::parse(&key).map(|_| ()), Err(why), "{key:?}");
    }
    // A flipped bit of a coordinate: (almost surely) off the curve.
    let mut raw = b64_decode(ek).unwrap();
    raw[64] ^= 1;
    let flipped = format!("e2e2:{ik}:{}", b64_encode(raw));
    assert_eq!(PeerKey::parse(&flipped).map(|_| ()), Err(KeyError::NotOnCurve));
}

/// The server's check and the client's parser agree on everything but the
/// curve, which only the client checks.
#[test]
fn what_the_server_accepts_the_client_parses_unless_off_the_curve() {
    for _ in 0..50 {
        let key = Keys::generate().published();
        assert!(ragnarok::protocol::check_public_key(&key).is_ok());
        assert!(PeerKey::parse(&key).is_ok());
    }
    let zeros = format!("e2e2:B{}=:B{}=", "A".repeat(86), "A".repeat(86));
    assert!(ragnarok::protocol::check_public_key(&zeros).is_ok());
    assert_eq!(PeerKey::parse(&zeros).map(|_| ()), Err(KeyError::NotOnCurve));
    let good = Keys::generate().published();
    for i in 0..good.len() {
        for c in ["A", "=", ":", "é", "-", "\n"] {
            let mut bad = good.clone().into_bytes();
            bad.splice(i..i + 1, c.bytes());
            let Ok(bad) = String::from_utf8(bad) else { continue };
            let server = ragnarok::protocol::check_public_key(&bad).is_ok();
            match PeerKey::parse(&bad) {
                Ok(_) => assert!(server, "{bad:?}: the client parses what the server refused"),
                Err(KeyError::NotOnCurve) => assert!(server, "{bad:?}"),
                Err(_) => assert!(!server, "{bad:?}: the server took what the client refuses"),
            }
        }
    }
}

#[test]
fn safety_numbers_match_on_both_sides_and_differ_for_another_identity() {
    let (alice, bob, carol) = (Keys::generate(), Keys::generate(), Keys::generate());
    let (a, b, c) = (alice.identity.public(), bob.identity.public(), carol.identity.public());
    let ab = safety_number(a, b);
    assert_eq!(ab, safety_number(b, a));
    let groups: Vec<&str> = ab.split(' ').collect();
    assert_eq!(groups.len(), 10, "{ab}");
    assert!(groups.iter().all(|g| g.len() == 5 && g.bytes().all(|d| d.is_ascii_digit())), "{ab}");
    assert_ne!(ab, safety_number(a, c));
    assert_ne!(ab, safety_number(c, b));
    // A new session of the same identity: the same number and fingerprint.
    let alice_again = Keys::with_identity(alice.identity.clone());
    assert_ne!(alice_again.published(), alice.published());
    assert_eq!(safety_number(alice_again.identity.public(), b), ab);
    let fp = fingerprint(a);
    assert_eq!(fp, fingerprint(alice_again.identity.public()));
    assert_eq!(fp.len(), 39);
    assert!(fp.split(' ').all(|g| g.len() == 4 && g.bytes().all(|h| h.is_ascii_hexdigit())));
    assert_eq!(fp, fp.to_lowercase());
}

#[test]
fn two_tabs_sharing_an_identity_get_distinct_pairwise_keys() {
    let identity = KeyPair::generate();
    let (tab1, tab2) = (Keys::with_identity(identity.clone()), Keys::with_identity(identity));
    let bob = Keys::generate();
    let mut tab1_bob = tab1.pairwise(&parse(&bob)).unwrap();
    let tab2_bob = tab2.pairwise(&parse(&bob)).unwrap();
    assert_ne!(tab1_bob.keys().0, tab2_bob.keys().0);
    assert_ne!(tab1_bob.keys().1, tab2_bob.keys().1);
    // What tab 1 sends, bob's pair with tab 2 cannot read.
    let mut bob_tab2 = bob.pairwise(&parse(&tab2)).unwrap();
    let sealed = tab1_bob.seal("alice", "bob", "from tab 1");
    assert_eq!(bob_tab2.open("alice", "bob", &sealed), Err(Refused::Unauthentic));
    // The two tabs can talk to each other (equal IK: EK decides who is L).
    let mut one_two = tab1.pairwise(&parse(&tab2)).unwrap();
    let mut two_one = tab2.pairwise(&parse(&tab1)).unwrap();
    let sealed = one_two.seal("alice", "alice2", "between tabs");
    assert_eq!(two_one.open("alice", "alice2", &sealed).unwrap().text, "between tabs");
    // And a client never pairs with its own key.
    assert!(tab1.pairwise(&parse(&tab1)).is_none());
}

#[test]
fn forward_secrecy_across_sessions_needs_the_session_keys() {
    // The same identities, new sessions: new keys; the old messages do not
    // open with the new pair (and what a client keeps is only the identity).
    let (alice_id, bob_id) = (KeyPair::generate(), KeyPair::generate());
    let (alice1, bob1) =
        (Keys::with_identity(alice_id.clone()), Keys::with_identity(bob_id.clone()));
    let mut a1 = alice1.pairwise(&parse(&bob1)).unwrap();
    let old = a1.seal("alice", "bob", "yesterday");
    let (alice2, bob2) = (Keys::with_identity(alice_id), Keys::with_identity(bob_id));
    let mut b2 = bob2.pairwise(&parse(&alice2)).unwrap();
    assert_ne!(b2.keys().1, a1.keys().0);
    assert_eq!(b2.open("alice", "bob", &old), Err(Refused::Unauthentic));
}

/// A session key is authenticated by the identity key published with it:
/// whoever publishes alice's identity key beside a session key of their
/// own, without alice's private identity key, cannot make messages that
/// bob's pair with that key accepts.
#[test]
fn a_session_key_beside_someone_elses_identity_key_is_useless() {
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let mallory = Keys::generate();
    let ik = b64_encode(alice.identity.public());
    let ek = b64_encode(mallory.session.public());
    let forged = PeerKey::parse(&format!("e2e2:{ik}:{ek}")).unwrap();
    assert_eq!(fingerprint(forged.identity()), fingerprint(alice.identity.public()));
    let mut bob_pair = bob.pairwise(&forged).unwrap();
    // Mallory's best: her own private keys (she lacks alice's identity key).
    let mut mallory_pair = mallory.pairwise(&parse(&bob)).unwrap();
    let sealed = mallory_pair.seal("alice", "bob", "hi, it's alice");
    assert_eq!(bob_pair.open("alice", "bob", &sealed), Err(Refused::Unauthentic));
    // With alice's identity key, the same session key works: the identity
    // key is what it takes.
    let with_alice = Keys { identity: alice.identity.clone(), session: mallory.session.clone() };
    let sealed = with_alice.pairwise(&parse(&bob)).unwrap().seal("alice", "bob", "really alice");
    assert_eq!(bob_pair.open("alice", "bob", &sealed).unwrap().text, "really alice");
}

/// A client: its name from the relay of its own key; the records.
#[test]
fn a_client_learns_its_name_and_trusts_first_keys_then_blocks_a_changed_one() {
    let mut alice = Client::new(Keys::generate());
    let mut bob = Client::new(Keys::generate());
    let (a_pub, b_pub) = (alice.published().to_owned(), bob.published().to_owned());
    // Before its own key came back, nothing is sent or read.
    assert_eq!(alice.on_key("bob", &b_pub), KeyEvent::First);
    assert_eq!(alice.seal("bob", "too early"), Err(NotSent::NotReady));
    assert_eq!(alice.on_key("Åsa", &a_pub), KeyEvent::Mine);
    assert_eq!(alice.name(), Some("Åsa"));
    assert_eq!(bob.on_key("bob", &b_pub), KeyEvent::Mine);
    assert_eq!(bob.on_key("Åsa", &a_pub), KeyEvent::First);
    let sealed = alice.seal("bob", "hi bob").unwrap();
    assert_eq!(bob.open("Åsa", &sealed).unwrap().text, "hi bob");
    assert_eq!(alice.safety_number("bob"), bob.safety_number("Åsa"));
    assert!(alice.verify("bob"));
    assert!(alice.record("bob").unwrap().verified);

    // Bob comes back: same identity, new session: not a warning, still verified.
    alice.on_left("bob");
    assert_eq!(alice.seal("bob", "gone"), Err(NotSent::NoKey));
    let mut bob2 = Client::new(Keys::with_identity(bob.keys().identity.clone()));
    assert_eq!(alice.on_key("bob", bob2.published()), KeyEvent::Known);
    assert!(alice.record("bob").unwrap().verified);
    let bob2_pub = bob2.published().to_owned();
    bob2.on_key("bob", &bob2_pub);
    bob2.on_key("Åsa", &a_pub);
    let sealed = alice.seal("bob", "welcome back").unwrap();
    assert!(sealed.starts_with("e2e2:1:"), "a new pair of sessions counts from 1");
    assert_eq!(bob2.open("Åsa", &sealed).unwrap().text, "welcome back");

    // "bob" leaves and a "bob" with another identity comes: blocked, also
    // after a leave, until confirmed; the record is not replaced before.
    alice.on_left("bob");
    let ghost = Client::new(Keys::generate());
    assert_eq!(alice.on_key("bob", ghost.published()), KeyEvent::Changed);
    assert_eq!(alice.on_key("bob", ghost.published()), KeyEvent::Changed, "still");
    assert_eq!(alice.seal("bob", "my PIN"), Err(NotSent::Unconfirmed));
    assert!(!alice.verify("bob"));
    assert_eq!(alice.record("bob").unwrap().identity, *bob.keys().identity.public());
    assert_ne!(alice.safety_number("bob"), bob.safety_number("Åsa"));
    alice.confirm("bob");
    assert_eq!(alice.record("bob").unwrap().identity, *ghost.keys().identity.public());
    assert!(!alice.record("bob").unwrap().verified, "a confirmed new key is not verified");
    assert!(alice.seal("bob", "now then").is_ok());
}

#[test]
fn one_bad_key_among_many_does_not_stop_the_others() {
    let mut alice = Client::new(Keys::generate());
    let (bob, carol) = (Keys::generate(), Keys::generate());
    let zeros = format!("e2e2:B{}=:B{}=", "A".repeat(86), "A".repeat(86));
    let keys = serde_json::json!({
        "!": "not*base64", "b-zero": zeros, "bob": bob.published(), "c-num": 5,
        "carol": carol.published(), "self": alice.published(),
    });
    let events = alice.on_keys(keys.as_object().unwrap());
    let event = |u: &str| events.iter().find(|(n, _)| n == u).unwrap().1.clone();
    assert_eq!(event("!"), KeyEvent::Unusable(KeyError::Format));
    assert_eq!(event("b-zero"), KeyEvent::Unusable(KeyError::NotOnCurve));
    assert_eq!(event("c-num"), KeyEvent::Unusable(KeyError::Format));
    assert_eq!(event("bob"), KeyEvent::First);
    assert_eq!(event("carol"), KeyEvent::First);
    assert_eq!(event("self"), KeyEvent::Mine);
    assert!(alice.seal("bob", "x").is_ok() && alice.seal("carol", "x").is_ok());
    assert_eq!(alice.seal("b-zero", "x"), Err(NotSent::Unusable));
    assert_eq!(alice.seal("!", "x"), Err(NotSent::Unusable));
    // Our own key under a second name is no one's usable key.
    let own = alice.published().to_owned();
    assert!(matches!(alice.on_key("mirror", &own), KeyEvent::Unusable(_)));
    assert_eq!(alice.seal("mirror", "x"), Err(NotSent::Unusable));
}
