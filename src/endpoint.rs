//! A small local listener on the event loop's poll where each connection
//! sends one request and gets one answer: the health and metrics listener
//! (TCP) and the control socket of `ragnarok ctl` (Unix) are both one. An
//! answer may come later than the request (`hold`, `answer_held`): a
//! `ctl` action in a cluster is answered once it has come back from Redis.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::drain::{self, Drained};

/// Requests open at once on the listener (a local scraper, a watchdog or an
/// operator opens one or two); each holds at most its request and its
/// answer. When all are taken, a new connection closes the oldest request
/// that has not sent all of it yet (idle sockets cannot keep `/healthz` from
/// answering); only when every one is being answered is it dropped.
const MAX_REQUESTS: usize = 16;
/// How long a request may take to arrive (local clients send it with the
/// connection), and to be answered in all.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A listening socket whose connections an [`Endpoint`] serves.
pub trait Listener: Source {
    type Stream: Read + Write + Source;
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().map(|(socket, _)| socket)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().map(|(socket, _)| socket)
    }
}

/// The listener and the requests in progress on it, served on the event
/// loop's poll (tokens from `first_token` on).
pub struct Endpoint<L: Listener> {
    listener: L,
    requests: Slab<Request<L::Stream>>,
}

struct Request<S> {
    socket: S,
    received: Vec<u8>,
    /// The answer and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
    /// Complete, its answer to come (`answer_held`) under this ticket.
    held: Option<u64>,
    opened: Instant,
}

impl<L: Listener> Endpoint<L> {
    pub fn new(mut listener: L, registry: &Registry, token: Token) -> io::Result<Self> {
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(Endpoint { listener, requests: Slab::new() })
    }

    pub fn listener(&self) -> &L {
        &self.listener
    }

    pub fn accept(&mut self, registry: &Registry, first_token: usize, now: Instant) {
        while let Ok(mut socket) = self.listener.accept_one() {
            if self.requests.len() >= MAX_REQUESTS {
                let oldest_unfinished = self
                    .requests
                    .iter()
                    .filter(|(_, r)| r.answer.is_none())
                    .min_by_key(|(_, r)| r.opened)
                    .map(|(key, _)| key);
                match oldest_unfinished {
                    Some(key) => self.close(key, registry),
                    None => continue, // every slot is being answered: dropped
                }
            }
            let token = Token(first_token + self.requests.vacant_key());
            if registry.register(&mut socket, token, Interest::READABLE).is_ok() {
                let request =
                    Request { socket, received: Vec::new(), answer: None, held: None, opened: now };
                self.requests.insert(request);
            }
        }
    }

    /// Reads request `key`; after each read `respond` sees everything
    /// received so far and gives the answer once the request is complete
    /// (`None`: not yet). The request is closed once its answer is out.
    pub fn serve(
        &mut self,
        key: usize,
        registry: &Registry,
        first_token: usize,
        respond: impl FnMut(&[u8]) -> Option<Vec<u8>>,
    ) {
        let Some(request) = self.requests.get_mut(key) else { return };
        if request.held.is_some() {
            return; // read whole; its answer is not known yet
        }
        if request.advance(respond) {
            self.close(key, registry);
        } else if request.answer.is_some() {
            let token = Token(first_token + key);
            let _ = registry.reregister(&mut request.socket, token, Interest::WRITABLE);
        }
    }

    /// Request `key` is whole, and will be answered by `answer_held` under
    /// `ticket` (or closed at its timeout, as any request).
    pub fn hold(&mut self, key: usize, ticket: u64) {
        if let Some(request) = self.requests.get_mut(key) {
            request.held = Some(ticket);
        }
    }

    /// Answers the request held under `ticket`, if it is still open.
    pub fn answer_held(
        &mut self,
        ticket: u64,
        answer: Vec<u8>,
        registry: &Registry,
        first_token: usize,
    ) {
        let Some((key, request)) = self.requests.iter_mut().find(|(_, r)| r.held == Some(ticket))
        else {
            return;
        };
        request.held = None;
        request.answer = Some((answer, 0));
        self.serve(key, registry, first_token, |_| None);
    }

    /// The tickets of the requests held.
    pub fn held(&self) -> Vec<u64> {
        self.requests.iter().filter_map(|(_, r)| r.held).collect()
    }

    /// Closes requests that took too long: to arrive, or in all.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self
            .requests
            .iter()
            .filter(|(_, r)| {
                let age = now.saturating_duration_since(r.opened);
                let arriving = r.answer.is_none() && r.held.is_none();
                age >= REQUEST_TIMEOUT || (arriving && age >= HEAD_TIMEOUT)
            })
            .map(|(key, _)| key)
            .collect();
        for key in late {
            self.close(key, registry);
        }
    }

    fn close(&mut self, key: usize, registry: &Registry) {
        if let Some(mut request) = self.requests.try_remove(key) {
            let _ = registry.deregister(&mut request.socket);
        }
    }
}

impl<S: Read + Write> Request<S> {
    /// Reads and writes what the socket allows; `true` once finished.
    fn advance(&mut self, mut respond: impl FnMut(&[u8]) -> Option<Vec<u8>>) -> bool {
        let mut buf = [0u8; 1024];
        while self.answer.is_none() {
            match self.socket.read(&mut buf) {
                Ok(0) => return true, // gone before asking
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    self.answer = respond(&self.received).map(|a| (a, 0));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        let Some((answer, written)) = &mut self.answer else { return true };
        // Finished once all is written, or on an error.
        !matches!(drain::buffer(&mut self.socket, answer, written), Ok(Drained::Blocked))
    }
}
