//! Settings for the managed services a deployment reaches but does not run: a Redis over TLS,
//! read from the files the flags name.

use std::path::Path;

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

