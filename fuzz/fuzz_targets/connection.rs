//! Arbitrary bytes, in arbitrary chunks, into whole connections of the real
//! server loop over in-memory sockets, with three users already chatting.
//! Each input is a script: which client acts (the fuzzed stranger or one of
//! the users), and how: send the next bytes of the input, read what the
//! server sent, stop reading, hang up, or let a second pass.
//!
//! Checks: no panic, and after every step no open WebSocket has more than
//! `max_outbound_bytes` + `OUTPUT_RESERVE` bytes queued.

#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mio::event::Source;
use mio::{Events, Interest, Registry, Token};
use ragnarok::config::Config;
use ragnarok::server::{OUTPUT_RESERVE, Server};
use ragnarok::transport::Socket;

const LIMIT: usize = 16 * 1024;

/// One end of an in-memory connection, as the server sees it.
#[derive(Default)]
struct Pipe {
    to_server: VecDeque<u8>,
    to_client: Vec<u8>,
    /// The client stopped reading: the server's writes block past this.
    client_window: usize,
    client_closed: bool,
}

#[derive(Clone)]
struct MemSocket(Rc<RefCell<Pipe>>);

impl Read for MemSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pipe = self.0.borrow_mut();
        if pipe.to_server.is_empty() {
            return if pipe.client_closed { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(pipe.to_server.len());
        for (slot, byte) in buf.iter_mut().zip(pipe.to_server.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for MemSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pipe = self.0.borrow_mut();
        let room = pipe.client_window.saturating_sub(pipe.to_client.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        pipe.to_client.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for MemSocket {
    fn shutdown_write(&mut self) {}

    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let pipe = self.0.borrow();
        let n = buf.len().min(pipe.to_server.len());
        for (slot, byte) in buf.iter_mut().zip(pipe.to_server.iter()) {
            *slot = *byte;
        }
        Ok(n)
    }
}

/// Memory pipes need no poller.
impl Source for MemSocket {
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
}

/// A client frame, masked (payloads under 64 KiB).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match u16::try_from(payload.len()) {
        Ok(n) if n < 126 => f.push(0x80 | n as u8),
        Ok(n) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => panic!("a frame of the fuzz target's own over 64 KiB"),
    }
    f.extend_from_slice(&[1, 2, 3, 4]);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
    f
}

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

struct World {
    server: Server<MemSocket>,
    clients: Vec<(usize, MemSocket)>,
    events: Events,
    now: Instant,
}

impl World {
    fn new() -> World {
        let config = Config::parse(
            r#"{"server_password": "pw", "max_outbound_bytes": 16384, "history_size": 5,
                "max_message_bytes": 2048, "rate_limit_per_sec": 50, "rate_limit_burst": 20}"#,
            std::path::Path::new("."),
        )
        .expect("config");
        let mut world = World {
            server: Server::detached(&config, None).expect("server"),
            clients: Vec::new(),
            events: Events::with_capacity(16),
            now: Instant::now(),
        };
        for i in 0..4u8 {
            let socket = MemSocket(Rc::new(RefCell::new(Pipe { client_window: 1 << 20, ..Pipe::default() })));
            let addr = format!("192.0.2.{}:4000", i + 1).parse().unwrap();
            let key = world.server.adopt(socket.clone(), addr, world.now).expect("connect");
            world.clients.push((key, socket));
            if i < 3 {
                let login = [UPGRADE, &frame(1, b"pw"), &frame(1, format!("user{i}").as_bytes())].concat();
                world.send(i as usize, &login);
                // A key in the documented e2e2 format (182 characters), or it is refused.
                let point = format!("B{}=", "A".repeat(86));
                let key = format!(r#"{{"msgType":"PublicKey","key":"e2e2:{point}:{point}"}}"#);
                world.send(i as usize, &frame(1, key.as_bytes()));
            }
        }
        assert_eq!(world.server.users_online(), 3);
        world
    }

    fn send(&mut self, i: usize, bytes: &[u8]) {
        self.clients[i].1.0.borrow_mut().to_server.extend(bytes);
        self.step(i);
    }

    fn step(&mut self, i: usize) {
        let (key, socket) = &self.clients[i];
        let closed = socket.0.borrow().client_closed;
        self.server.on_ready(*key, true, closed, true, self.now);
        self.server.read_again(self.now);
        self.server.finish_round(&mut self.events).expect("round");
        let queued = self.server.max_queued();
        assert!(queued <= LIMIT + OUTPUT_RESERVE, "{queued} bytes queued");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut world = World::new();
    let mut input = data;
    while let [op, len, rest @ ..] = input {
        let client = usize::from(op % 4);
        match op / 4 % 6 {
            // Send the next bytes; the stranger (3) at the HTTP level too.
            0 | 1 => {
                let n = usize::from(*len).min(rest.len());
                let bytes = &rest[..n];
                input = &rest[n..];
                if client == 3 || op / 4 % 6 == 0 {
                    world.send(client, bytes);
                } else {
                    world.send(client, &frame(1 + (len & 1), &bytes[..bytes.len().min(125)]));
                }
                continue;
            }
            2 => {
                let pipe = &world.clients[client].1;
                pipe.0.borrow_mut().to_client.clear();
                world.step(client);
            }
            3 => world.clients[client].1.0.borrow_mut().client_window = usize::from(*len) * 16,
            4 => {
                world.clients[client].1.0.borrow_mut().client_closed = true;
                world.step(client);
            }
            _ => {
                world.now += Duration::from_secs(u64::from(*len % 90));
                world.server.tick(world.now);
                world.server.finish_round(&mut world.events).expect("round");
            }
        }
        input = rest;
    }
});
