//! Arbitrary bytes into the RESP decoder (`redis::resp::Decoder`), which reads
//! everything Redis sends a cluster node.
//!
//! Checks: no panic, no unbounded work; the values decoded from the input fed
//! in one piece are the same as from the input fed in pieces (the first byte
//! picks the piece size), and so is whether it ended in an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ragnarok::redis::resp::{Decoder, Value};

fn decode(chunks: &[&[u8]]) -> (Vec<Value>, bool) {
    let mut decoder = Decoder::new();
    let mut values = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk);
        loop {
            match decoder.next_value() {
                Ok(Some(value)) => values.push(value),
                Ok(None) => break,
                Err(_) => return (values, true),
            }
        }
    }
    (values, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else { return };
    let whole = decode(&[input]);
    let size = usize::from(first % 16) + 1;
    let pieces: Vec<&[u8]> = input.chunks(size).collect();
    assert_eq!(decode(&pieces), whole);
});
