//! The one non-blocking write loop: write until nothing is left or the
//! socket is full, retry `Interrupted`, and count `Ok(0)` as `WriteZero`.
//! Every writer of the server (connections, metrics, Redis) goes through it.

use std::io::{self, Write};

/// How a drain ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Nothing is left to write.
    All,
    /// The writer said `WouldBlock`: wait for it to become writable.
    Blocked,
}

/// Calls `write_once` until it returns `None` (nothing left) or the writer
/// is full. `write_once` makes one write of what is left and records what
/// went (its `Ok(n)`); this loop only classifies the outcome.
pub fn drain(mut write_once: impl FnMut() -> Option<io::Result<usize>>) -> io::Result<Drained> {
    loop {
        match write_once() {
            None => return Ok(Drained::All),
            Some(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Some(Ok(_)) => {}
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Drained::Blocked),
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Some(Err(e)) => return Err(e),
        }
    }
}

/// Writes `buf[*written..]`, advancing `written` by what went.
pub fn buffer<W: Write + ?Sized>(
    writer: &mut W,
    buf: &[u8],
    written: &mut usize,
) -> io::Result<Drained> {
    drain(|| {
        let rest = buf.get(*written..).filter(|rest| !rest.is_empty())?;
        Some(writer.write(rest).inspect(|n| *written += n))
    })
}

/// Sends the TLS records rustls has queued (`write_tls` while it
/// `wants_write`).
pub fn tls<D>(
    tls: &mut rustls::ConnectionCommon<D>,
    writer: &mut dyn Write,
) -> io::Result<Drained> {
    drain(|| tls.wants_write().then(|| tls.write_tls(writer)))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;

    /// A writer that answers from a script, then takes everything.
    struct Scripted {
        answers: VecDeque<io::Result<usize>>,
        got: Vec<u8>,
    }

    impl Scripted {
        fn new(answers: impl IntoIterator<Item = io::Result<usize>>) -> Scripted {
            Scripted { answers: answers.into_iter().collect(), got: Vec::new() }
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = match self.answers.pop_front() {
                Some(Ok(n)) => n.min(buf.len()),
                Some(Err(e)) => return Err(e),
                None => buf.len(),
            };
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn kind(kind: io::ErrorKind) -> io::Result<usize> {
        Err(kind.into())
    }

    #[test]
    fn writes_until_done_retrying_interrupted() {
        let mut w = Scripted::new([Ok(3), kind(io::ErrorKind::Interrupted), Ok(2)]);
        let mut written = 0;
        assert_eq!(buffer(&mut w, b"hello world", &mut written).unwrap(), Drained::All);
        assert_eq!((written, &w.got[..]), (11, &b"hello world"[..]));
        // Nothing to write: no write at all.
        let mut w = Scripted::new([kind(io::ErrorKind::BrokenPipe)]);
        assert_eq!(buffer(&mut w, b"ab", &mut 2).unwrap(), Drained::All);
    }

    #[test]
    fn stops_when_full_and_resumes_where_it_stopped() {
        let mut w = Scripted::new([Ok(4), kind(io::ErrorKind::WouldBlock)]);
        let mut written = 0;
        assert_eq!(buffer(&mut w, b"abcdefgh", &mut written).unwrap(), Drained::Blocked);
        assert_eq!(written, 4);
        assert_eq!(buffer(&mut w, b"abcdefgh", &mut written).unwrap(), Drained::All);
        assert_eq!((written, &w.got[..]), (8, &b"abcdefgh"[..]));
    }

    #[test]
    fn zero_is_write_zero_and_errors_pass_through() {
        let mut w = Scripted::new([Ok(1), Ok(0)]);
        let mut written = 0;
        let e = buffer(&mut w, b"abc", &mut written).unwrap_err();
        assert_eq!((e.kind(), written), (io::ErrorKind::WriteZero, 1));
        let mut w = Scripted::new([kind(io::ErrorKind::ConnectionReset)]);
        let e = buffer(&mut w, b"abc", &mut 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn sends_what_rustls_queued() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("example.org").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        // A full socket: the ClientHello waits.
        let mut full = Scripted::new([kind(io::ErrorKind::WouldBlock)]);
        assert_eq!(tls(&mut conn, &mut full).unwrap(), Drained::Blocked);
        assert!(conn.wants_write() && full.got.is_empty());
        let mut open = Scripted::new([]);
        assert_eq!(tls(&mut conn, &mut open).unwrap(), Drained::All);
        assert!(!conn.wants_write());
        assert_eq!(open.got.first(), Some(&0x16), "a handshake record");
    }
}
