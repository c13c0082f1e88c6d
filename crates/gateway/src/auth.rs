//! Who is calling: JWT bearer tokens, verified at the gateway.
//!
//! - Keys: an HS256 shared secret, or public keys (RS256/ES256) from a PEM file, a JWKS file
//!   or a JWKS URL (an identity provider's, perhaps found through its OpenID discovery
//!   document). A JWKS file is read again when it changes ([`Authenticator::reload_if_changed`],
//!   run every few seconds by [`Authenticator::watch`]); a JWKS URL is fetched again on a
//!   schedule and when a token names a `kid` not in the set, at most once per
//!   [`RemoteJwks::min_interval`]; so keys can be rotated without a restart.
//! - Checks: the signature, with the algorithm the key is for and no other (a token signed
//!   with HS256 using an RSA public key as the secret is refused: algorithm confusion), `exp`
//!   (required), `nbf`, `iss` and `aud` when configured, with a small leeway for clock skew.
//!   `alg: none` cannot be verified by any key and is refused.
//! - The token's `sub` is the caller's identity: the owner of the tasks it submits, the key of
//!   its rate limit and of its dedupe scope.
//!
//! Without keys, the gateway runs only with `--insecure-no-auth`, bound to loopback: every
//! caller is then `anonymous`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use error::{FetchError, JwksError, KeyError, UnsupportedKey};
use keys::load_keys;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// How often a JWKS file is checked for changes.
const JWKS_POLL: Duration = Duration::from_secs(2);
/// The identity of every caller when authentication is off.
pub const ANONYMOUS: &str = "anonymous";
/// Longest identity accepted (a `sub` claim).
const MAX_SUBJECT_BYTES: usize = 256;

/// Where the verification keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// A shared secret: HS256.
    Secret(Vec<u8>),
    /// A PEM public key (RSA: RS256, or EC P-256: ES256).
    PublicKeyPem(PathBuf),
    /// A JWKS file (RSA and EC keys, chosen by `kid`).
    Jwks(PathBuf),
    /// A JWKS fetched over HTTPS from an identity provider.
    JwksUrl(RemoteJwks),
}

/// A JWKS served by an identity provider, and how often to fetch it.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    /// The `https://` URL of the key set, or of the issuer with `discover`.
    pub url: String,
    /// `url` is an issuer: the key set's URL is the `jwks_uri` of its
    /// `/.well-known/openid-configuration`.
    pub discover: bool,
    /// A CA (PEM) trusted besides the system's roots, for a provider with a private CA.
    pub ca: Option<PathBuf>,
    /// Time between two scheduled fetches.
    pub refresh: Duration,
    /// Least time between two fetches caused by tokens naming an unknown `kid`, so that such
    /// tokens cannot make the gateway flood the provider.
    pub min_interval: Duration,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeySource::PublicKeyPem(p) => write!(f, "PublicKeyPem({})", p.display()),
            KeySource::Jwks(p) => write!(f, "Jwks({})", p.display()),
            KeySource::JwksUrl(r) => write!(f, "JwksUrl({})", r.url),
        }
    }
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// No authentication (`--insecure-no-auth`): every caller is [`ANONYMOUS`].
    Disabled,
    /// JWT bearer tokens.
    Jwt {
        /// The keys.
        keys: KeySource,
        /// Required `iss`, if set.
        issuer: Option<String>,
        /// Required `aud` (one of), if set.
        audience: Option<String>,
    },
}

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// The token failed verification; the reason says which check.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// One verification key and the algorithms it may verify.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

/// The claims batchgate reads; the others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
}

/// Verifies tokens. Cheap to share behind an `Arc`.
pub struct Authenticator {
    config: AuthConfig,
    keys: RwLock<Vec<Key>>,
    /// The JWKS file's modification time when last read.
    jwks_mtime: RwLock<Option<SystemTime>>,
    /// Fetches a JWKS URL.
    remote: Option<remote::Fetcher>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads the keys; fails with a message naming the file or the problem.
    pub fn new(config: AuthConfig) -> Result<Self, KeyError> {
        let keys = match &config {
            AuthConfig::Disabled
            | AuthConfig::Jwt {
                keys: KeySource::JwksUrl(_),
                ..
            } => Vec::new(),
            AuthConfig::Jwt { keys, .. } => load_keys(keys)?,
        };
        let remote = match &config {
            AuthConfig::Jwt {
                keys: KeySource::JwksUrl(source),
                ..
            } => Some(remote::Fetcher::new(source.clone())?),
            _ => None,
        };
        let mtime = match &config {
            AuthConfig::Jwt {
                keys: KeySource::Jwks(path),
                ..
            } => modified(path),
            _ => None,
        };
        Ok(Authenticator {
            config,
            keys: RwLock::new(keys),
            jwks_mtime: RwLock::new(mtime),
            remote,
        })
    }

