//! The client side of TLS: which servers to trust, and which certificate to present.

use std::path::PathBuf;

use rustls::ClientConfig;

use crate::{pem, provider, TlsError};

/// What a client needs to reach a TLS server, perhaps one that wants a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA that signed the server's certificate (PEM). Only this CA is trusted: batchgate
    /// talks to its own workers, not to the public web.
    pub ca: Option<PathBuf>,
    /// A certificate (PEM) to present to servers that require one (mTLS)…
    pub cert: Option<PathBuf>,
    /// …and its private key (PEM).
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// Whether anything is configured at all.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// A client configuration trusting only `files.ca` and presenting `files.cert` if given.
/// A certificate without its key (or the reverse) is an error, as is a client certificate
/// without a CA to check the server with. ALPN is left to the caller (an HTTP/1.1 pool and a
/// gRPC channel want different protocols).
pub fn client_config(files: &ClientTlsFiles) -> Result<ClientConfig, TlsError> {
    let Some(ca) = &files.ca else {
        return Err(TlsError::Pem {
            path: files.cert.clone().unwrap_or_default(),
            message: "a CA file to verify the server is required for TLS to workers".into(),
        });
    };
    let roots = pem::roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(pem::certificates(cert)?, pem::private_key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(path), None) | (None, Some(path)) => {
            return Err(TlsError::Pem {
                path: path.clone(),
                message: "a client certificate and its key go together: give both".into(),
            })
        }
    };
    Ok(config)
}
