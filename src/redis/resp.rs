//! RESP2, the bytes Redis speaks: commands encoded as arrays of bulk
//! strings (`Command`), and a resumable decoder for replies and pushed
//! messages (`Decoder`), bounded in depth and size and never recursive.

use std::fmt;
use std::io::Write;

/// Bytes of one reply (or pushed message) held before it is complete.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Arrays inside arrays: Redis sends a few levels; more is an attack.
const MAX_DEPTH: usize = 64;
/// What an element of an unfinished array is counted for on top of its
/// bytes: about what it costs in memory once decoded.
const ELEMENT_COST: usize = 64;
/// A `+`, `-`, `:`, `$` or `*` line, up to its CRLF.
const MAX_LINE: usize = 64 * 1024;

/// A RESP2 reply or a pushed pub/sub message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    /// A bulk or simple string.
    Bytes(Vec<u8>),
    Error(String),
    Array(Vec<Value>),
}

/// Why the decoder stopped: what came is not RESP2, or too much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not RESP2.
    Protocol(String),
    /// A reply grew past `MAX_FRAME_BYTES` without being complete.
    TooLarge,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Protocol(what) => write!(f, "redis protocol error: {what}"),
            DecodeError::TooLarge => {
                write!(f, "a redis reply exceeds {} MiB", MAX_FRAME_BYTES / (1024 * 1024))
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// One command: its name and arguments, each sent as a bulk string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    args: Vec<Vec<u8>>,
}

impl Command {
    pub fn new(name: &str) -> Command {
        Command { args: vec![name.as_bytes().to_vec()] }
    }

    /// Appends one argument (a `String` or `Vec<u8>` is moved, not copied).
    pub fn arg(mut self, arg: impl Into<Vec<u8>>) -> Command {
        self.args.push(arg.into());
        self
    }

    /// The name first, then the arguments.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    /// Bytes of the command as RESP.
    pub fn encoded_len(&self) -> usize {
        let digits = |n: usize| n.checked_ilog10().unwrap_or(0) as usize + 1;
        let bulks: usize = self.args.iter().map(|a| 1 + digits(a.len()) + 2 + a.len() + 2).sum();
        1 + digits(self.args.len()) + 2 + bulks
    }

    /// Appends the command as RESP.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "*{}\r\n", self.args.len());
        for arg in &self.args {
            put_bulk(out, arg);
        }
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub(super) fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        put_bulk(out, arg);
    }
}

fn put_bulk(out: &mut Vec<u8>, arg: &[u8]) {
    let _ = write!(out, "${}\r\n", arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// A resumable RESP2 decoder: feed it bytes as they come, take values out
/// as they complete.
///
/// Written here rather than taken from `redis-protocol`: that crate's
/// decoder recurses once per nesting level with no limit (400 KB of
/// `*1\r\n` overflows the stack and aborts the process) and starts again
/// from the first byte on every call (quadratic for a large array that
/// arrives in many reads). This one keeps the arrays it is filling on a
/// stack of its own, bounded in depth, and drops each byte from its buffer
/// once it has been decoded, so a reply split across any number of reads
/// costs one pass.
#[derive(Default)]
pub struct Decoder {
    /// Bytes not decoded yet start at `buf[pos]`.
    buf: Vec<u8>,
    pos: usize,
    /// Arrays being filled, innermost last: elements so far, elements missing.
    stack: Vec<(Vec<Value>, usize)>,
    /// Bytes already decoded into `stack`, plus `ELEMENT_COST` for each of
    /// its elements (they count toward the limit).
    partial: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for at least `n` more bytes at the end of the buffer: after
    /// writing into it, call `filled` with how many were written.
    pub(super) fn spare(&mut self, n: usize) -> &mut [u8] {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + n, 0);
        &mut self.buf[len..]
    }

    /// `n` bytes of what `spare` returned were written; the rest goes.
    pub(super) fn filled(&mut self, spare: usize, n: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - spare + n);
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held for the value in progress.
    pub fn pending(&self) -> usize {
        self.partial + self.buf.len() - self.pos
    }

    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// The next complete value, `Ok(None)` until more bytes come.
    pub fn next_value(&mut self) -> Result<Option<Value>, DecodeError> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some(&kind) = rest.first() else { break };
            let window = &rest[..rest.len().min(MAX_LINE + 2)];
            // The line starts after the type byte (which may itself be '\r').
            let eol = window.get(1..).and_then(|w| w.windows(2).position(|w| w == b"\r\n"));
            let Some(eol) = eol.map(|i| i + 1) else {
                if rest.len() > MAX_LINE {
                    return Err(DecodeError::Protocol("a line longer than 64 KiB".into()));
                }
                break;
            };
            let line = &rest[1..eol];
            let after = eol + 2;
            let (value, used) = match kind {
                b'+' => (Value::Bytes(line.to_vec()), after),
                b'-' => (Value::Error(String::from_utf8_lossy(line).into_owned()), after),
                b':' => (Value::Int(parse_int(line)?), after),
                b'$' => match parse_int(line)? {
                    -1 => (Value::Nil, after),
                    n if n < 0 => return Err(bad_length(n)),
                    n if n as u64 > MAX_FRAME_BYTES as u64 => return Err(DecodeError::TooLarge),
                    n => {
                        let n = n as usize;
                        let end = after + n;
                        if rest.len() < end + 2 {
                            break;
                        }
                        if &rest[end..end + 2] != b"\r\n" {
                            return Err(DecodeError::Protocol("a bulk string without CRLF".into()));
                        }
                        (Value::Bytes(rest[after..end].to_vec()), end + 2)
                    }
                },
                b'*' => match parse_int(line)? {
                    -1 => (Value::Nil, after),
                    0 => (Value::Array(Vec::new()), after),
                    n if n < 0 => return Err(bad_length(n)),
                    n => {
                        if self.stack.len() >= MAX_DEPTH {
                            return Err(DecodeError::Protocol(format!(
                                "arrays nested more than {MAX_DEPTH} deep"
                            )));
                        }
                        let n = usize::try_from(n).map_err(|_| bad_length(n))?;
                        self.pos += after;
                        self.partial += after;
                        self.stack.push((Vec::with_capacity(n.min(1024)), n));
                        continue;
                    }
                },
                other => {
                    return Err(DecodeError::Protocol(format!("unexpected byte 0x{other:02x}")));
                }
            };
            self.pos += used;
            self.partial += used;
            let mut value = value;
            loop {
                let Some((items, missing)) = self.stack.last_mut() else {
                    self.partial = 0;
                    self.compact();
                    return Ok(Some(value));
                };
                items.push(value);
                self.partial += ELEMENT_COST;
                *missing -= 1;
                if *missing > 0 {
                    break;
                }
                let Some((items, _)) = self.stack.pop() else { unreachable!() };
                value = Value::Array(items);
            }
        }
        self.compact();
        if self.pending() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge);
        }
        Ok(None)
    }
}