    /// Fetches the keys of a JWKS URL for the first time (nothing to do for other sources).
    /// A gateway that cannot get them does not start: it would refuse every token.
    pub async fn load_remote(&self) -> Result<(), FetchError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let keys = remote.fetch().await?;
        tracing::info!(keys = keys.len(), url = %remote.url(), "JWKS fetched");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    /// [`Authenticator::identify`], first fetching a JWKS URL again if the token names a `kid`
    /// the set does not hold (a key the provider rotated in), at most once per
    /// [`RemoteJwks::min_interval`] whatever the tokens say.
    pub async fn identify_fresh(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        if let Some(remote) = &self.remote {
            if let Some(kid) = self.unknown_kid(authorization) {
                // Boxed: the fetch's future is large (an HTTP client's), and unboxed it would
                // make the future of every request that is authenticated that much larger.
                let fetch = Box::pin(remote.fetch_for_unknown_kid(|| self.knows(&kid)));
                if let Some(keys) = fetch.await {
                    *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                }
            }
        }
        self.identify(authorization)
    }

    /// How many times the JWKS URL was fetched (0 for other key sources).
    pub fn jwks_fetches(&self) -> u64 {
        self.remote.as_ref().map_or(0, remote::Fetcher::fetches)
    }

    /// The `kid` of a bearer token, if the key set has no key with it.
    fn unknown_kid(&self, authorization: Option<&str>) -> Option<String> {
        let token = bearer_token(authorization)?;
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        (!self.knows(&kid)).then_some(kid)
    }

    fn knows(&self, kid: &str) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Fetches a JWKS URL again (the schedule); a failure keeps the last good set.
    async fn refresh_remote(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        if let Some(keys) = remote.fetch_logged().await {
            *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        }
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        matches!(self.config, AuthConfig::Jwt { .. })
    }

    /// The caller's identity from the `Authorization` header's value, if any.
    pub fn identify(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        let AuthConfig::Jwt {
            issuer, audience, ..
        } = &self.config
        else {
            return Ok(ANONYMOUS.to_owned());
        };
        let token = bearer_token(authorization).ok_or(AuthError::Missing)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token ({e})")))?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let candidates = keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        });
        let mut last = AuthError::Invalid(format!(
            "no key for algorithm {:?}{}",
            header.alg,
            header
                .kid
                .as_deref()
                .map(|k| format!(" and kid {k:?}"))
                .unwrap_or_default()
        ));
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.leeway = LEEWAY_SECS;
            validation.validate_nbf = true;
            // A configured issuer or audience is required, not only checked when present: a
            // token without the claim would otherwise pass.
            let mut required = vec!["exp", "sub"];
            if let Some(iss) = issuer {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            match audience {
                Some(aud) => {
                    validation.set_audience(&[aud]);
                    required.push("aud");
                }
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&required);
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let Some(sub) = data.claims.sub else {
                        return Err(AuthError::Invalid("missing claim `sub`".into()));
                    };
                    if sub.is_empty() || sub.len() > MAX_SUBJECT_BYTES {
                        return Err(AuthError::Invalid("`sub` must be 1 to 256 bytes".into()));
                    }
                    return Ok(sub);
                }
                Err(e) => last = AuthError::Invalid(describe(&e)),
            }
        }
        Err(last)
    }

    /// Reads the JWKS file again if it changed since it was last read. A file that no longer
    /// parses keeps the old keys (and is logged), so a half-written file cannot lock everyone
    /// out.
    pub fn reload_if_changed(&self) {
        let AuthConfig::Jwt {
            keys: source @ KeySource::Jwks(path),
            ..
        } = &self.config
        else {
            return;
        };
        let now = modified(path);
        {
            let seen = self.jwks_mtime.read().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return;
            }
        }
        match load_keys(source) {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), path = %path.display(), "JWKS reloaded");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                *self.jwks_mtime.write().unwrap_or_else(|p| p.into_inner()) = now;
            }
            Err(error) => {
                tracing::warn!(%error, "JWKS changed but cannot be used; keeping the old keys");
            }
        }
    }

    /// Checks the JWKS file for changes every 2 s, or fetches the JWKS URL again every
    /// [`RemoteJwks::refresh`], until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        if let Some(remote) = &self.remote {
            let every = remote.refresh_every();
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => self.refresh_remote().await,
                }
            }
        }
        if !matches!(
            self.config,
            AuthConfig::Jwt {
                keys: KeySource::Jwks(_),
                ..
            }
        ) {
            return;
        }
        let mut every = tokio::time::interval(JWKS_POLL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => self.reload_if_changed(),
            }
        }
    }
}

/// The token of an `Authorization: Bearer …` value.
fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What the caller may be told of a verification failure: which check failed, not more.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "algorithm not accepted".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        _ => "malformed token".into(),
    }
}

mod error;
mod keys;
mod remote;
#[cfg(test)]
mod tests;
