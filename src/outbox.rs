//! Outgoing WebSocket frames: encoded once (server frames are unmasked, so
//! the bytes are the same for every recipient) and queued per connection as
//! shared `Rc` chunks. The outbox is the only way to queue bytes for a
//! connection, and every byte passes one admission check: room traffic up to
//! the limit, control frames and last words from a small reserve above it.

use std::collections::VecDeque;
use std::rc::Rc;

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

/// An encoded frame, shareable between every connection that sends it.
pub type SharedFrame = Rc<[u8]>;

pub fn text_frame(payload: &str) -> SharedFrame {
    let header = FrameHeader { opcode: OpCode::Data(Data::Text), ..FrameHeader::default() };
    let len = payload.len() as u64;
    let mut buf = Vec::with_capacity(header.len(len) + payload.len());
    // Writing into a Vec cannot fail.
    header.format(len, &mut buf).expect("write to Vec");
    buf.extend_from_slice(payload.as_bytes());
    buf.into()
}

pub fn close_frame(code: u16, reason: &str) -> SharedFrame {
    // A close reason must fit a control frame (125 bytes with the code).
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = Frame::close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].to_owned().into(),
    }));
    let mut buf = Vec::with_capacity(frame.len());
    frame.format(&mut buf).expect("write to Vec");
    buf.into()
}

pub fn ping_frame() -> SharedFrame {
    let mut buf = Vec::with_capacity(2);
    Frame::ping(Vec::new()).format(&mut buf).expect("write to Vec");
    buf.into()
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))] // the Autobahn echo endpoint
pub fn binary_frame(payload: &[u8]) -> SharedFrame {
    let header = FrameHeader { opcode: OpCode::Data(Data::Binary), ..FrameHeader::default() };
    let len = payload.len() as u64;
    let mut buf = Vec::with_capacity(header.len(len) + payload.len());
    header.format(len, &mut buf).expect("write to Vec");
    buf.extend_from_slice(payload);
    buf.into()
}

/// Bytes above the limit kept for control frames and last words (pongs, an
/// `Error`, a Close): enough for a few of each, never more.
pub const RESERVE: usize = 4096;

/// The queue was over its byte limit: the reader is too slow.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

pub struct Outbox {
    chunks: VecDeque<SharedFrame>,
    /// Bytes of the front chunk already written.
    head: usize,
    /// Bytes queued and not yet written.
    queued: usize,
    limit: usize,
    /// Bytes written since the connection opened.
    written: u64,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox { chunks: VecDeque::new(), head: 0, queued: 0, limit, written: 0 }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A reload changed `max_outbound_bytes`.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Past this the connection's input is not read until the queue drains:
    /// a client that sends without reading costs at most this much output.
    pub fn high_water(&self) -> usize {
        (self.limit / 4).min(16 * 1024)
    }

    pub fn is_over_high_water(&self) -> bool {
        self.queued > self.high_water()
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues a frame unless that would pass the limit.
    pub fn push(&mut self, frame: &SharedFrame) -> Result<(), Overflow> {
        if self.queued + frame.len() > self.limit {
            return Err(Overflow);
        }
        self.push_unchecked(frame.clone());
        Ok(())
    }

    /// Queues a control frame or last words: up to the limit plus `RESERVE`.
    pub fn push_control(&mut self, frame: SharedFrame) -> Result<(), Overflow> {
        if self.queued + frame.len() > self.limit + RESERVE {
            return Err(Overflow);
        }
        self.push_unchecked(frame);
        Ok(())
    }

    /// Queues the answer to the opening HTTP request: the first bytes of a
    /// connection, our own and of bounded size (the page at most).
    pub fn push_response(&mut self, response: SharedFrame) {
        debug_assert!(self.is_empty());
        self.push_unchecked(response);
    }

    fn push_unchecked(&mut self, frame: SharedFrame) {
        self.queued += frame.len();
        self.chunks.push_back(frame);
    }

    /// Drops everything not yet started, keeping a partly written frame so
    /// that the stream stays well-formed.
    pub fn discard_unsent(&mut self) {
        let keep = usize::from(self.head > 0);
        while self.chunks.len() > keep {
            if let Some(chunk) = self.chunks.pop_back() {
                self.queued -= chunk.len();
            }
        }
    }

    /// The bytes for the next write: the front frame's unwritten bytes when
    /// it is alone, else as many queued bytes as fit `scratch`'s capacity,
    /// gathered there. The kernel copies one contiguous buffer much faster
    /// than a long iovec of small frames (measured in BENCHMARKS.md).
    pub fn next_write<'a>(&'a self, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let front = self.chunks.front().map_or(&[][..], |chunk| &chunk[self.head..]);
        if self.chunks.len() <= 1 {
            return front;
        }
        scratch.clear();
        let mut start = self.head;
        for chunk in &self.chunks {
            let room = scratch.capacity() - scratch.len();
            if room == 0 {
                break;
            }
            let bytes = &chunk[start..];
            scratch.extend_from_slice(&bytes[..bytes.len().min(room)]);
            start = 0;
        }
        scratch
    }