fn parse_int(line: &[u8]) -> Result<i64, DecodeError> {
    std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        DecodeError::Protocol(format!("{:?} is not a number", String::from_utf8_lossy(line)))
    })
}

fn bad_length(n: i64) -> DecodeError {
    DecodeError::Protocol(format!("length {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
        let mut d = Decoder::new();
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(v) = d.next_value()? {
            out.push(v);
        }
        Ok(out)
    }

    fn b(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    const SAMPLE: &[u8] = b"+OK\r\n-ERR no\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*0\r\n\
        *3\r\n$7\r\nmessage\r\n$2\r\nch\r\n*2\r\n:1\r\n$0\r\n\r\n:7\r\n";

    fn sample_values() -> Vec<Value> {
        vec![
            b("OK"),
            Value::Error("ERR no".into()),
            Value::Int(-42),
            b("he\r\no"),
            Value::Nil,
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![b("message"), b("ch"), Value::Array(vec![Value::Int(1), b("")])]),
            Value::Int(7),
        ]
    }

    #[test]
    fn decodes_every_kind() {
        assert_eq!(decode_all(SAMPLE).unwrap(), sample_values());
    }

    #[test]
    fn decodes_the_same_split_anywhere_and_byte_by_byte() {
        for split in 0..=SAMPLE.len() {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for part in [&SAMPLE[..split], &SAMPLE[split..]] {
                d.feed(part);
                while let Some(v) = d.next_value().unwrap() {
                    out.push(v);
                }
            }
            assert_eq!(out, sample_values(), "split at {split}");
            assert_eq!(d.pending(), 0);
        }
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for byte in SAMPLE {
            d.feed(&[*byte]);
            while let Some(v) = d.next_value().unwrap() {
                out.push(v);
            }
        }
        assert_eq!(out, sample_values());
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for bad in [
            &b"?x\r\n"[..],
            b"**3\r\n\r\n3**31\r", // found by fuzz/fuzz_targets/resp.rs
            b":12a\r\n",
            b"$-2\r\n",
            b"*-7\r\n",
            b"$3\r\nabcde\r\n",
            b":99999999999999999999\r\n",
            b"$\r\n",
        ] {
            assert!(matches!(decode_all(bad), Err(DecodeError::Protocol(_))), "{bad:?}");
        }
        let mut deep = b"*1\r\n".repeat(100_000);
        deep.extend_from_slice(b":1\r\n");
        assert!(matches!(decode_all(&deep), Err(DecodeError::Protocol(_))));
        let ok = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
        assert_eq!(decode_all(&ok).unwrap().len(), 1);
        assert!(matches!(decode_all(&[b'+'; MAX_LINE + 10]), Err(DecodeError::Protocol(_))));
    }

    #[test]
    fn bounds_what_an_incomplete_reply_may_hold() {
        assert!(matches!(decode_all(b"$67108865\r\n"), Err(DecodeError::TooLarge)));
        assert!(decode_all(b"$67108864\r\n").unwrap().is_empty());
        // Many small elements of one endless array.
        let mut d = Decoder::new();
        d.feed(b"*1000000000\r\n");
        let chunk = b":1\r\n".repeat(100_000);
        let mut fed = 0;
        let err = loop {
            d.feed(&chunk);
            fed += chunk.len();
            match d.next_value() {
                Ok(None) => assert!(fed * (ELEMENT_COST + 4) / 4 <= MAX_FRAME_BYTES),
                Ok(Some(v)) => panic!("{v:?}"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, DecodeError::TooLarge));
        // A huge count allocates nothing up front.
        assert!(decode_all(b"*9223372036854775807\r\n").unwrap().is_empty());
    }

    #[test]
    fn encodes_commands_as_bulk_string_arrays() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
        assert_eq!(
            decode_all(&out).unwrap(),
            vec![Value::Array(vec![b("SET"), b("k"), b("a\r\nb")])]
        );
        let mut same = Vec::new();
        Command::new("SET").arg("k").arg(b"a\r\nb".to_vec()).encode(&mut same);
        assert_eq!(same, out);
        let long = Command::new("X").arg(vec![b'a'; 1234]).arg("");
        let mut bytes = Vec::new();
        long.encode(&mut bytes);
        assert_eq!(long.encoded_len(), bytes.len());
        assert_eq!(Command::new("SET").arg("k").arg(b"a\r\nb".to_vec()).encoded_len(), out.len());
    }

    #[test]
    fn errors_read_as_one_line() {
        assert_eq!(DecodeError::TooLarge.to_string(), "a redis reply exceeds 64 MiB");
    }
}
