//! The soak's cutting relay (`ragnarok-load soak --cuts`): a TCP relay on
//! its own thread and mio loop, between the soak's chat users and the
//! server, that passes bytes both ways untouched (TLS included) until told
//! to cut a connection. A cut is a real drop, not a WebSocket Close: the
//! relay shuts both sockets down, and whatever the server had sent that
//! the relay had not yet passed on is gone (what a resume must make good).
//!
//! What the client had sent before the cut still reaches the server: the
//! relay reads what is waiting from the client, writes it on, and only
//! then shuts the server's socket (a FIN after the last byte, no RST).
//! The soak cuts a client only once it has nothing left to send, so every
//! message it sent was accepted, and the checks stay exact; the loss a cut
//! makes is all on the way to the client.
//!
//! The soak names the connection to cut by its client socket's local port
//! (the relay's accepted peer port).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Bytes buffered one way before the relay stops reading that side.
const BUFFER: usize = 1 << 20;
/// After a cut, the server's side is drained (so that closing it sends no
/// RST) until the server closes it, or this long.
const DRAIN: Duration = Duration::from_secs(10);

enum Command {
    Cut(u16),
    Stop,
}

/// What the relay did, read by the soak at the end.
#[derive(Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub cuts: AtomicU64,
    /// Cuts asked for a port the relay does not have (a bug in the soak).
    pub unknown: AtomicU64,
    /// Bytes from the server dropped at cuts (buffered in the relay or read
    /// after the cut), and bytes from the client not passed on (must be 0).
    pub dropped_to_client: AtomicU64,
    pub dropped_to_server: AtomicU64,
    /// Connections to the server that failed or were reset.
    pub errors: AtomicU64,
}

pub struct Relay {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    commands: Mutex<Sender<Command>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on 127.0.0.1 (a free port) and relays to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<Relay> {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel();
        let counters = Arc::new(Counters::default());
        let mut inner = Inner {
            poll,
            listener,
            upstream,
            rx,
            pairs: Slab::new(),
            by_port: HashMap::new(),
            counters: counters.clone(),
            buf: vec![0; 64 * 1024],
        };
        let thread = std::thread::Builder::new().name("cut-relay".into()).spawn(move || {
            if let Err(e) = inner.run() {
                eprintln!("ragnarok-load: the cutting relay failed: {e}");
            }
        })?;
        Ok(Relay { addr, counters, commands: Mutex::new(tx), waker, thread: Some(thread) })
    }

