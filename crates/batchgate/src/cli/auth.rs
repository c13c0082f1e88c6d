//! Flags of the HTTP API's edge: who may call (`AuthArgs`), and what protects it — shedding,
//! per-caller rate limits, the admin API (`EdgeArgs`). `Debug` shows no secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use batchgate_gateway::auth::KeySource;
use batchgate_gateway::{AuthConfig, ShedBound};
use clap::Args;

use super::error::{ms, ConfigError};
use batchgate_gateway::config::{EdgeConfig, RateLimitConfig, DEFAULT_RATE_LIMIT};

/// Shortest `--jwt-secret`, in bytes: HS256 keys shorter than its output can be guessed.
const MIN_JWT_SECRET_BYTES: usize = 32;
/// Shortest `--admin-token`, in characters.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Who may call the API.
#[derive(Args)]
pub struct AuthArgs {
    /// HS256 shared secret that signs client tokens (at least 32 bytes).
    #[arg(long, env = "BATCHGATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key (RSA: RS256, or EC P-256: ES256) that verifies client tokens.
    #[arg(long, env = "BATCHGATE_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS of public keys (chosen by `kid`): a file, read again when it changes, or an
    /// identity provider's `https://` URL, fetched every --jwks-refresh-secs and when a token
    /// names an unknown `kid` (at most once per --jwks-min-refresh-secs); a failed fetch keeps
    /// the last good keys.
    #[arg(long, env = "BATCHGATE_JWKS", value_name = "FILE|URL")]
    pub jwks: Option<String>,

    /// Find the JWKS URL in the OpenID discovery document of --jwt-issuer
    /// (`ISSUER/.well-known/openid-configuration`, its `jwks_uri`) instead of --jwks.
    #[arg(long, env = "BATCHGATE_JWKS_FROM_ISSUER", conflicts_with = "jwks")]
    pub jwks_from_issuer: bool,

    /// CA certificate (PEM) trusted for the JWKS URL besides the system's roots (an
    /// identity provider with a private CA).
    #[arg(long, env = "BATCHGATE_JWKS_CA", value_name = "FILE")]
    pub jwks_ca: Option<PathBuf>,

    /// Time between two scheduled fetches of a JWKS URL, in seconds.
    #[arg(long, env = "BATCHGATE_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,

    /// Least time between two fetches of a JWKS URL caused by tokens naming an unknown `kid`,
    /// in seconds: such tokens cannot make the gateway flood the identity provider.
    #[arg(long, env = "BATCHGATE_JWKS_MIN_REFRESH_SECS", default_value_t = 10)]
    pub jwks_min_refresh_secs: u64,

    /// Required `iss` claim.
    #[arg(long, env = "BATCHGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long, env = "BATCHGATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Serve without authentication: every caller is `anonymous` and can read every result.
    /// Refused unless --listen is a loopback address.
    #[arg(long, env = "BATCHGATE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

/// How a secret flag shows in `Debug`: whether it is set, never its value.
fn redacted(secret: Option<&String>) -> Option<&'static str> {
    secret.map(|_| "<redacted>")
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field("jwt_secret", &redacted(self.jwt_secret.as_ref()))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwks", &self.jwks)
            .field("jwks_from_issuer", &self.jwks_from_issuer)
            .field("jwks_ca", &self.jwks_ca)
            .field("jwks_refresh_secs", &self.jwks_refresh_secs)
            .field("jwks_min_refresh_secs", &self.jwks_min_refresh_secs)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
}

impl AuthArgs {
    /// The authentication the flags ask for, checked against where the API listens.
    pub fn into_config(self, listen: SocketAddr) -> Result<AuthConfig, ConfigError> {
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_JWT_SECRET_BYTES)
        {
            return Err(ConfigError::ShortJwtSecret);
        }
        let jwks = crate::managed::jwks_source(&self)?;
        let sources = [
            self.jwt_secret.map(|s| KeySource::Secret(s.into_bytes())),
            self.jwt_public_key.map(KeySource::PublicKeyPem),
            jwks,
        ];
        let mut given: Vec<KeySource> = sources.into_iter().flatten().collect();
        match (given.len(), self.insecure_no_auth) {
            (0, true) if listen.ip().is_loopback() => Ok(AuthConfig::Disabled),
            (0, true) => Err(ConfigError::NoAuthOffLoopback(listen)),
            (0, false) => Err(ConfigError::NoAuth),
            (1, false) => Ok(AuthConfig::Jwt {
                keys: given.remove(0),
                issuer: self.jwt_issuer,
                audience: self.jwt_audience,
            }),
            (_, true) => Err(ConfigError::NoAuthWithKeys),
            (_, false) => Err(ConfigError::SeveralKeySources),
        }
    }
}

