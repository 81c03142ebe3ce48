//! Loads the certificate chain and private key (PKCS#8, PKCS#1 or SEC1 PEM)
//! into a rustls server configuration on the `ring` provider, TLS 1.2 and 1.3.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read at all.
    Read { path: PathBuf, source: io::Error },
    /// A file was read but holds nothing usable.
    Invalid { path: PathBuf, message: String },
    /// The key is not the certificate's.
    Mismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the pair for another reason.
    Rejected(String),
}

impl TlsError {
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, TlsError::Read { source, .. } if source.kind() == io::ErrorKind::PermissionDenied)
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Invalid { path, message } => write!(f, "{}: {message}", path.display()),
            TlsError::Mismatch { cert, key } => write!(
                f,
                "the key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Rejected(message) => write!(f, "TLS certificate and key: {message}"),
        }
    }
}

impl std::error::Error for TlsError {}

pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rejected(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::Mismatch { cert: files.cert.clone(), key: files.key.clone() }
            }
            other => TlsError::Rejected(other.to_string()),
        })?;
    Ok(Arc::new(config))
}

/// When the certificate in `path` (the first of its chain) expires, in
/// seconds since the Unix epoch; `None` if it cannot be read or parsed.
pub fn not_after(path: &Path) -> Option<u64> {
    let der = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    not_after_der(&der)
}

/// Reads `tbsCertificate.validity.notAfter` from a DER certificate
/// (RFC 5280 section 4.1): just enough DER for one date.
fn not_after_der(der: &[u8]) -> Option<u64> {
    let (_, cert, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(cert)?;
    if tbs.first() == Some(&0xA0) {
        tbs = tlv(tbs)?.2; // the optional [0] version
    }
    let rest = tlv(tbs)?.2; // serialNumber
    let rest = tlv(rest)?.2; // signature
    let rest = tlv(rest)?.2; // issuer
    let (_, validity, _) = tlv(rest)?;
    let after = tlv(validity)?.2; // notBefore
    let (tag, time, _) = tlv(after)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let full = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: u32 = text[..2].parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        (0x18, 14) => text.to_owned(),
        _ => return None,
    };
    let field = |range: std::ops::Range<usize>| full.get(range)?.parse::<u32>().ok();
    let days = days_from_civil(field(0..4)?, field(4..6)?, field(6..8)?)?;
    let seconds = u64::from(field(8..10)? * 3600 + field(10..12)? * 60 + field(12..14)?);
    Some(days * 86_400 + seconds)
}

/// One DER tag-length-value: (tag, contents, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: u32, month: u32, day: u32) -> Option<u64> {
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (y, m, d) = (i64::from(year) - i64::from(month <= 2), i64::from(month), i64::from(day));
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from(era * 146_097 + doe - 719_468).ok()
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_owned(),
            message: "no PEM certificate (BEGIN CERTIFICATE) found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Invalid {
            path: path.to_owned(),
            message: "no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) found".into(),
        },
        other => pem_error(path, other),
    })
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(source) => TlsError::Read { path: path.to_owned(), source },
        other => TlsError::Invalid { path: path.to_owned(), message: format!("bad PEM: {other}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_of_another_certificate_is_named_with_both_files() {
        let dir = std::env::temp_dir().join(format!("ragnarok-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let ours = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, ours.cert.pem()).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let files = TlsFiles { cert: cert.clone(), key: key.clone() };
        let text = load(&files).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            text,
            format!(
                "the key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            )
        );
    }

    #[test]
    fn reads_the_expiry_of_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 3, 14);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        // 2031-03-14T00:00:00Z
        assert_eq!(not_after_der(cert.der()), Some(1_931_212_800));
        params.not_after = rcgen::date_time_ymd(2051, 1, 1); // GeneralizedTime from 2050 on
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after_der(cert.der()), Some(2_556_144_000));
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(not_after_der(&cert.der()[..40]), None, "cut short");
        assert_eq!(not_after_der(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}