    /// Marks `n` bytes as written.
    pub fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        self.written += n as u64;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let rest = front.len() - self.head;
            if n < rest {
                self.head += n;
                return;
            }
            n -= rest;
            self.head = 0;
            self.chunks.pop_front();
        }
    }

    /// Bytes written since the connection opened.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Gives the queue's memory back while nothing is queued (called once a
    /// second, not after every write, to spare the allocator on busy links).
    pub fn release_if_empty(&mut self) {
        if self.chunks.is_empty() && self.chunks.capacity() > 0 {
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &mut Outbox, step: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut scratch = Vec::with_capacity(4);
        while !outbox.is_empty() {
            let bytes = outbox.next_write(&mut scratch);
            let n = step.min(bytes.len());
            all.extend_from_slice(&bytes[..n]);
            outbox.consume(n);
        }
        all
    }

    #[test]
    fn frames_are_unmasked_text_frames() {
        assert_eq!(&*text_frame("hi"), &[0x81, 2, b'h', b'i']);
        let long = "x".repeat(300);
        let frame = text_frame(&long);
        assert_eq!(&frame[..4], &[0x81, 126, 1, 44]);
        assert_eq!(frame.len(), 304);
        assert_eq!(&*close_frame(1001, "bye"), &[0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);
        assert_eq!(close_frame(1008, &"é".repeat(100)).len(), 2 + 2 + 122);
        assert_eq!(&*ping_frame(), &[0x89, 0]);
    }

    #[test]
    fn partial_writes_keep_order() {
        let mut outbox = Outbox::new(1000);
        let a = text_frame("first");
        let b = text_frame("second");
        outbox.push(&a).unwrap();
        outbox.push(&b).unwrap();
        let expected: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        assert_eq!(drain(&mut outbox, 3), expected);
        assert_eq!(outbox.queued(), 0);
    }

    #[test]
    fn limit_and_discard() {
        let mut outbox = Outbox::new(10);
        let frame = text_frame("1234"); // 6 bytes
        outbox.push(&frame).unwrap();
        assert_eq!(outbox.push(&frame), Err(Overflow));
        outbox.consume(2);
        outbox.push_control(frame.clone()).unwrap();
        outbox.discard_unsent();
        assert_eq!(outbox.queued(), 4, "the partly written frame stays");
        outbox.consume(4);
        outbox.push(&frame).unwrap();
        outbox.discard_unsent();
        assert!(outbox.is_empty());
    }

    #[test]
    fn control_frames_come_from_a_bounded_reserve() {
        let mut outbox = Outbox::new(4096);
        let big = text_frame(&"x".repeat(4000));
        outbox.push(&big).unwrap();
        assert_eq!(outbox.push(&big), Err(Overflow), "room traffic stops at the limit");
        let pong: SharedFrame = Rc::from(&[0x8A, 0][..]);
        let mut taken = 0;
        while outbox.push_control(pong.clone()).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, (4096 - big.len() + RESERVE) / 2);
        assert!(outbox.queued() <= 4096 + RESERVE);
        assert!(outbox.is_over_high_water());
        assert_eq!(&*binary_frame(&[1, 2]), &[0x82, 2, 1, 2]);
    }
}
