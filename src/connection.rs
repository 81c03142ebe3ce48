//! One client connection as the event loop sees it: its transport, the
//! opening HTTP request, WebSocket framing and its outbox, through the states
//! handshaking → open → closing. It knows nothing of the chat: messages go
//! up to the session (`session.rs`), frames to send come down as bytes.

use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::debug;
use mio::Interest;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use crate::addresses::Peer;
use crate::frames::FrameScan;
use crate::http::{self, HttpPolicy, Parsed};
use crate::outbox::{self, Outbox, Overflow, SharedFrame};
use crate::protocol::{ErrorCode, Rejection, close_code};
use crate::transport::{Flushed, Socket, Transport};

/// How long a closing connection may take to flush and hear the peer close.
const LINGER: Duration = Duration::from_secs(2);
/// What a closing connection reads and throws away (waiting for the peer's
/// Close) before it gives up on a peer that keeps sending.
const DISCARD_LIMIT: usize = 64 * 1024;
/// Largest frame before login: a password or a name, not `max_message_bytes`.
pub const LOGIN_FRAME_BYTES: usize = 4096;
/// tungstenite's read buffer per connection (its default is 128 KiB). It is
/// allocated for every connection: 1 KiB keeps an idle user near 1.5 KiB of
/// RSS (4 KiB gave 4.5 KiB), at the price of more reads for large messages.
const WS_READ_BUFFER: usize = 1024;
/// After a message over this size, tungstenite's reader (which keeps its
/// buffer at the largest frame it read) is replaced by a fresh one as soon
/// as it holds nothing of the client's.
const SHRINK_AFTER: u64 = 4 * WS_READ_BUFFER as u64;
/// Fragments read in one turn before the session is charged for them: a
/// stream of empty continuation frames cannot keep the reader busy for free.
const FRAGMENTS_PER_TURN: u32 = 16;

/// The WebSocket settings every connection starts with: small frames until
/// login (`allow_messages` raises the limit), tungstenite's own write
/// buffer unused (frames go to our outbox).
pub fn login_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(LOGIN_FRAME_BYTES))
        .max_frame_size(Some(LOGIN_FRAME_BYTES))
}

/// What one read produced.
#[derive(Debug)]
pub enum Input {
    /// The upgrade was answered: the WebSocket is open.
    Opened,
    /// A complete WebSocket message (Close is handled here, not passed on).
    Message(Message),
    /// Did some work; read again.
    Progress,
    /// Nothing to read now (or output is over the high-water mark).
    Idle,
    /// The WebSocket ended (the peer closed it, broke the protocol, or
    /// sent too much); what was owed to it is queued. `why` is for the
    /// log; `refused`: the `Error` it was sent; `dropped`: no goodbye
    /// (the link broke, or a Close other than 1000).
    Ended { why: String, refused: Option<ErrorCode>, dropped: bool },
    /// Closed both ways or dead: remove the connection.
    Finished,
}

/// What a flush left behind.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Still open; `resume`: reading was paused for output and may go on.
    Open { resume: bool },
    /// Closed both ways or dead: remove the connection.
    Finished,
}

enum State {
    /// TLS handshake (inside the transport) and the HTTP request.
    Handshaking { request: Vec<u8> },
    Open {
        ws: Box<WebSocketContext>,
        /// What the client's frames are, seen before tungstenite reads them.
        scan: FrameScan,
        /// Messages tungstenite returned (control frames included).
        returned: u64,
    },
    /// Our last frames are flushing; then we half-close and wait for the
    /// peer to close, so that nothing we sent is lost to a TCP reset.
    Closing {
        deadline: Instant,
        write_closed: bool,
        peer_closed: bool,
        /// Bytes read and thrown away since closing began.
        discarded: usize,
    },
}

