//! Why verification keys cannot be had: read from a file, parsed from a JWKS document, or
//! fetched from an identity provider. Every message names the flag, the file or URL, and the
//! problem; the errors underneath are part of the message, not a separate cause.

use std::path::PathBuf;

use jsonwebtoken::jwk::{EllipticCurve, KeyAlgorithm};

use super::remote::MAX_DOCUMENT_BYTES;

/// Why the verification keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `--jwt-secret` is shorter than HS256 needs.
    #[error("--jwt-secret must be at least 32 bytes")]
    ShortSecret,
    /// The JWT library refused `--jwt-secret`.
    #[error("--jwt-secret cannot be used: {0}")]
    Secret(jsonwebtoken::errors::Error),
    /// A key file could not be read.
    #[error("cannot read {flag} {}: {error}", path.display())]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What reading it said.
        error: std::io::Error,
    },
    /// `--jwt-public-key` is an EC key on a curve ES256 cannot use: it would refuse every
    /// token, so it is refused at start.
    #[error(
        "--jwt-public-key {} is an EC key on a curve other than P-256; only P-256 (ES256) EC \
         keys are supported",
        path.display()
    )]
    PemCurve {
        /// The file.
        path: PathBuf,
    },
    /// `--jwt-public-key` holds no public key batchgate reads.
    #[error("--jwt-public-key {} is neither an RSA nor an EC public key in PEM", path.display())]
    PemKind {
        /// The file.
        path: PathBuf,
    },
    /// A JWKS document is unusable.
    #[error(transparent)]
    Jwks(#[from] JwksError),
    /// A JWKS URL's keys cannot be fetched (or its client made).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A JWKS URL was given where keys are read from a file.
    #[error("the JWKS at {url} is fetched, not read")]
    Fetched {
        /// The URL.
        url: String,
    },
}

/// Why a JWKS document gives no keys.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// It is not a JSON Web Key Set.
    #[error("--jwks {origin} is not a JWKS: {error}")]
    NotJwks {
        /// The file or URL it came from.
        origin: String,
        /// What parsing it said.
        error: serde_json::Error,
    },
    /// It holds a signing key batchgate cannot verify with.
    #[error("--jwks {origin}: key {key}: {why}")]
    Unsupported {
        /// The file or URL it came from.
        origin: String,
        /// The key's `kid`, or its place in the set.
        key: String,
        /// What is wrong with it.
        why: UnsupportedKey,
    },
    /// The JWT library refused a key.
    #[error("--jwks {origin}: unusable key: {error}")]
    Unusable {
        /// The file or URL it came from.
        origin: String,
        /// What the library said.
        error: jsonwebtoken::errors::Error,
    },
    /// It holds no key for verifying signatures.
    #[error("--jwks {origin} holds no RSA or EC key")]
    NoKeys {
        /// The file or URL it came from.
        origin: String,
    },
}

/// A signing key batchgate cannot verify with: refused, so that the set is not accepted only
/// to refuse every token signed with that key.
#[derive(Debug, thiserror::Error)]
pub enum UnsupportedKey {
    /// An RSA key stated for an algorithm other than RS256.
    #[error("RSA key for {0:?}; only RS256 RSA keys are supported")]
    RsaAlgorithm(KeyAlgorithm),
    /// A P-256 key stated for an algorithm other than ES256.
    #[error("P-256 key for {0:?}; only ES256 EC keys are supported")]
    EcAlgorithm(KeyAlgorithm),
    /// An EC key on another curve.
    #[error("EC key on curve {0:?}; only P-256 (ES256) EC keys are supported")]
    Curve(EllipticCurve),
    /// An Edwards-curve key.
    #[error("OKP (EdDSA) key; only RS256 and ES256 keys are supported")]
    Okp,
    /// A key type the JWT library does not know.
    #[error("unknown key type; only RS256 and ES256 keys are supported")]
    Unknown,
}

/// Why a JWKS URL's keys could not be fetched, or its client made.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `https://`: keys fetched in clear text could be forged.
    #[error("--jwks {url} must be an https:// URL (keys fetched in clear text could be forged)")]
    NotHttps {
        /// The URL.
        url: String,
    },
    /// `--jwks-ca` could not be read.
    #[error("cannot read --jwks-ca {}: {error}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        error: std::io::Error,
    },
    /// `--jwks-ca` holds no certificate.
    #[error("--jwks-ca {} holds no PEM certificate: {error}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What parsing it said.
        error: reqwest::Error,
    },
    /// The HTTPS client could not be made.
    #[error("cannot make the JWKS client: {0}")]
    Client(reqwest::Error),
    /// The request failed (connection, TLS, redirects).
    #[error("cannot fetch {url}: {error}")]
    Request {
        /// The URL.
        url: String,
        /// What the client said.
        error: reqwest::Error,
    },
    /// The provider answered with an error status.
    #[error("{url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// Its status.
        status: reqwest::StatusCode,
    },
    /// The answer's body could not be read.
    #[error("cannot read {url}: {error}")]
    Body {
        /// The URL.
        url: String,
        /// What the client said.
        error: reqwest::Error,
    },
    /// The answer is larger than a key set or discovery document can be.
    #[error("{url} is larger than {} bytes", MAX_DOCUMENT_BYTES)]
    TooLarge {
        /// The URL.
        url: String,
    },
    /// The whole fetch took longer than its bound.
    #[error("fetching {url} timed out")]
    Timeout {
        /// The URL.
        url: String,
    },
    /// The discovery document is not JSON.
    #[error("{url} is not JSON: {error}")]
    DiscoveryNotJson {
        /// The discovery document's URL.
        url: String,
        /// What parsing it said.
        error: serde_json::Error,
    },
    /// The discovery document names no key set.
    #[error("{url} names no `jwks_uri`")]
    NoJwksUri {
        /// The discovery document's URL.
        url: String,
    },
    /// The discovery document names a key set that is not `https://`.
    #[error("{url} names a jwks_uri that is not https://")]
    JwksUriNotHttps {
        /// The discovery document's URL.
        url: String,
    },
    /// The key set is not UTF-8.
    #[error("{url} is not UTF-8")]
    NotUtf8 {
        /// The URL.
        url: String,
    },
    /// The key set is unusable.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}
