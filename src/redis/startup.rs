//! The blocking startup check of `redis_url` (resolve, connect, TLS, AUTH,
//! SELECT, PING, once, before the loop) and the client TLS configuration
//! for `rediss://` (the CA file, or the system's).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::RedisUrl;
use super::conn::{READ_CHUNK, handshake_commands, io_text};
use super::resp::{Decoder, Value, encode_command};

/// The system's trusted CAs, for `rediss://` without `redis_ca_file`.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Blocking check used once at startup, before the loop: resolves `url`'s
/// host, connects within `timeout`, TLS for `rediss://`, AUTH, SELECT,
/// PING. Returns the address that answered, or one line saying what failed.
pub fn check(
    url: &RedisUrl,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    let fail = |what: String| format!("cannot connect to {url}: {what}");
    let addrs: Vec<SocketAddr> = url
        .address()
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve {:?}: {}", url.host, io_text(&e))))?
        .collect();
    let mut last = fail(format!("{:?} resolves to no address", url.host));
    for addr in addrs {
        let stream = match StdTcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => stream,
            Err(e) => {
                last = fail(timeout_text(&e, timeout));
                continue;
            }
        };
        return probe(url, tls, stream, timeout).map(|()| addr).map_err(fail);
    }
    Err(last)
}

fn timeout_text(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no answer within {timeout:?}")
        }
        _ => io_text(e),
    }
}

/// AUTH, SELECT and PING over a connected blocking stream.
fn probe(
    url: &RedisUrl,
    tls: Option<Arc<ClientConfig>>,
    stream: StdTcpStream,
    timeout: Duration,
) -> Result<(), String> {
    let io = |e: io::Error| timeout_text(&e, timeout);
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let _ = stream.set_nodelay(true);
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(stream),
        Some(config) => {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| format!("{:?} is not a valid TLS server name", url.host))?;
            let conn = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
            Box::new(rustls::StreamOwned::new(conn, stream))
        }
    };
    let mut out = Vec::new();
    let mut names = handshake_commands(url, &mut out);
    encode_command(&mut out, &[b"PING"]);
    names.push_back("PING");
    stream.write_all(&out).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut decoder = Decoder::new();
    while let Some(name) = names.front().copied() {
        match decoder.next_value().map_err(|e| e.to_string())? {
            Some(Value::Error(text)) => return Err(format!("{name} refused: {text}")),
            Some(reply) if name == "PING" && reply != Value::Bytes(b"PONG".to_vec()) => {
                return Err(format!("PING answered {reply:?}, not PONG: is this Redis?"));
            }
            Some(_) => {
                names.pop_front();
            }
            None => {
                let spare = decoder.spare(READ_CHUNK);
                let got = stream.read(spare);
                let n = *got.as_ref().unwrap_or(&0);
                decoder.filled(READ_CHUNK, n);
                match got {
                    Ok(0) => return Err(format!("connection closed before {name} was answered")),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
    }
    Ok(())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Client TLS configuration for `rediss://`: trusts the CA certificates in
/// the PEM file `ca_file` when given, else the system's.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_FILE));
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), io_text(&e)))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = tls_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/ca.pem:"), "{e}");
    }
}