pub struct Connection<S> {
    transport: Transport<S>,
    outbox: Outbox,
    state: State,
    /// The client's address (the proxy's, until a trusted proxy names it).
    pub peer: Peer,
    opened: Instant,
    last_heard: Instant,
    /// The last flush left output the socket would not take.
    write_blocked: bool,
    /// A read stopped because output was over the high-water mark.
    read_paused: bool,
    /// Since when (as the ticks saw it) output has been over the
    /// high-water mark, so that we do not read: the client's message clock
    /// stops meanwhile.
    clock_stopped: Option<Instant>,
    /// What the poller was last asked to report.
    pub registered: Interest,
    /// Already on the event loop's list of connections to flush this round.
    pub flush_scheduled: bool,
}

impl<S: Socket> Connection<S> {
    pub fn new(transport: Transport<S>, peer: Peer, outbound_limit: usize, now: Instant) -> Self {
        Connection {
            transport,
            outbox: Outbox::new(outbound_limit),
            state: State::Handshaking { request: Vec::new() },
            peer,
            opened: now,
            last_heard: now,
            write_blocked: false,
            read_paused: false,
            clock_stopped: None,
            registered: Interest::READABLE,
            flush_scheduled: false,
        }
    }

    pub fn socket(&mut self) -> &mut S {
        self.transport.socket()
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing { .. })
    }

    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// The fragments that arrived since the last call (frames of a message
    /// that are not its last): each costs the session a token, as each
    /// message does.
    pub fn take_fragments(&mut self) -> u32 {
        match &mut self.state {
            State::Open { scan, .. } => scan.take_fragments(),
            _ => 0,
        }
    }

    /// Since when the client has left a message (or a frame) unfinished,
    /// if it has, as the ticks see it (`now`): the clock stops while we do
    /// not read from it (output over the high-water mark) and runs on from
    /// where it was once we do.
    pub fn unfinished_since(&mut self, now: Instant) -> Option<Instant> {
        let State::Open { scan, .. } = &mut self.state else { return None };
        if self.outbox.is_over_high_water() {
            self.clock_stopped.get_or_insert(now);
            return None;
        }
        if let Some(since) = self.clock_stopped.take() {
            scan.postpone(now.saturating_duration_since(since));
        }
        scan.unfinished_since()
    }

    /// Bytes received (after TLS) and sent (before TLS), for the metrics.
    pub fn traffic(&self) -> (u64, u64) {
        (self.transport.received(), self.outbox.written())
    }

    /// Still in the TLS or HTTP handshake.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshaking { .. })
    }

    pub fn queued(&self) -> usize {
        self.outbox.queued()
    }

    /// Queues a frame of room traffic; `Overflow` means this reader fell
    /// too far behind. Frames for a connection that is not open are dropped.
    pub fn send(&mut self, frame: &SharedFrame) -> Result<(), Overflow> {
        match self.state {
            State::Open { .. } => self.outbox.push(frame),
            _ => Ok(()),
        }
    }

    /// Queues a control frame or an `Error` from the reserve above the
    /// limit; past it the connection is cut off without another byte.
    pub fn send_control(&mut self, frame: SharedFrame, now: Instant) {
        if !self.is_open() {
            return;
        }
        if self.outbox.push_control(frame).is_err() {
            debug!("{}: output over limit and reserve, cut off", self.peer);
            self.outbox.discard_unsent();
            self.start_closing(now);
        }
    }

    pub fn send_error(&mut self, why: &Rejection, now: Instant) {
        self.send_control(outbox::text_frame(&why.to_json()), now);
    }

    /// The session logged in: messages up to `max_bytes` from now on.
    pub fn allow_messages(&mut self, max_bytes: usize) {
        if let State::Open { ws, .. } = &mut self.state {
            ws.set_config(|c| {
                c.max_message_size = Some(max_bytes);
                c.max_frame_size = Some(max_bytes);
            });
        }
    }

    /// A reload: `max_outbound_bytes` for a connection not in the room yet
    /// (its queue holds a few small replies at most).
    pub fn set_outbound_limit(&mut self, limit: usize) {
        self.outbox.set_limit(limit);
    }

    /// A reload, for a user in the room: a larger `max_message_bytes` or
    /// `max_outbound_bytes` is taken, a smaller one is not (it would cut off
    /// a user who did nothing wrong, or whose page was told the old limit;
    /// it applies from their next login).
    pub fn raise_limits(&mut self, max_message_bytes: usize, max_outbound_bytes: usize) {
        self.outbox.set_limit(self.outbox.limit().max(max_outbound_bytes));
        if let State::Open { ws, .. } = &mut self.state
            && ws.get_config().max_message_size.is_some_and(|now| now < max_message_bytes)
        {
            ws.set_config(|c| {
                c.max_message_size = Some(max_message_bytes);
                c.max_frame_size = Some(max_message_bytes);
            });
        }
    }

    /// The socket reported readable (`hung_up`: and the peer's end of stream).
    pub fn on_readable(&mut self, hung_up: bool) {
        self.transport.on_readable(hung_up);
    }

    /// Reads and handles at most one message.
    pub fn read(&mut self, now: Instant, http: &HttpPolicy) -> Input {
        match &mut self.state {
            State::Handshaking { request } => {
                let mut buf = [0u8; 2048];
                match self.transport.read(&mut buf) {
                    Ok(0) => Input::Finished,
                    Ok(n) => {
                        request.extend_from_slice(&buf[..n]);
                        self.on_request(now, http)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Input::Idle,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Input::Progress,
                    Err(_) if self.transport.got_plain_http() => {
                        debug!("{}: plain HTTP on the TLS port", self.peer);
                        self.outbox.push_response(http::plain_http_on_tls_port().into());
                        self.start_closing(now);
                        Input::Progress
                    }
                    Err(e) => {
                        debug!("{}: handshake failed: {e}", self.peer);
                        Input::Finished
                    }
                }
            }
            State::Open { .. } if self.outbox.is_over_high_water() => {
                self.read_paused = true;
                Input::Idle
            }
            State::Open { ws, scan, returned } => {
                let mut io =
                    Io { transport: &mut self.transport, outbox: &mut self.outbox, scan, now };
                match ws.read(&mut io) {
                    Ok(Message::Close(frame)) => {
                        // tungstenite queued the reply; move it into our outbox.
                        let _ = ws.flush(&mut io);
                        self.start_closing(now);
                        let code = frame.map(|f| u16::from(f.code));
                        let why = match code {
                            Some(code) => format!("closed ({code})"),
                            None => "closed".into(),
                        };
                        let dropped = code != Some(close_code::NORMAL);
                        Input::Ended { why, refused: None, dropped }
                    }
                    Ok(message) => {
                        *returned += 1;
                        let held =
                            io.scan.idle_after_large(*returned, SHRINK_AFTER).map(<[u8]>::to_vec);
                        if let Some(held) = held.filter(|_| ws.flush(&mut io).is_ok()) {
                            // Nothing but a header's first bytes buffered, no
                            // pong pending: a fresh reader with those bytes
                            // instead of one holding the largest frame's buffer.
                            let config = *ws.get_config();
                            **ws = WebSocketContext::from_partially_read(
                                held,
                                Role::Server,
                                Some(config),
                            );
                            io.scan.restarted();
                        }
                        self.last_heard = now;
                        Input::Message(message)
                    }
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        if io.scan.fragments() >= FRAGMENTS_PER_TURN {
                            Input::Progress
                        } else {
                            Input::Idle
                        }
                    }
                    Err(e) => self.on_ws_error(e, now),
                }
            }
            State::Closing { peer_closed: true, .. } => Input::Idle,
            State::Closing { write_closed: true, discarded, .. } if *discarded > DISCARD_LIMIT => {
                // It keeps sending after our Close: our last words are out;
                // reading on would only cost us.
                Input::Finished
            }
            State::Closing { write_closed, peer_closed, discarded, .. } => {
                match self.transport.discard_input(discarded, DISCARD_LIMIT) {
                    Ok(false) => Input::Idle,
                    Ok(true) if !*write_closed => {
                        *peer_closed = true;
                        Input::Idle
                    }
                    Ok(true) | Err(_) => Input::Finished,
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, policy: &HttpPolicy) -> Input {
        let State::Handshaking { request } = &mut self.state else {
            return Input::Progress;
        };
        let from_proxy = !self.peer.is_proxied() && policy.trusts(self.peer.ip);
        match http::parse(request, policy, from_proxy) {
            Parsed::Incomplete => Input::Progress,
            Parsed::Upgrade { response, head_len, client } => {
                if let Some(ip) = client {
                    debug!("{}: proxied for {ip}", self.peer);
                    self.peer = Peer::proxied(ip);
                }
                let rest = request.split_off(head_len);
                self.outbox.push_response(response.into());
                let mut scan = FrameScan::default();
                scan.feed(&rest, now);
                let ws = WebSocketContext::from_partially_read(
                    rest,
                    Role::Server,
                    Some(login_ws_config()),
                );
                self.state = State::Open { ws: Box::new(ws), scan, returned: 0 };
                Input::Opened
            }
            Parsed::Respond { response, status } => {
                debug!("{}: HTTP request answered with {status}", self.peer);
                self.outbox.push_response(response.into());
                self.start_closing(now);
                Input::Progress
            }
        }
    }

    fn on_ws_error(&mut self, error: WsError, now: Instant) -> Input {
        use tungstenite::error::{CapacityError, ProtocolError};
        let (code, reason, why) = match error {
            WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                self.start_closing(now);
                return Input::Ended {
                    why: "connection lost".into(),
                    refused: None,
                    dropped: true,
                };
            }
            WsError::Io(e) => {
                self.start_closing(now);
                let why = format!("connection lost: {e}");
                return Input::Ended { why, refused: None, dropped: true };
            }
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                let text = format!("message of {size} bytes is over the limit of {max_size} bytes");
                let why = Rejection::new(ErrorCode::MessageTooBig, text);
                self.close(close_code::TOO_BIG, "message too big", Some(&why), now);
                let why = format!("message of {size} bytes over the {max_size} limit");
                return Input::Ended {
                    why,
                    refused: Some(ErrorCode::MessageTooBig),
                    dropped: false,
                };
            }
            WsError::Utf8(_) => (close_code::INVALID_DATA, "invalid UTF-8 in a text frame", None),
            WsError::Protocol(e) => {
                let reason = format!("WebSocket protocol error: {e}");
                self.close(close_code::PROTOCOL_ERROR, &reason, None, now);
                return Input::Ended { why: reason, refused: None, dropped: false };
            }
            e => {
                let reason = format!("internal error: {e}");
                self.close(close_code::INTERNAL_ERROR, "internal error", None, now);
                return Input::Ended { why: reason, refused: None, dropped: false };
            }
        };
        self.close(code, reason, why.as_ref(), now);
        Input::Ended { why: reason.to_owned(), refused: None, dropped: false }
    }

    /// Queues an optional `Error` and a Close frame, and starts closing.
    pub fn close(&mut self, code: u16, reason: &str, why: Option<&Rejection>, now: Instant) {
        if let Some(why) = why {
            self.send_error(why, now);
        }
        self.send_control(outbox::close_frame(code, reason), now);
        self.start_closing(now);
    }

    /// Cuts off a reader whose queue passed its limit: what was not started
    /// is dropped, and it is told why.
    pub fn cut_off(&mut self, now: Instant) {
        self.outbox.discard_unsent();
        let why = Rejection::new(
            ErrorCode::SlowReader,
            "you fell too far behind reading messages and were disconnected",
        );
        self.close(close_code::POLICY, "too slow", Some(&why), now);
    }

    fn start_closing(&mut self, now: Instant) {
        if !matches!(self.state, State::Closing { .. }) {
            self.state = State::Closing {
                deadline: now + LINGER,
                write_closed: false,
                peer_closed: false,
                discarded: 0,
            };
        }
    }

    /// Server shutdown: Close 1001 to the open; `false` for a connection
    /// that had not opened yet (just drop it).
    pub fn shut_down(&mut self, now: Instant) -> bool {
        match self.state {
            State::Handshaking { .. } => false,
            State::Open { .. } => {
                self.close(close_code::GOING_AWAY, "server shutting down", None, now);
                true
            }
            State::Closing { .. } => true,
        }
    }

    /// The connection's own timers: `true` when it should be removed (the
    /// handshake took too long, or closing did).
    pub fn expired(&mut self, now: Instant, handshake_timeout: Duration) -> bool {
        self.outbox.release_if_empty();
        match self.state {
            State::Handshaking { .. } => {
                now.saturating_duration_since(self.opened) >= handshake_timeout
            }
            State::Closing { deadline, .. } => now >= deadline,
            State::Open { .. } => false,
        }
    }

    /// Writes what is queued (`scratch`: see `Transport::flush`).
    pub fn flush(&mut self, scratch: &mut Vec<u8>) -> Flush {
        self.flush_scheduled = false;
        let flushed = match self.transport.flush(&mut self.outbox, scratch) {
            Ok(flushed) => flushed,
            Err(e) => {
                debug!("{}: write failed: {e}", self.peer);
                return Flush::Finished;
            }
        };
        self.write_blocked = flushed == Flushed::Blocked;
        match &mut self.state {
            State::Closing { write_closed, peer_closed, discarded, .. }
                if flushed == Flushed::All =>
            {
                if !*write_closed {
                    self.transport.close_write();
                    *write_closed = true;
                }
                if *peer_closed || *discarded > DISCARD_LIMIT {
                    return Flush::Finished;
                }
            }
            State::Open { ws, scan, .. } if !self.write_blocked => {
                // A pong tungstenite held back while the outbox was full.
                let now = Instant::now();
                let mut io =
                    Io { transport: &mut self.transport, outbox: &mut self.outbox, scan, now };
                let _ = ws.flush(&mut io);
            }
            _ => {}
        }
        let resume = self.read_paused && !self.outbox.is_over_high_water();
        if resume {
            self.read_paused = false;
            self.transport.on_readable(false);
        }
        Flush::Open { resume }
    }

    /// What the poller should report: readable unless reading is paused for
    /// output, writable while output is stuck.
    pub fn wanted_interest(&self) -> Interest {
        let paused = matches!(self.state, State::Open { .. }) && self.outbox.is_over_high_water();
        match (paused, self.write_blocked) {
            (true, true) => Interest::WRITABLE,
            (false, true) => Interest::READABLE | Interest::WRITABLE,
            _ => Interest::READABLE,
        }
    }
}

/// tungstenite's view of a connection: reads come from the transport
/// through the frame scan (and stop, as WouldBlock, once a turn's
/// fragments are read); writes (pongs, close replies) go to our outbox from its
/// reserve; when that is full, WouldBlock, and tungstenite keeps one
/// pending pong.
struct Io<'a, S> {
    transport: &'a mut Transport<S>,
    outbox: &'a mut Outbox,
    scan: &'a mut FrameScan,
    now: Instant,
}

impl<S: Socket> Read for Io<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.scan.fragments() >= FRAGMENTS_PER_TURN {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.transport.read(buf)?;
        self.scan.feed(&buf[..n], self.now);
        Ok(n)
    }
}

impl<S: Socket> Write for Io<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.outbox.push_control(Rc::from(buf)) {
            Ok(()) => Ok(buf.len()),
            Err(Overflow) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
