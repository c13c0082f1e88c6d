//! How batchgate's processes listen and connect.
//!
//! Layout:
//! - [`serve`]: the HTTP accept loop every server uses (gateway, batcher ops port, reference
//!   worker): HTTP/1.1 and HTTP/2, plain or TLS, graceful drain on shutdown.
//! - [`limits`]: [`ConnectionLimits`], what one client connection may hold and for how long
//!   (open connections, header and idle timeouts, head size, HTTP/2 streams).
//! - [`server_tls`]: [`ServerTls`], a TLS server configuration from PEM files, optionally
//!   requiring client certificates from a CA (mTLS), reloaded on SIGHUP or when the files
//!   change.
//! - [`client_tls`]: the client side: trust a CA, present a client certificate.
//! - [`certs`]: [`DevCerts`], a throwaway CA with a server and a client certificate, for tests
//!   and local runs (`batchgate certs`).
//!
//! Every TLS configuration here uses the `ring` provider explicitly, so no process-wide
//! default provider has to be installed.

pub mod certs;
pub mod client_tls;
pub mod limits;
mod pem;
pub mod serve;
pub mod server_tls;

use std::path::PathBuf;
use std::sync::Arc;

pub use certs::DevCerts;
pub use client_tls::{client_config, ClientTlsFiles};
pub use limits::{ConnectionLimits, LimitsError};
pub use serve::{serve, serve_with, App};
pub use server_tls::{ServerTls, TlsFiles};

/// Why a TLS configuration could not be built. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the certificates or key (e.g. the key does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA file.
    #[error("client CA {path}: {message}")]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The cryptography every configuration here uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process-wide default TLS provider, as the HTTP client (reqwest, built
/// with `rustls-no-provider`) requires before any client is built — with or without TLS.
/// Idempotent: call it before building any `reqwest::Client`.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
