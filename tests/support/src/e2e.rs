//! The end-to-end private message scheme of docs/PROTOCOL.md, written from
//! the document alone with `ring`: ECDH P-256, HKDF-SHA-256, AES-256-GCM.
//! Shared by the tests and `examples/e2e_peer.rs`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hkdf};

/// One user's key pair; `public_b64` goes into the `PublicKey` message.
pub struct KeyPair {
    private: EphemeralPrivateKey,
    pub public: Vec<u8>,
}

impl KeyPair {
    pub fn generate() -> Self {
        let private = EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new()).unwrap();
        let public = private.compute_public_key().unwrap().as_ref().to_vec();
        KeyPair { private, public }
    }

    pub fn public_b64(&self) -> String {
        STANDARD.encode(&self.public)
    }

    /// The AES key shared with the holder of `their_b64` (ring's ECDH keys
    /// are single-use, so this consumes the key pair).
    pub fn agree(self, their_b64: &str) -> Session {
        let theirs = STANDARD.decode(their_b64).expect("base64 key");
        let (lo, hi) =
            if self.public <= theirs { (&self.public, &theirs) } else { (&theirs, &self.public) };
        let key = ring::agreement::agree_ephemeral(
            self.private,
            &UnparsedPublicKey::new(&ECDH_P256, &theirs),
            |shared| {
                let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(shared);
                let info: [&[u8]; 3] = [b"ragnarok-e2e-v1", lo, hi];
                let okm = prk.expand(&info, &AES_256_GCM).unwrap();
                LessSafeKey::new(UnboundKey::from(okm))
            },
        )
        .expect("valid peer key");
        Session { key }
    }
}

pub struct Session {
    key: LessSafeKey,
}

impl Session {
    /// `PrivateMessage.text` for `plaintext` from `sender` to `recipient`.
    pub fn seal(&self, sender: &str, recipient: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; 12];
        SystemRandom::new().fill(&mut nonce).unwrap();
        let mut data = plaintext.as_bytes().to_vec();
        let aad = format!("{sender}\n{recipient}");
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut data,
            )
            .unwrap();
        format!("e2e1:{}:{}", STANDARD.encode(nonce), STANDARD.encode(data))
    }

    /// The plaintext, or `None` if the text is not ours to read.
    pub fn open(&self, sender: &str, recipient: &str, text: &str) -> Option<String> {
        let rest = text.strip_prefix("e2e1:")?;
        let (nonce, sealed) = rest.split_once(':')?;
        let nonce: [u8; 12] = STANDARD.decode(nonce).ok()?.try_into().ok()?;
        let mut data = STANDARD.decode(sealed).ok()?;
        let aad = format!("{sender}\n{recipient}");
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut data,
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// "xxxx xxxx ... " : the first 16 bytes of SHA-256 of the raw key, in hex.
pub fn fingerprint(public_b64: &str) -> String {
    let raw = STANDARD.decode(public_b64).unwrap();
    let hash = digest::digest(&digest::SHA256, &raw);
    let hex: String = hash.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    hex.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
}