    /// Cuts the connection whose client side has this local port.
    pub fn cut(&self, client_port: u16) {
        let _ = self.commands.lock().unwrap().send(Command::Cut(client_port));
        let _ = self.waker.wake();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.commands.lock().unwrap().send(Command::Stop);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Side {
    socket: TcpStream,
    /// Read to the end (EOF seen).
    eof: bool,
    /// Our write half shut (FIN sent).
    shut: bool,
}

struct Pair {
    port: u16,
    client: Side,
    server: Side,
    /// Bytes read from the client, not yet written to the server; and back.
    up: Vec<u8>,
    down: Vec<u8>,
    /// Cut at this time: the client is gone, the server's side is being
    /// flushed and drained.
    cut: Option<Instant>,
}

struct Inner {
    poll: Poll,
    listener: TcpListener,
    upstream: SocketAddr,
    rx: Receiver<Command>,
    pairs: Slab<Pair>,
    by_port: HashMap<u16, usize>,
    counters: Arc<Counters>,
    buf: Vec<u8>,
}

/// Reads what `from` has into `to` (up to `limit` bytes buffered, or all
/// with `None`); true if the stream ended.
fn fill(
    from: &mut TcpStream,
    to: &mut Vec<u8>,
    buf: &mut [u8],
    limit: Option<usize>,
) -> io::Result<bool> {
    loop {
        if limit.is_some_and(|l| to.len() >= l) {
            return Ok(false);
        }
        match from.read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => to.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes what `to` takes of `from`.
fn drain(from: &mut Vec<u8>, to: &mut TcpStream) -> io::Result<()> {
    while !from.is_empty() {
        match to.write(from) {
            Ok(n) => {
                from.drain(..n);
            }
            Err(e) if crate::not_yet(&e) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Inner {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.poll.poll(&mut events, Some(Duration::from_millis(100)))?;
            let mut touched = Vec::new();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => {}
                    Token(t) => touched.push(t / 2),
                }
            }
            while let Ok(command) = self.rx.try_recv() {
                match command {
                    Command::Stop => return Ok(()),
                    Command::Cut(port) => match self.by_port.remove(&port) {
                        Some(key) => {
                            self.cut(key);
                            touched.push(key);
                        }
                        None => {
                            self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for key in touched {
                self.pump(key);
            }
            // Cut pairs whose server has not closed in time.
            let now = Instant::now();
            let stale: Vec<usize> = self
                .pairs
                .iter()
                .filter(|(_, p)| p.cut.is_some_and(|t| now.duration_since(t) > DRAIN))
                .map(|(k, _)| k)
                .collect();
            for key in stale {
                self.close(key);
            }
        }
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            let (mut client, peer) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut server = match TcpStream::connect(self.upstream) {
                Ok(s) => s,
                Err(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue; // the client sees the end of its stream
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let entry = self.pairs.vacant_entry();
            let key = entry.key();
            let both = Interest::READABLE | Interest::WRITABLE;
            self.poll.registry().register(&mut client, Token(key * 2), both)?;
            self.poll.registry().register(&mut server, Token(key * 2 + 1), both)?;
            entry.insert(Pair {
                port: peer.port(),
                client: Side { socket: client, eof: false, shut: false },
                server: Side { socket: server, eof: false, shut: false },
                up: Vec::new(),
                down: Vec::new(),
                cut: None,
            });
            self.by_port.insert(peer.port(), key);
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The cut: what the client sent goes on; the client's socket is shut
    /// both ways and closed; what the server sent and the client has not
    /// got is dropped.
    fn cut(&mut self, key: usize) {
        let Some(p) = self.pairs.get_mut(key) else { return };
        if !p.client.eof {
            let _ = fill(&mut p.client.socket, &mut p.up, &mut self.buf, None);
        }
        let _ = p.client.socket.shutdown(Shutdown::Both);
        let _ = self.poll.registry().deregister(&mut p.client.socket);
        p.client.eof = true;
        p.client.shut = true;
        self.counters.dropped_to_client.fetch_add(p.down.len() as u64, Ordering::Relaxed);
        p.down = Vec::new();
        p.cut = Some(Instant::now());
        self.counters.cuts.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves bytes both ways as far as the sockets allow; half-closes
    /// passed on; a pair is dropped once both ways are over.
    fn pump(&mut self, key: usize) {
        let Some(p) = self.pairs.get_mut(key) else { return };
        let buf = &mut self.buf;
        let result = (|| -> io::Result<()> {
            loop {
                let before = (p.up.len(), p.down.len(), p.client.eof, p.server.eof);
                if p.cut.is_none() {
                    if !p.client.eof {
                        p.client.eof = fill(&mut p.client.socket, &mut p.up, buf, Some(BUFFER))?;
                    }
                    if !p.server.eof {
                        p.server.eof = fill(&mut p.server.socket, &mut p.down, buf, Some(BUFFER))?;
                    }
                    drain(&mut p.down, &mut p.client.socket)?;
                    if p.server.eof && p.down.is_empty() && !p.client.shut {
                        let _ = p.client.socket.shutdown(Shutdown::Write);
                        p.client.shut = true;
                    }
                } else if !p.server.eof {
                    // After a cut: read and drop until the server closes.
                    let mut gone = Vec::new();
                    p.server.eof = fill(&mut p.server.socket, &mut gone, buf, None)?;
                    self.counters.dropped_to_client.fetch_add(gone.len() as u64, Ordering::Relaxed);
                }
                drain(&mut p.up, &mut p.server.socket)?;
                if p.client.eof && p.up.is_empty() && !p.server.shut {
                    let _ = p.server.socket.shutdown(Shutdown::Write);
                    p.server.shut = true;
                }
                if (p.up.len(), p.down.len(), p.client.eof, p.server.eof) == before {
                    return Ok(());
                }
            }
        })();
        let p = &self.pairs[key];
        let over = p.client.eof
            && p.server.eof
            && p.up.is_empty()
            && (p.down.is_empty() || p.cut.is_some());
        if result.is_err() {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        if result.is_err() || over {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        let Some(mut p) = self.pairs.try_remove(key) else { return };
        if self.by_port.get(&p.port) == Some(&key) {
            self.by_port.remove(&p.port);
        }
        if p.cut.is_some() && !p.up.is_empty() {
            self.counters.dropped_to_server.fetch_add(p.up.len() as u64, Ordering::Relaxed);
        }
        let _ = self.poll.registry().deregister(&mut p.client.socket);
        let _ = self.poll.registry().deregister(&mut p.server.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::Relay;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn bytes_pass_both_ways_and_a_cut_ends_both_sides_after_what_the_client_sent() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay::start(server.local_addr().unwrap()).unwrap();
        let mut client = TcpStream::connect(relay.addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut upstream, _) = server.accept().unwrap();
        upstream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        client.write_all(b"hello").unwrap();
        let mut got = [0; 5];
        upstream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        upstream.write_all(b"world").unwrap();
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world");

        // The client's last words, then the cut: they reach the server,
        // followed by the end of the stream; the client's stream ends.
        client.write_all(b"last").unwrap();
        relay.cut(client.local_addr().unwrap().port());
        let mut rest = Vec::new();
        upstream.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"last");
        let mut after = Vec::new();
        let _ = client.read_to_end(&mut after);
        assert!(after.is_empty(), "{after:?}");
        assert_eq!(relay.counters.cuts.load(Ordering::Relaxed), 1);
        assert_eq!(relay.counters.dropped_to_server.load(Ordering::Relaxed), 0);
    }
}
