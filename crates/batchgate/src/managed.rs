//! Settings for the managed services a deployment reaches but does not run: a Redis over TLS,
//! read from the files the flags name, and an identity provider's JWKS URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use batchgate_redis::RedisTls;

/// Why a file a flag names could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read --{flag} {}: {error}", path.display())]
pub struct ReadError {
    /// The flag, without its dashes.
    flag: &'static str,
    /// The file.
    path: PathBuf,
    /// What reading it said.
    error: std::io::Error,
}

/// Why the Redis TLS flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisTlsError {
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A client certificate without its key, or a key without its certificate.
    #[error("--redis-client-cert and --redis-client-key go together")]
    HalfAPair,
}

/// Why the JWKS flags do not name a key source.
#[derive(Debug, thiserror::Error)]
pub enum JwksFlagsError {
    /// Discovery needs the issuer whose document to read.
    #[error("--jwks-from-issuer needs --jwt-issuer")]
    DiscoveryWithoutIssuer,
    /// A CA for a key set that is not fetched.
    #[error("--jwks-ca applies to a JWKS URL only")]
    CaWithoutUrl,
}

/// Why a secret file gives no secret. Never holds the content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        error: std::io::Error,
    },
    /// Nothing but whitespace.
    #[error("{} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The TLS settings for `rediss://` URLs from `--redis-ca`, `--redis-client-cert` and
/// `--redis-client-key`, read now so that a missing file stops start-up with its name.
pub fn redis_tls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<RedisTls, RedisTlsError> {
    let read = |flag: &'static str, path: &Path| {
        std::fs::read(path).map_err(|error| ReadError {
            flag,
            path: path.to_owned(),
            error,
        })
    };
    let ca = ca.map(|p| read("redis-ca", p)).transpose()?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((
            read("redis-client-cert", cert)?,
            read("redis-client-key", key)?,
        )),
        (None, None) => None,
        _ => return Err(RedisTlsError::HalfAPair),
    };
    Ok(RedisTls { ca, client })
}

/// The key source `--jwks` (a file or an `https://` URL) or `--jwks-from-issuer` names, if
/// either is given.
pub fn jwks_source(
    auth: &crate::cli::auth::AuthArgs,
) -> Result<Option<batchgate_gateway::auth::KeySource>, JwksFlagsError> {
    use batchgate_gateway::auth::{KeySource, RemoteJwks};
    let remote = |url: String, discover: bool| {
        KeySource::JwksUrl(RemoteJwks {
            url,
            discover,
            ca: auth.jwks_ca.clone(),
            refresh: Duration::from_secs(auth.jwks_refresh_secs.max(1)),
            min_interval: Duration::from_secs(auth.jwks_min_refresh_secs),
        })
    };
    let source = match (&auth.jwks, auth.jwks_from_issuer) {
        (_, true) => {
            let issuer = auth
                .jwt_issuer
                .clone()
                .ok_or(JwksFlagsError::DiscoveryWithoutIssuer)?;
            Some(remote(issuer, true))
        }
        (Some(url), false) if url.contains("://") => Some(remote(url.clone(), false)),
        (Some(path), false) => Some(KeySource::Jwks(path.into())),
        (None, false) => None,
    };
    if auth.jwks_ca.is_some() && !matches!(source, Some(KeySource::JwksUrl(_))) {
        return Err(JwksFlagsError::CaWithoutUrl);
    }
    Ok(source)
}

/// A secret kept in a file (an API key, a token): its content without surrounding whitespace,
/// which must not be empty. Errors name the file, never its content.
pub fn read_secret_file(path: &Path) -> Result<String, SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| SecretFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(secret.to_owned())
}
