//! A TCP relay for tests: clients connect to the relay, which forwards
//! every byte both ways to a target (a server), so that a test can drop a
//! connection for real, the way a phone's link drops: [`Relay::cut`] shuts
//! down both sockets of every connection it carries (the client sees the
//! stream end, the server sees it end without a WebSocket Close). What the
//! server sends is never parsed: TLS goes through untouched.
//!
//! Plain std threads: one accepting, two copying per connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards connections made to [`Relay::addr`] to a target address.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepter: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    target: Mutex<SocketAddr>,
    /// While set, a new connection is accepted and closed at once (see
    /// [`Relay::hold`]).
    held: AtomicBool,
    /// While set, whatever arrives is dropped (see [`Relay::freeze`]).
    frozen: Arc<AtomicBool>,
    stopping: AtomicBool,
    /// Connections forwarded to the target so far.
    carried: AtomicUsize,
    /// Connections refused while held.
    refused: AtomicUsize,
    /// Every connection not cut yet.
    open: Mutex<Vec<Carried>>,
}

/// Both sockets of a connection, and how many of its two directions still
/// flow.
struct Carried {
    client: TcpStream,
    server: TcpStream,
    flowing: Arc<AtomicUsize>,
}

impl Relay {
    /// A relay on 127.0.0.1 (a free port) to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay: bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            held: AtomicBool::new(false),
            frozen: Arc::new(AtomicBool::new(false)),
            stopping: AtomicBool::new(false),
            carried: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            open: Mutex::new(Vec::new()),
        });
        let inner = shared.clone();
        let accepter = std::thread::spawn(move || accept_loop(listener, inner));
        Relay { addr, shared, accepter: Some(accepter) }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections from now on go to `target` (e.g. a restarted server on
    /// its new port); those open stay where they are.
    pub fn retarget(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
    }

    /// Drops every connection the relay carries: both of its sockets are
    /// shut down for reading and writing (the client's side and the
    /// target's), as a broken link would end them; no byte is added, so the
    /// server sees no WebSocket Close. Returns how many were still open
    /// (data flowing at least one way). Once it returns, both ends have
    /// been sent their FIN.
    pub fn cut(&self) -> usize {
        let cut: Vec<Carried> = std::mem::take(&mut *self.shared.open.lock().unwrap());
        let open = cut.iter().filter(|c| c.flowing.load(Ordering::SeqCst) > 0).count();
        for c in &cut {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
        open
    }

    /// While held (`true`), the link is down for new connections: each one
    /// is accepted and closed at once, without a byte and without
    /// connecting to the target (a client sees its handshake end at once
    /// rather than hang). Connections already open are not touched (see
    /// [`Relay::cut`]). `false` lets new connections through again.
    pub fn hold(&self, held: bool) {
        self.shared.held.store(held, Ordering::SeqCst);
    }

    /// While frozen (`true`), the link goes silent: the connections stay
    /// open but every byte either end sends is read and dropped (no FIN,
    /// no RST: a phone in a tunnel, seen from the server). `false`: bytes
    /// flow again (those dropped are lost).
    pub fn freeze(&self, frozen: bool) {
        self.shared.frozen.store(frozen, Ordering::SeqCst);
    }

    /// Connections forwarded to the target so far (not those refused
    /// while held).
    pub fn carried(&self) -> usize {
        self.shared.carried.load(Ordering::SeqCst)
    }

    /// Connections accepted and closed at once while held.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections being carried right now (not cut, data still flowing
    /// at least one way).
    pub fn open(&self) -> usize {
        let open = self.shared.open.lock().unwrap();
        open.iter().filter(|c| c.flowing.load(Ordering::SeqCst) > 0).count()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
        self.cut();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        if shared.held.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let target = *shared.target.lock().unwrap();
        let Ok(server) = TcpStream::connect(target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) =
            (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
        else {
            continue;
        };
        let flowing = Arc::new(AtomicUsize::new(2));
        let (up, down) = (flowing.clone(), flowing.clone());
        let mut open = shared.open.lock().unwrap();
        open.retain(|c| c.flowing.load(Ordering::SeqCst) > 0);
        open.push(Carried { client, server, flowing });
        drop(open);
        shared.carried.fetch_add(1, Ordering::SeqCst);
        let (f2, f3) = (shared.frozen.clone(), shared.frozen.clone());
        std::thread::spawn(move || pump(c2, s2, up, f2));
        std::thread::spawn(move || pump(s3, c3, down, f3));
    }
}

/// Copies `from` to `to` until either ends; then passes the end on (a
/// half-close stays a half-close: the other direction keeps flowing).
fn pump(from: TcpStream, to: TcpStream, flowing: Arc<AtomicUsize>, frozen: Arc<AtomicBool>) {
    copy(from, to, &frozen);
    flowing.fetch_sub(1, Ordering::SeqCst);
}

fn copy(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(_) if frozen.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) if frozen.load(Ordering::SeqCst) => return,
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    // A frozen link passes no end on either.
    if !frozen.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}
