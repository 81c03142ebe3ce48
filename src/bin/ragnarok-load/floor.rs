//! The kernel's floor under a chat server: `relay` is a server that only
//! reads a message from one socket and writes it to its partner (no
//! WebSocket, no JSON, no room); `floor` drives it with closed-loop pairs, as
//! `private` drives Ragnarok. Its CPU per round trip is the least that one
//! read and one write per message cost on this machine.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::{Options, OwnCpu, sample};

const LISTENER: Token = Token(usize::MAX);

/// Serves until killed. Connections are paired in the order they are
/// accepted (a connection that closes while still waiting is forgotten).
/// Each readiness event costs one read (a short read means the socket is
/// drained, as in Ragnarok) and one write per read.
pub fn relay(addr: SocketAddr) -> io::Result<()> {
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("relay listening on {}", listener.local_addr()?);
    // Indexed by token; a closed connection leaves `None`.
    let mut sockets: Vec<Option<TcpStream>> = Vec::new();
    let mut partners: Vec<Option<usize>> = Vec::new();
    let mut waiting: Option<usize> = None;
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut socket, _)) => {
                            socket.set_nodelay(true)?;
                            let i = sockets.len();
                            poll.registry().register(&mut socket, Token(i), Interest::READABLE)?;
                            sockets.push(Some(socket));
                            partners.push(waiting);
                            match waiting.take() {
                                Some(w) => partners[w] = Some(i),
                                None => waiting = Some(i),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let i = event.token().0;
            let mut done = false;
            while let Some(socket) = &sockets[i] {
                match (&*socket).read(&mut buf) {
                    Ok(0) => done = true,
                    Ok(n) => {
                        if let Some(Some(partner)) = partners[i].map(|p| &sockets[p]) {
                            // Closed-loop pairs keep one small message in
                            // flight, so a partner's socket is never full.
                            done = !matches!((&*partner).write(&buf[..n]), Ok(m) if m == n);
                        }
                        if n < buf.len() && !done {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => done = true,
                }
                if done {
                    // Dropping a socket closes it (and takes it off the poll).
                    sockets[i] = None;
                    if waiting == Some(i) {
                        waiting = None;
                    }
                    if let Some(p) = partners[i].take() {
                        sockets[p] = None;
                        partners[p] = None;
                    }
                }
            }
        }
    }
}

/// `o.pairs` pairs bounce `o.size`-byte messages through the relay for
/// `o.duration`; prints round trips/s and the relay's CPU per round trip.
pub fn floor(o: &Options) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut sockets = Vec::with_capacity(o.pairs * 2);
    // One at a time: the relay pairs connections in the order it accepts
    // them, so ours pair up as 2i and 2i + 1.
    for i in 0..o.pairs * 2 {
        let socket = std::net::TcpStream::connect(o.addr)?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        let mut socket = TcpStream::from_std(socket);
        poll.registry().register(&mut socket, Token(i), Interest::READABLE)?;
        sockets.push(socket);
    }
    // Let the last accept land before the first message.
    std::thread::sleep(Duration::from_millis(100));
    // Pair p's messages are all byte `tag(p)`, so a relay that mixes up
    // pairs is caught.
    let size = o.size.max(1);
    let tag = |i: usize| b'a' + (i / 2 % 26) as u8;
    let messages: Vec<Vec<u8>> = (0..26).map(|t| vec![b'a' + t; size]).collect();
    let mut received = vec![0usize; sockets.len()];
    let send = |i: usize| -> io::Result<()> {
        let message = &messages[usize::from(tag(i) - b'a')];
        match (&sockets[i]).write(message)? {
            n if n == size => Ok(()),
            _ => Err(io::Error::other("floor: socket full")),
        }
    };
    let warmup = Duration::from_secs(1);
    let started = Instant::now();
    let mut measured: Option<(Instant, u64, Option<crate::ProcSample>, OwnCpu)> = None;
    let mut round_trips = 0u64;
    for a in (0..sockets.len()).step_by(2) {
        send(a)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if measured.is_none() && now >= started + warmup {
            measured = Some((now, round_trips, sample(o.pid), OwnCpu::start()));
        }
        if let Some((t0, n0, cpu0, own)) = &measured
            && now >= *t0 + o.duration
        {
            let seconds = now.duration_since(*t0).as_secs_f64();
            let n = round_trips - n0;
            let own = own.percent().map_or("null".into(), |p| format!("{p:.1}"));
            let rate = n as f64 / seconds;
            let cpu_per = match (cpu0, sample(o.pid)) {
                (Some(a), Some(b)) if n > 0 => {
                    format!("{:.4}", b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1e6 / n as f64)
                }
                _ => "null".into(),
            };
            println!("scenario        floor (relay: one read + one write per message)");
            println!("pairs           {} × {size}-byte messages", o.pairs);
            println!("round trips     {n} in {seconds:.1} s = {rate:.0}/s");
            println!("relay CPU       {cpu_per} us per round trip");
            println!("load generator  {own} % of its core");
            println!(
                "{{\"scenario\":\"floor\",\"pairs\":{},\"seconds\":{seconds:.4},\"deliveries\":{n},\"per_sec\":{rate:.1},\"cpu_us_per_delivery\":{cpu_per},\"loadgen_cpu_pct\":{own}}}",
                o.pairs
            );
            return Ok(());
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            let i = event.token().0;
            loop {
                match (&sockets[i]).read(&mut buf) {
                    Ok(0) => return Err(io::Error::other("floor: the relay closed a connection")),
                    Ok(n) => {
                        if buf[..n].iter().any(|&b| b != tag(i)) {
                            return Err(io::Error::other(
                                "floor: a message reached the wrong pair",
                            ));
                        }
                        received[i] += n;
                        while received[i] >= size {
                            received[i] -= size;
                            // B answers A; A counts a round trip and goes again.
                            if i % 2 == 0 {
                                round_trips += 1;
                            }
                            send(i)?;
                        }
                        // A short read drained the socket (as in the relay).
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
