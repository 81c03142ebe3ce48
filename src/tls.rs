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
    /// rustls refused the pair (for example, the key does not match).
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
        .map_err(|e| TlsError::Rejected(e.to_string()))?;
    Ok(Arc::new(config))
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
