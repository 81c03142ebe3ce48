//! The Autobahn testsuite's endpoint: the chat server's own event loop in
//! echo mode (`Server::echo_mode`, feature `testing`): the same transport,
//! connection, outbox and effects, with every message sent back to its
//! sender. Driven by `scripts/autobahn.sh`.
//!
//! Usage: autobahn_echo --port P [--tls CERT KEY]   (prints the URL)

use std::process::ExitCode;

use ragnarok::config::{Config, TlsFiles};
use ragnarok::server::Server;

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
    let mut config =
        Config { server_ip: "127.0.0.1".into(), server_port: port, ..Config::default() };
    let limits = &mut config.limits;
    limits.max_message_bytes = MAX_MESSAGE_BYTES;
    // Reads pause past the high-water mark, so one echoed message (plus
    // what was queued before it) always fits.
    limits.max_outbound_bytes = MAX_MESSAGE_BYTES + 64 * 1024;
    limits.rate_limit_per_sec = 0;
    limits.rate_limit_bytes_per_sec = 0;
    limits.idle_timeout = None;
    limits.max_connections_per_ip = 0;
    limits.max_handshakes_per_ip = 0;
    limits.connections_per_minute_per_ip = 0;
    limits.logins_per_minute_per_ip = 0;
    let served = Server::bind(&config, tls).and_then(|mut server| {
        server.echo_mode();
        println!("{}", server.url());
        server.run()
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("127.0.0.1:{port}: {e}");
            ExitCode::from(69)
        }
    }
}