/// Shedding, per-client limits, the admin API.
#[derive(Args)]
pub struct EdgeArgs {
    /// Bearer token of the admin API (`/admin/dlq`…); without it the admin API is off.
    #[arg(long, env = "BATCHGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// The latency objective that shedding protects, in milliseconds (the p99 accepted tasks
    /// should stay under). New tasks get 503 `overloaded` with Retry-After only while the
    /// workers are the bottleneck (their slots all taken most of the time) and a new task's
    /// estimated queue wait plus one worker call would pass 60% of it (the rest is the tail's
    /// headroom). 0 turns shedding off. See docs/batching.md, "Deadlines and shedding".
    #[arg(long, env = "BATCHGATE_LATENCY_OBJECTIVE_MS", default_value_t = ms(batchgate_gateway::shed::DEFAULT_OBJECTIVE))]
    pub latency_objective_ms: u64,

    /// Instead of the objective, shed when a new task's estimated queue wait alone would pass
    /// this many milliseconds (still only while the workers are the bottleneck); 0 turns
    /// shedding off.
    #[arg(long, env = "BATCHGATE_SHED_WAIT_MS")]
    pub shed_wait_ms: Option<u64>,

    /// Requests each authenticated caller may send per --rate-limit-period (GCRA: a whole
    /// period's worth may come at once); past it, 429 with Retry-After and RateLimit-* headers.
    /// Exact across gateways on Redis. 0 turns it off. Not applied without authentication.
    #[arg(long, env = "BATCHGATE_RATE_LIMIT", default_value_t = DEFAULT_RATE_LIMIT.limit)]
    pub rate_limit: u64,

    /// The period of --rate-limit (e.g. `60s`, `1h`).
    #[arg(long, env = "BATCHGATE_RATE_LIMIT_PERIOD", default_value = "60s", value_parser = batchgate_flags::parse_duration)]
    pub rate_limit_period: Duration,

    /// A caller with a limit of its own, `USER=N` (N requests per period); repeat for several.
    #[arg(
        long = "rate-limit-override",
        env = "BATCHGATE_RATE_LIMIT_OVERRIDES",
        value_delimiter = ',',
        value_name = "USER=N"
    )]
    pub rate_limit_overrides: Vec<String>,
}

impl std::fmt::Debug for EdgeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeArgs")
            .field("admin_token", &redacted(self.admin_token.as_ref()))
            .field("latency_objective_ms", &self.latency_objective_ms)
            .field("shed_wait_ms", &self.shed_wait_ms)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_period", &self.rate_limit_period)
            .field("rate_limit_overrides", &self.rate_limit_overrides)
            .finish()
    }
}

impl EdgeArgs {
    /// The edge's protections, checked; `auth` is who may call.
    pub fn into_config(self, auth: AuthConfig) -> Result<EdgeConfig, ConfigError> {
        let mut overrides = HashMap::new();
        for entry in &self.rate_limit_overrides {
            let parsed = entry
                .rsplit_once('=')
                .and_then(|(user, n)| Some((user, n.trim().parse::<u64>().ok()?)))
                .filter(|(user, n)| !user.is_empty() && *n > 0);
            let Some((user, n)) = parsed else {
                return Err(ConfigError::RateLimitOverride(entry.clone()));
            };
            overrides.insert(user.to_owned(), n);
        }
        if self.rate_limit > 0 && self.rate_limit_period.is_zero() {
            return Err(ConfigError::ZeroRateLimitPeriod);
        }
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.chars().count() < MIN_ADMIN_TOKEN_CHARS)
        {
            return Err(ConfigError::ShortAdminToken);
        }
        Ok(EdgeConfig {
            admin_token: self.admin_token,
            shed: match (self.shed_wait_ms, self.latency_objective_ms) {
                (Some(0), _) | (None, 0) => ShedBound::Off,
                (Some(ms), _) => ShedBound::QueueWait(Duration::from_millis(ms)),
                (None, ms) => ShedBound::Objective(Duration::from_millis(ms)),
            },
            rate_limit: (self.rate_limit > 0).then_some(RateLimitConfig {
                default: batchgate_queue::Rate {
                    limit: self.rate_limit,
                    period: self.rate_limit_period,
                },
                overrides,
            }),
            auth,
        })
    }
}
