//! One client connection: its transport, its queue of outgoing frames, and
//! its state (HTTP handshake → logging in → chatting → closing). It turns
//! WebSocket messages into room calls and room refusals into errors.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Interest, Registry, Token};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use crate::config::Limits;
use crate::http::{self, Parsed};
use crate::outbox::{self, Outbox, Overflow, SharedFrame};
use crate::protocol::{ErrorCode, Rejection, parse_request};
use crate::ratelimit::{TokenBucket, Verdict};
use crate::room::{ConnId, Outbound, Room};
use crate::transport::{Flushed, Transport};

/// How long a closing connection may take to flush and hear the peer close.
const LINGER: Duration = Duration::from_secs(2);

/// WebSocket close codes (RFC 6455, section 7.4.1).
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// What the event loop hands a connection along with each call.
pub struct Cx<'a> {
    pub room: &'a mut Room,
    pub out: &'a mut Vec<Outbound>,
    pub limits: &'a Limits,
    pub ws_config: WebSocketConfig,
    pub now: Instant,
}

/// The outcome of one step of work on a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Did something; there may be more to do (and output to flush).
    Progress,
    /// Nothing more until the next readiness event.
    Idle,
    /// Done: remove the connection.
    Finished,
}

enum State {
    /// TLS handshake (inside the transport) and the HTTP upgrade request.
    Handshaking { request: Vec<u8> },
    /// WebSocket open.
    Open { ws: Box<WebSocketContext>, session: Session },
    /// Our last frames are flushing; then we half-close and wait for the
    /// peer to close, so that nothing we sent is lost to a TCP reset.
    Closing { deadline: Instant, write_closed: bool, peer_closed: bool },
}

enum Session {
    AwaitingPassword,
    AwaitingName,
    Chatting { bucket: Option<TokenBucket>, ping_sent: Option<Instant> },
}

pub struct Connection {
    transport: Transport,
    outbox: Outbox,
    state: State,
    peer: SocketAddr,
    opened: Instant,
    last_heard: Instant,
    /// Registered for WRITABLE too (only while output is stuck).
    write_interest: bool,
    /// Already on the server's list of connections to flush this round.
    pub flush_scheduled: bool,
}

