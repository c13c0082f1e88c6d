//! Why flags were refused: one variant per kind of mistake, each message naming the flag.

use std::net::SocketAddr;

/// A flag value (or a combination of flags) that the process will not start with. Checked
/// before any port is bound; `main` prints it after "invalid configuration:".
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A count or a duration below its least useful value.
    #[error("--{flag} must be at least {min}")]
    AtLeast {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The smallest value accepted.
        min: u64,
    },
    /// A count outside its range.
    #[error("--{flag} must be between {min} and {max}")]
    Between {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The smallest value accepted.
        min: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// A probability outside [0, 1].
    #[error("--{flag} must be in [0, 1], got {value}")]
    Fraction {
        /// The flag, without its dashes.
        flag: &'static str,
        /// What was given.
        value: f64,
    },
    /// Fractional milliseconds that are negative, infinite or not a number.
    #[error("--{flag} must be a finite number ≥ 0, got {value}")]
    Millis {
        /// The flag, without its dashes.
        flag: &'static str,
        /// What was given.
        value: f64,
    },
    /// A slow call cannot be faster than a normal one.
    #[error("--slow-factor must be a finite number ≥ 1, got {0}")]
    SlowFactor(f64),
    /// The connection bounds of the HTTP port.
    #[error(transparent)]
    Connections(#[from] batchgate_net::LimitsError),
    /// The Redis URLs or their settings.
    #[error(transparent)]
    Redis(#[from] batchgate_redis::conn::RedisConfigError),
    /// The Redis TLS files.
    #[error(transparent)]
    RedisTls(#[from] crate::managed::RedisTlsError),
    /// The JWKS flags: discovery without an issuer, a CA for a key set that is not fetched.
    #[error(transparent)]
    Jwks(#[from] crate::managed::JwksFlagsError),
    /// A `--zone` that is no zone name.
    #[error("--zone: {0}")]
    Zone(#[from] batchgate_protocol::zone::ZoneError),
    /// `--redis-cluster` alone.
    #[error("--redis-cluster needs --redis URLs")]
    ClusterWithoutUrls,
    /// `gateway` and `batcher` share their queue through Redis.
    #[error("`batchgate {command}` needs --redis (its queue is shared)")]
    NeedsRedis {
        /// The subcommand.
        command: &'static str,
    },
    /// A `--worker-url` that names no worker we can call.
    #[error("--worker-url: {0}")]
    WorkerUrl(#[from] batchgate_worker::SpecError),
    /// A batcher without a worker.
    #[error("--worker-url is required")]
    NoWorker,
    /// A worker over TLS, but no CA to check its certificate with.
    #[error(
        "--worker-url {url} is reached over TLS: give --worker-ca (the CA that signed the worker's certificate)"
    )]
    NoWorkerCa {
        /// The worker.
        url: String,
    },
    /// Client TLS files without any worker that speaks TLS.
    #[error("--worker-ca, --client-cert and --client-key need an https:// --worker-url")]
    WorkerTlsUnused,
    /// Client certificates are only checked over TLS.
    #[error(
        "--client-ca needs --tls-cert and --tls-key (client certificates are checked only over TLS)"
    )]
    ClientCaWithoutTls,
    /// A model directory that cannot be loaded.
    #[cfg(feature = "model")]
    #[error("--model-dir: {0}")]
    ModelDir(#[from] batchgate_model::ModelError),
    /// An HS256 secret too short to resist guessing.
    #[error("--jwt-secret must be at least 32 bytes")]
    ShortJwtSecret,
    /// An open API reachable from other hosts.
    #[error("--insecure-no-auth is only allowed on a loopback address, not {0}")]
    NoAuthOffLoopback(SocketAddr),
    /// Neither keys nor the explicit opt-out.
    #[error(
        "no authentication configured: give --jwt-secret, --jwt-public-key or --jwks \
         (or --insecure-no-auth, on loopback only)"
    )]
    NoAuth,
    /// Keys and the opt-out at once.
    #[error("--insecure-no-auth cannot be combined with JWT keys")]
    NoAuthWithKeys,
    /// More than one source of keys.
    #[error("give only one of --jwt-secret, --jwt-public-key and --jwks")]
    SeveralKeySources,
    /// A per-user limit that is not `USER=N`.
    #[error("--rate-limit-override takes USER=N with N ≥ 1, got {0:?}")]
    RateLimitOverride(String),
    /// A rate over no time at all.
    #[error("--rate-limit-period must be longer than 0")]
    ZeroRateLimitPeriod,
    /// An admin token too short to resist guessing.
    #[error("--admin-token must be at least 16 characters")]
    ShortAdminToken,
    /// A `--model` that is not `NAME:worker=URL[,KEY=VALUE]…`.
    #[error("--model {0}")]
    Model(String),
    /// A `--model-name` that is no model name.
    #[error(
        "--model-name: {0:?} is not a model name (1 to 128 letters, digits, `.`, `_`, `-`, `:`)"
    )]
    ModelName(String),
}

/// `value` if it is at least `min`, else [`ConfigError::AtLeast`] naming `flag`.
pub(crate) fn at_least<T: Copy + Into<u64>>(
    flag: &'static str,
    value: T,
    min: u64,
) -> Result<T, ConfigError> {
    if value.into() >= min {
        Ok(value)
    } else {
        Err(ConfigError::AtLeast { flag, min })
    }
}

/// [`at_least`] for counts held in a `usize`.
pub(crate) fn count_at_least(
    flag: &'static str,
    value: usize,
    min: u64,
) -> Result<usize, ConfigError> {
    if u64::try_from(value).is_ok_and(|v| v >= min) {
        Ok(value)
    } else {
        Err(ConfigError::AtLeast { flag, min })
    }
}

/// Fractional milliseconds as given on the command line, checked.
pub(crate) fn millis(flag: &'static str, ms: f64) -> Result<std::time::Duration, ConfigError> {
    std::time::Duration::try_from_secs_f64(ms / 1000.0)
        .map_err(|_| ConfigError::Millis { flag, value: ms })
}

/// A probability flag, checked.
pub(crate) fn fraction(flag: &'static str, value: f64) -> Result<f64, ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Fraction { flag, value })
    }
}

/// Whole milliseconds of a default `Duration`, for a flag counted in milliseconds; `--help`
/// shows the number.
pub(crate) const fn ms(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

/// Fractional milliseconds of a default `Duration`, exact to the microsecond (`0.78`, not
/// `0.7800000000000001`).
pub(crate) const fn ms_f64(duration: std::time::Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}
