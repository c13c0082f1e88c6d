//! Settings for the managed services a deployment reaches but does not run: a Redis over TLS,
//! read from the files the flags name, and an identity provider's JWKS URL.

use std::path::Path;
use std::time::Duration;

use batchgate_redis::RedisTls;

/// The TLS settings for `rediss://` URLs from `--redis-ca`, `--redis-client-cert` and
/// `--redis-client-key`, read now so that a missing file stops start-up with its name.
pub fn redis_tls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<RedisTls, String> {
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read --{flag} {}: {e}", path.display()))
    };
    let ca = ca.map(|p| read("redis-ca", p)).transpose()?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((
            read("redis-client-cert", cert)?,
            read("redis-client-key", key)?,
        )),
        (None, None) => None,
        _ => return Err("--redis-client-cert and --redis-client-key go together".into()),
    };
    Ok(RedisTls { ca, client })
}

/// The key source `--jwks` (a file or an `https://` URL) or `--jwks-from-issuer` names, if
/// either is given.
pub fn jwks_source(
    auth: &crate::cli::auth::AuthArgs,
) -> Result<Option<batchgate_gateway::auth::KeySource>, String> {
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
                .ok_or("--jwks-from-issuer needs --jwt-issuer")?;
            Some(remote(issuer, true))
        }
        (Some(url), false) if url.contains("://") => Some(remote(url.clone(), false)),
        (Some(path), false) => Some(KeySource::Jwks(path.into())),
        (None, false) => None,
    };
    if auth.jwks_ca.is_some() && !matches!(source, Some(KeySource::JwksUrl(_))) {
        return Err("--jwks-ca applies to a JWKS URL only".into());
    }
    Ok(source)
}

/// A secret kept in a file (an API key, a token): its content without surrounding whitespace,
/// which must not be empty. Errors name the file, never its content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}