impl Connection {
    pub fn new(
        transport: Transport,
        peer: SocketAddr,
        outbound_limit: usize,
        now: Instant,
    ) -> Self {
        Connection {
            transport,
            outbox: Outbox::new(outbound_limit),
            state: State::Handshaking { request: Vec::new() },
            peer,
            opened: now,
            last_heard: now,
            write_interest: false,
            flush_scheduled: false,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn socket(&mut self) -> &mut mio::net::TcpStream {
        self.transport.socket()
    }

    pub fn is_chatting(&self) -> bool {
        matches!(self.state, State::Open { session: Session::Chatting { .. }, .. })
    }

    /// Queues a room message; `Overflow` means this reader fell too far behind.
    /// Frames for anyone not (or no longer) chatting are dropped.
    pub fn send(&mut self, frame: &SharedFrame) -> Result<(), Overflow> {
        if !self.is_chatting() {
            return Ok(());
        }
        self.outbox.push(frame)
    }

    /// The socket reported readable.
    pub fn on_readable(&mut self) {
        self.transport.on_readable();
    }

    /// Reads and handles at most one message.
    pub fn read_step(&mut self, id: ConnId, cx: &mut Cx) -> Step {
        match &mut self.state {
            State::Handshaking { request } => {
                let mut buf = [0u8; 2048];
                match self.transport.read(&mut buf) {
                    Ok(0) => Step::Finished,
                    Ok(n) => {
                        request.extend_from_slice(&buf[..n]);
                        self.on_request(cx)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Idle,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Progress,
                    Err(e) => {
                        info!("{}: handshake failed: {e}", self.peer);
                        Step::Finished
                    }
                }
            }
            State::Open { ws, .. } => {
                let mut io = Io { transport: &mut self.transport, outbox: &mut self.outbox };
                match ws.read(&mut io) {
                    Ok(message) => {
                        self.last_heard = cx.now;
                        self.on_message(id, message, cx)
                    }
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Step::Idle,
                    Err(e) => self.on_ws_error(id, e, cx),
                }
            }
            State::Closing { peer_closed: true, .. } => Step::Idle,
            State::Closing { write_closed, peer_closed, .. } => {
                match self.transport.discard_input() {
                    Ok(false) => Step::Idle,
                    Ok(true) if !*write_closed => {
                        *peer_closed = true;
                        Step::Idle
                    }
                    Ok(true) | Err(_) => Step::Finished,
                }
            }
        }
    }

    fn on_request(&mut self, cx: &mut Cx) -> Step {
        let State::Handshaking { request } = &mut self.state else {
            return Step::Progress;
        };
        match http::parse(request) {
            Parsed::Incomplete => Step::Progress,
            Parsed::Upgrade { response, head_len } => {
                let rest = request.split_off(head_len);
                self.outbox.push_always(response.into());
                let ws =
                    WebSocketContext::from_partially_read(rest, Role::Server, Some(cx.ws_config));
                debug!("{}: WebSocket open", self.peer);
                self.state = State::Open { ws: Box::new(ws), session: Session::AwaitingPassword };
                Step::Progress
            }
            Parsed::Respond { response, status } => {
                info!("{}: HTTP request answered with {status}", self.peer);
                self.outbox.push_always(response.into());
                self.state = State::Closing {
                    deadline: cx.now + LINGER,
                    write_closed: false,
                    peer_closed: false,
                };
                Step::Progress
            }
        }
    }

    fn on_message(&mut self, id: ConnId, message: Message, cx: &mut Cx) -> Step {
        let State::Open { ws, session } = &mut self.state else {
            return Step::Progress;
        };
        match (message, session) {
            (Message::Text(text), Session::AwaitingPassword) => {
                if cx.room.check_password(strip_line_end(&text)) {
                    self.set_session(Session::AwaitingName);
                    Step::Progress
                } else {
                    info!("{}: wrong password", self.peer);
                    let why = Rejection::new(ErrorCode::WrongPassword, "wrong password");
                    self.close(id, close_code::POLICY, "wrong password", Some(why), cx)
                }
            }
            (Message::Text(text), Session::AwaitingName) => {
                let name = strip_line_end(&text);
                match cx.room.join(id, name) {
                    Ok(()) => {
                        info!("{}: {name:?} logged in ({} online)", self.peer, cx.room.len());
                        let limits = cx.limits;
                        let bucket = (limits.rate_limit_per_sec > 0).then(|| {
                            TokenBucket::new(
                                limits.rate_limit_per_sec,
                                limits.rate_limit_burst,
                                cx.now,
                            )
                        });
                        self.set_session(Session::Chatting { bucket, ping_sent: None });
                        Step::Progress
                    }
                    Err(why) => {
                        info!("{}: login refused: {}", self.peer, why.text);
                        self.close(id, close_code::POLICY, "login refused", Some(why), cx)
                    }
                }
            }
            (Message::Text(text), Session::Chatting { bucket, ping_sent }) => {
                *ping_sent = None;
                match bucket.as_mut().map_or(Verdict::Allow, |b| b.take(cx.now)) {
                    Verdict::Allow => {}
                    Verdict::Refuse => {
                        info!("{}: over the rate limit, message refused", self.peer);
                        let why = Rejection::new(
                            ErrorCode::RateLimited,
                            "too many messages: this one was not delivered; slow down",
                        );
                        self.send_error(&why);
                        return Step::Progress;
                    }
                    Verdict::Flood => {
                        warn!("{}: flooding past the rate limit, disconnecting", self.peer);
                        let why = Rejection::new(
                            ErrorCode::RateLimited,
                            "kept flooding past the rate limit: disconnected",
                        );
                        return self.close(
                            id,
                            close_code::POLICY,
                            "rate limit exceeded",
                            Some(why),
                            cx,
                        );
                    }
                }
                match parse_request(&text) {
                    Ok(request) => cx.room.handle(id, request, cx.out),
                    Err(why) => {
                        info!("{}: refused a message: {}", self.peer, why.code.as_str());
                        self.send_error(&why);
                    }
                }
                Step::Progress
            }
            (Message::Binary(_), Session::Chatting { .. }) => {
                info!("{}: refused a binary frame", self.peer);
                self.send_error(&Rejection::new(
                    ErrorCode::BinaryUnsupported,
                    "binary frames are not supported: send JSON in text frames",
                ));
                Step::Progress
            }
            (Message::Binary(_), _) => {
                let why = Rejection::new(
                    ErrorCode::BinaryUnsupported,
                    "log in with two text frames: the password, then the username",
                );
                self.close(id, close_code::UNSUPPORTED_DATA, "text frames only", Some(why), cx)
            }
            (Message::Pong(_) | Message::Ping(_), Session::Chatting { ping_sent, .. }) => {
                *ping_sent = None;
                Step::Progress
            }
            (Message::Close(frame), _) => {
                debug!("{}: peer closed: {frame:?}", self.peer);
                // tungstenite queued the reply; move it into our outbox.
                let mut io = Io { transport: &mut self.transport, outbox: &mut self.outbox };
                let _ = ws.flush(&mut io);
                if let Some(name) = cx.room.leave(id) {
                    info!("{}: {name:?} left ({} online)", self.peer, cx.room.len());
                }
                self.state = State::Closing {
                    deadline: cx.now + LINGER,
                    write_closed: false,
                    peer_closed: false,
                };
                Step::Progress
            }
            _ => Step::Progress,
        }
    }

    fn on_ws_error(&mut self, id: ConnId, error: WsError, cx: &mut Cx) -> Step {
        use tungstenite::error::{CapacityError, ProtocolError};
        match error {
            WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Step::Finished,
            WsError::Io(e) => {
                debug!("{}: connection lost: {e}", self.peer);
                Step::Finished
            }
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                warn!("{}: message of {size} bytes over the {max_size} limit", self.peer);
                let why = Rejection::new(
                    ErrorCode::MessageTooBig,
                    format!("message of {size} bytes is over the limit of {max_size} bytes"),
                );
                self.close(id, close_code::TOO_BIG, "message too big", Some(why), cx)
            }
            WsError::Utf8(_) => {
                warn!("{}: text frame with invalid UTF-8", self.peer);
                self.close(id, close_code::INVALID_DATA, "invalid UTF-8 in a text frame", None, cx)
            }
            WsError::Protocol(e) => {
                warn!("{}: WebSocket protocol error: {e}", self.peer);
                self.close(id, close_code::PROTOCOL_ERROR, &e.to_string(), None, cx)
            }
            e => {
                warn!("{}: {e}", self.peer);
                self.close(id, close_code::INTERNAL_ERROR, "internal error", None, cx)
            }
        }
    }

    fn set_session(&mut self, next: Session) {
        if let State::Open { session, .. } = &mut self.state {
            *session = next;
        }
    }

    fn send_error(&mut self, why: &Rejection) {
        self.outbox.push_always(outbox::text_frame(&why.to_json()));
    }

    /// Leaves the room, queues an optional `Error` and a Close frame, and
    /// starts closing.
    fn close(
        &mut self,
        id: ConnId,
        code: u16,
        reason: &str,
        why: Option<Rejection>,
        cx: &mut Cx,
    ) -> Step {
        if let Some(name) = cx.room.leave(id) {
            info!("{}: {name:?} disconnected: {reason} ({} online)", self.peer, cx.room.len());
        }
        if let State::Open { .. } = self.state {
            if let Some(why) = why {
                self.send_error(&why);
            }
            self.outbox.push_always(outbox::close_frame(code, reason));
        }
        if !matches!(self.state, State::Closing { .. }) {
            self.state = State::Closing {
                deadline: cx.now + LINGER,
                write_closed: false,
                peer_closed: false,
            };
        }
        Step::Progress
    }

    /// Cuts off a reader whose queue passed `max_outbound_bytes`.
    pub fn cut_off(&mut self, id: ConnId, cx: &mut Cx) {
        if !self.is_chatting() {
            return;
        }
        warn!(
            "{}: slow reader over {} queued bytes, disconnecting",
            self.peer,
            self.outbox.queued()
        );
        self.outbox.discard_unsent();
        let why = Rejection::new(
            ErrorCode::SlowReader,
            "you fell too far behind reading messages and were disconnected",
        );
        self.close(id, close_code::POLICY, "too slow", Some(why), cx);
    }

    /// Server shutdown: Close 1001 to the open, drop the rest.
    pub fn shut_down(&mut self, id: ConnId, cx: &mut Cx) -> Step {
        match self.state {
            State::Handshaking { .. } => Step::Finished,
            State::Open { .. } => {
                self.close(id, close_code::GOING_AWAY, "server shutting down", None, cx)
            }
            State::Closing { .. } => Step::Progress,
        }
    }

    /// Timeouts and keep-alive pings, checked about once a second.
    pub fn tick(&mut self, id: ConnId, cx: &mut Cx) -> Step {
        self.outbox.release_if_empty();
        let now = cx.now;
        let login_late = now.saturating_duration_since(self.opened) >= cx.limits.handshake_timeout;
        match &mut self.state {
            State::Handshaking { .. } if login_late => {
                info!("{}: handshake timeout", self.peer);
                Step::Finished
            }
            State::Open { session: Session::AwaitingPassword | Session::AwaitingName, .. }
                if login_late =>
            {
                info!("{}: login timeout", self.peer);
                let why = Rejection::new(ErrorCode::LoginTimeout, "login took too long");
                self.close(id, close_code::POLICY, "login timeout", Some(why), cx)
            }
            State::Open { session: Session::Chatting { ping_sent, .. }, .. } => {
                let Some(idle) = cx.limits.idle_timeout else {
                    return Step::Idle;
                };
                match *ping_sent {
                    None if now.saturating_duration_since(self.last_heard) >= idle => {
                        self.outbox.push_always(outbox::ping_frame());
                        *ping_sent = Some(now);
                        Step::Progress
                    }
                    Some(sent) if now.saturating_duration_since(sent) >= idle => {
                        info!("{}: no answer to ping, disconnecting", self.peer);
                        self.close(id, close_code::GOING_AWAY, "idle timeout", None, cx)
                    }
                    _ => Step::Idle,
                }
            }
            State::Closing { deadline, .. } if now >= *deadline => Step::Finished,
            _ => Step::Idle,
        }
    }

    /// Writes what is queued (`scratch`: see `Transport::flush`). `false`
    /// when the connection is finished (closed both ways) or dead.
    pub fn flush(&mut self, registry: &Registry, token: Token, scratch: &mut Vec<u8>) -> bool {
        self.flush_scheduled = false;
        let flushed = match self.transport.flush(&mut self.outbox, scratch) {
            Ok(flushed) => flushed,
            Err(e) => {
                debug!("{}: write failed: {e}", self.peer);
                return false;
            }
        };
        if let (Flushed::All, State::Closing { write_closed, peer_closed, .. }) =
            (&flushed, &mut self.state)
        {
            if !*write_closed {
                self.transport.close_write();
                *write_closed = true;
            }
            if *peer_closed {
                return false;
            }
        }
        let want_write = flushed == Flushed::Blocked;
        if want_write != self.write_interest {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry.reregister(self.transport.socket(), token, interest).is_err() {
                return false;
            }
            self.write_interest = want_write;
        }
        true
    }
}

/// Strips one trailing `\n` or `\r\n`, as line-based clients send.
fn strip_line_end(s: &str) -> &str {
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.strip_suffix('\r').unwrap_or(s)
}

/// tungstenite's view of a connection: reads come from the transport,
/// writes (pongs, close replies) go to the end of our outbox.
struct Io<'a> {
    transport: &'a mut Transport,
    outbox: &'a mut Outbox,
}

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.transport.read(buf)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push_always(Rc::from(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_one_line_ending() {
        use super::strip_line_end;
        assert_eq!(strip_line_end("963\n"), "963");
        assert_eq!(strip_line_end("963\r\n"), "963");
        assert_eq!(strip_line_end("963\n\n"), "963\n");
        assert_eq!(strip_line_end("963"), "963");
    }
}
