//! Arbitrary bytes into `http::parse`, the parser of the request that opens
//! every connection: whole, then in growing prefixes as a socket delivers
//! them (chunks of varying size chosen from the input, and one byte at a
//! time for short inputs).
//!
//! Checks: no panic; an `Upgrade`'s `head_len` is within the bytes given
//! (the connection splits its buffer there); `Incomplete` only below the
//! size limit; every response is a well-formed status line; and the first
//! decisive answer to a prefix is the answer to the whole input, so the
//! server's behaviour does not depend on how TCP happened to segment the
//! request (except for the 431 cut-off, which is decided by length alone).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ragnarok::http::{self, HttpPolicy, MAX_REQUEST_BYTES, Parsed};

/// An operator who allows one origin and trusts one proxy; whether the
/// request came from that proxy is read off the input's length.
fn policy() -> HttpPolicy {
    HttpPolicy {
        allowed_origins: vec!["https://chat.example.org".into()],
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        max_message_bytes: 16384,
        e2e_room: false,
        rate_limit: (20, 40),
        room_name: "Tom & \"Jerry\" <b>".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let policy = policy();
    let from_proxy = data.len() % 2 == 0;
    let parse = |bytes: &[u8]| http::parse(bytes, &policy, from_proxy);
    let whole = parse(data);
    check(&whole, data);
    let mut rng = Rng::new(data);
    deliver(data, &whole, &parse, || rng.chunk());
    if data.len() <= 512 {
        deliver(data, &whole, &parse, || 1);
    }
});

/// Feeds `data` in growing prefixes until the parser decides.
fn deliver(
    data: &[u8],
    whole: &Parsed,
    parse: &dyn Fn(&[u8]) -> Parsed,
    mut next_len: impl FnMut() -> usize,
) {
    let mut end = 0;
    while end < data.len() {
        end = (end + next_len()).min(data.len());
        let prefix = &data[..end];
        let result = parse(prefix);
        check(&result, prefix);
        if result != Parsed::Incomplete {
            if !matches!(result, Parsed::Respond { status: 431, .. }) {
                assert_eq!(
                    &result,
                    whole,
                    "a {}-byte prefix was answered differently from the whole {}-byte input",
                    prefix.len(),
                    data.len()
                );
            }
            return;
        }
    }
}

fn check(result: &Parsed, input: &[u8]) {
    match result {
        Parsed::Incomplete => {
            assert!(input.len() < MAX_REQUEST_BYTES, "Incomplete at {} bytes", input.len());
        }
        Parsed::Upgrade { response, head_len, client } => {
            assert!(client.is_none_or(|ip| !ip.to_string().is_empty()));
            assert!(
                *head_len <= input.len(),
                "Upgrade head_len {head_len} > input length {}",
                input.len()
            );
            assert!(*head_len > 0);
            assert!(input[..*head_len].ends_with(b"\n"), "head does not end with a line end");
            assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(response.ends_with(b"\r\n\r\n"));
        }
        Parsed::Respond { response, status } => {
            assert!(
                matches!(status, 200 | 400 | 403 | 404 | 405 | 426 | 431),
                "unexpected status {status}"
            );
            assert!(response.starts_with(format!("HTTP/1.1 {status} ").as_bytes()));
        }
    }
}

/// A small deterministic generator seeded from the input, so a crash
/// reproduces from its file alone.
struct Rng(u64);

impl Rng {
    fn new(data: &[u8]) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// 1..=8, 1..=64, 1..=1460 (one TCP segment) or 1..=8192 bytes.
    fn chunk(&mut self) -> usize {
        let r = self.next();
        let max = [8, 64, 1460, 8192][(r & 3) as usize];
        1 + ((r >> 2) % max) as usize
    }
}
