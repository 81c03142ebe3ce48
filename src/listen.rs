//! The chat listener's socket: SO_REUSEADDR as std and mio set it, and, with
//! `reuse_port`, SO_REUSEPORT, so that one process per core can share the
//! port (the kernel spreads new connections over them).

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel queues before `accept`. std and mio ask for 128;
/// a restart or a failover brings every client back at once, so more (the
/// kernel caps it at `net.core.somaxconn`, 4096 on current kernels).
const BACKLOG: i32 = 1024;

/// A non-blocking listener on `addr`. With `reuse_port`, processes of the
/// same user that all set it may listen on the same address.
pub fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restart at once even while the old process's connections linger in
    // TIME_WAIT (std and mio set it too).
    socket.set_reuse_address(true)?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into()).map_err(|e| explain(e, reuse_port))?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(unix)]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(unix))]
fn set_reuse_port(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "\"reuse_port\" needs Linux or another Unix"))
}

/// A port in use says which setting would share it.
fn explain(e: io::Error, reuse_port: bool) -> io::Error {
    if e.kind() != io::ErrorKind::AddrInUse {
        return e;
    }
    let hint = if reuse_port {
        "the process that has it does not share it (every process on the port needs \
         \"reuse_port\": true and the same user)"
    } else {
        "another process has it (to run several ragnarok processes on one port, set \
         \"reuse_port\": true in each one's config)"
    };
    io::Error::new(e.kind(), format!("{e}: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn two_listeners_share_a_port_only_when_both_ask() {
        let first = listen(any_port(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listen(addr, true).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);

        let alone = listen(any_port(), false).unwrap();
        let taken = alone.local_addr().unwrap();
        for reuse_port in [false, true] {
            let e = listen(taken, reuse_port).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            assert!(e.to_string().contains("\"reuse_port\": true"), "{e}");
        }
    }

    #[test]
    fn other_errors_pass_unchanged() {
        let e = listen("203.0.113.1:0".parse().unwrap(), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable);
        assert!(!e.to_string().contains("reuse_port"), "{e}");
    }
}
