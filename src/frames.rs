//! The client's WebSocket frames as they arrive, seen from their headers
//! only: every byte tungstenite reads passes through here first, so that
//! the fragments of a message (which tungstenite keeps to itself) can be
//! charged, and an unfinished message given a deadline.

use std::time::Instant;

/// Where the scan is in the byte stream.
#[derive(Debug)]
enum Part {
    /// Collecting a header (2 to 14 bytes).
    Header { bytes: [u8; 14], have: usize },
    /// Skipping a frame's payload; `ends`: this frame completes a message
    /// (a control frame, or a data frame with FIN set).
    Payload { left: u64, ends: bool, data: bool },
}

#[derive(Debug)]
pub struct FrameScan {
    part: Part,
    /// Fragments (data frames that do not end their message) whose header
    /// arrived since the last `take_fragments`.
    fragments: u32,
    /// Messages completed (control frames count as one each): what
    /// tungstenite can have returned so far.
    completed: u64,
    /// Since when a data message is under way (from its first header to
    /// the end of its last frame).
    unfinished_since: Option<Instant>,
    /// The largest frame since `restarted`.
    largest: u64,
}

impl Default for FrameScan {
    fn default() -> Self {
        FrameScan {
            part: Part::Header { bytes: [0; 14], have: 0 },
            fragments: 0,
            completed: 0,
            unfinished_since: None,
            largest: 0,
        }
    }
}

/// A header's length, known from its second byte.
fn header_len(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if second & 0x80 != 0 { 4 } else { 0 }
}

impl FrameScan {
    /// Bytes the client sent, in order, as they are read.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            match &mut self.part {
                Part::Header { bytes: header, have } => {
                    header[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    if *have >= 2 && *have == header_len(header[1]) {
                        let (first, second) = (header[0], header[1]);
                        let len = match second & 0x7f {
                            126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
                            127 => u64::from_be_bytes(header[2..10].try_into().unwrap_or([0; 8])),
                            n => u64::from(n),
                        };
                        self.on_header(first, len, now);
                    }
                }
                Part::Payload { left, ends, data } => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        let (ends, data) = (*ends, *data);
                        self.frame_done(ends, data);
                    }
                }
            }
        }
    }

    fn on_header(&mut self, first: u8, len: u64, now: Instant) {
        let (fin, control) = (first & 0x80 != 0, first & 0x08 != 0);
        if !fin && !control {
            self.fragments = self.fragments.saturating_add(1);
        }
        self.largest = self.largest.max(len);
        if !control && self.unfinished_since.is_none() {
            self.unfinished_since = Some(now);
        }
        let (ends, data) = (fin || control, !control);
        self.part = Part::Payload { left: len, ends, data };
        if len == 0 {
            self.frame_done(ends, data);
        }
    }

    fn frame_done(&mut self, ends: bool, data: bool) {
        if ends {
            self.completed += 1;
            if data {
                self.unfinished_since = None;
            }
        }
        self.part = Part::Header { bytes: [0; 14], have: 0 };
    }

    /// The fragments that started since the last call (each costs a
    /// token, like the message they end in).
    pub fn take_fragments(&mut self) -> u32 {
        std::mem::take(&mut self.fragments)
    }

    /// Fragments seen and not yet taken.
    pub fn fragments(&self) -> u32 {
        self.fragments
    }

    /// Since when a message has been under way, if one is.
    pub fn unfinished_since(&self) -> Option<Instant> {
        self.unfinished_since
    }

    /// Whether the reader holds nothing of the client's but a large buffer:
    /// `returned` messages came out of it, which are all the scan has seen
    /// complete, no frame is under way, and one was over `small` bytes.
    pub fn idle_after_large(&self, returned: u64, small: u64) -> bool {
        let between = matches!(self.part, Part::Header { have: 0, .. });
        between
            && self.unfinished_since.is_none()
            && returned == self.completed
            && self.largest > small
    }

    /// The reader was replaced by a fresh one.
    pub fn restarted(&mut self) {
        self.largest = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        ragnarok_testkit::client_frame(fin, opcode, &vec![b'x'; len])
    }

    #[test]
    fn counts_frames_and_messages_whatever_the_chunks() {
        let mut stream = frame(false, 0x1, 70_000);
        stream.extend(frame(true, 0x9, 3)); // a ping between fragments
        stream.extend(frame(false, 0x0, 0));
        stream.extend(frame(true, 0x0, 200));
        stream.extend(frame(true, 0x2, 0));
        let now = Instant::now();
        for chunk in [1, 2, 7, 1000, stream.len()] {
            let mut scan = FrameScan::default();
            let mut unfinished = Vec::new();
            for piece in stream.chunks(chunk) {
                scan.feed(piece, now);
                unfinished.push(scan.unfinished_since().is_some());
            }
            // The first two frames of the text.
            assert_eq!(scan.take_fragments(), 2);
            assert_eq!(scan.fragments(), 0);
            // The ping, the fragmented text, the empty binary.
            assert_eq!(scan.completed, 3);
            assert_eq!(scan.unfinished_since(), None);
            assert!(scan.idle_after_large(3, 65_536));
            assert!(!scan.idle_after_large(2, 65_536), "tungstenite has one to return");
            if chunk < stream.len() {
                assert!(unfinished.contains(&true), "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn half_a_frame_is_unfinished() {
        let now = Instant::now();
        let mut scan = FrameScan::default();
        let whole = frame(true, 0x1, 60_000);
        scan.feed(&whole[..100], now);
        assert_eq!(scan.unfinished_since(), Some(now));
        assert!(!scan.idle_after_large(0, 1024));
        scan.feed(&whole[100..], now);
        assert_eq!(scan.unfinished_since(), None);
        assert!(scan.idle_after_large(1, 1024));
        scan.restarted();
        assert!(!scan.idle_after_large(1, 1024), "nothing large since");
    }

    #[test]
    fn a_split_header_is_waited_for() {
        let now = Instant::now();
        let mut scan = FrameScan::default();
        let f = frame(true, 0x1, 300); // 2 + 2 + 4 header bytes
        scan.feed(&f[..3], now);
        assert_eq!(scan.completed, 0);
        assert!(!scan.idle_after_large(0, 0), "a header is under way");
        scan.feed(&f[3..], now);
        assert_eq!((scan.fragments(), scan.completed), (0, 1));
    }

    #[test]
    fn absurd_lengths_do_not_panic() {
        let mut scan = FrameScan::default();
        let mut f = vec![0x81, 0xff];
        f.extend_from_slice(&u64::MAX.to_be_bytes());
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&[7; 100]);
        scan.feed(&f, Instant::now());
        assert_eq!((scan.fragments(), scan.completed), (0, 0));
        assert!(scan.unfinished_since().is_some());
    }
}
