//! The Autobahn testsuite's endpoint: an echo server built from the chat
//! server's own transport, connection and outbox (`ragnarok::echo`, feature
//! `testing`). Driven by `scripts/autobahn.sh`.
//!
//! Usage: autobahn_echo --port P [--tls CERT KEY]   (prints the URL)

use std::net::SocketAddr;
use std::process::ExitCode;

use ragnarok::config::TlsFiles;

/// Autobahn's section 9 sends messages of up to 16 MiB.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (port, tls) = match &args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--port", port] => (port.parse::<u16>().ok(), None),
        ["--port", port, "--tls", cert, key] => {
            (port.parse::<u16>().ok(), Some(TlsFiles { cert: cert.into(), key: key.into() }))
        }
        _ => (None, None),
    };
    let Some(port) = port else {
        eprintln!("usage: autobahn_echo --port P [--tls CERT KEY]");
        return ExitCode::from(64);
    };
    let tls = match tls.as_ref().map(ragnarok::tls::load).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(78);
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match ragnarok::echo::serve(addr, tls, MAX_MESSAGE_BYTES) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{addr}: {e}");
            ExitCode::from(69)
        }
    }
}
