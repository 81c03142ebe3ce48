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
    message_since: Option<Instant>,
    /// Since when the current frame is under way (from its first header
    /// byte to its last payload byte): a control frame or half a header
    /// is unfinished too.
    frame_since: Option<Instant>,
    /// The largest frame since `restarted`.
    largest: u64,
}

impl Default for FrameScan {
    fn default() -> Self {
        FrameScan {
            part: Part::Header { bytes: [0; 14], have: 0 },
            fragments: 0,
            completed: 0,
            message_since: None,
            frame_since: None,
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
                    if *have == 0 {
                        self.frame_since = Some(now);
                    }
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
        if !control && self.message_since.is_none() {
            self.message_since = Some(now);
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
                self.message_since = None;
            }
        }
        self.frame_since = None;
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

    /// Since when a message, or any frame, has been under way, if one is.
    pub fn unfinished_since(&self) -> Option<Instant> {
        match (self.message_since, self.frame_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reading was paused for `by` (the server, not the client, held it
    /// up): the clocks of what is under way stop meanwhile.
    pub fn postpone(&mut self, by: std::time::Duration) {
        for since in [&mut self.message_since, &mut self.frame_since].into_iter().flatten() {
            *since += by;
        }
    }

    /// What the reader holds of the client's if it holds nothing but a
    /// large buffer and at most the first bytes of a header: `returned`
    /// messages came out of it, which are all the scan has seen complete,
    /// no message or payload is under way, and a frame was over `small`
    /// bytes. A fresh reader given those bytes is the same reader.
    pub fn idle_after_large(&self, returned: u64, small: u64) -> Option<&[u8]> {
        let Part::Header { bytes, have } = &self.part else { return None };
        let idle = self.message_since.is_none() && returned == self.completed;
        (idle && self.largest > small).then(|| &bytes[..*have])
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
            assert_eq!(scan.idle_after_large(3, 65_536), Some(&[][..]));
            assert_eq!(scan.idle_after_large(2, 65_536), None, "tungstenite has one to return");
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
        assert_eq!(scan.idle_after_large(0, 1024), None);
        scan.feed(&whole[100..], now);
        assert_eq!(scan.unfinished_since(), None);
        assert_eq!(scan.idle_after_large(1, 1024), Some(&[][..]));
        scan.restarted();
        assert_eq!(scan.idle_after_large(1, 1024), None, "nothing large since");
    }

    #[test]
    fn a_split_header_is_waited_for() {
        let now = Instant::now();
        let mut scan = FrameScan::default();
        let f = frame(true, 0x1, 300); // 2 + 2 + 4 header bytes
        scan.feed(&frame(true, 0x1, 5000), now);
        scan.feed(&f[..3], now);
        assert_eq!(scan.completed, 1);
        assert_eq!(scan.idle_after_large(1, 4096), Some(&f[..3]), "only half a header is held");
        assert_eq!(scan.unfinished_since(), Some(now), "half a header is unfinished too");
        scan.feed(&f[3..], now);
        assert_eq!((scan.fragments(), scan.completed), (0, 2));
    }

    #[test]
    fn a_control_frame_under_way_is_unfinished_and_the_clock_can_wait() {
        let now = Instant::now();
        let mut scan = FrameScan::default();
        let ping = frame(true, 0x9, 125);
        scan.feed(&ping[..10], now);
        assert_eq!(scan.unfinished_since(), Some(now));
        assert_eq!(scan.idle_after_large(0, 0), None, "a payload is under way");
        scan.postpone(std::time::Duration::from_secs(3));
        assert_eq!(scan.unfinished_since(), Some(now + std::time::Duration::from_secs(3)));
        scan.feed(&ping[10..], now);
        assert_eq!((scan.unfinished_since(), scan.completed), (None, 1));
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
