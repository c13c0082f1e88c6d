//! The limits the gateway enforces, and its protections (auth, rate limits, shedding).

use std::collections::HashMap;
use std::time::Duration;

use batchgate_queue::Rate;

use crate::auth::AuthConfig;
use crate::shed::ShedBound;

/// Default largest `input`, in bytes of UTF-8.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 64 * 1024;
/// The cap on `?wait_ms=`: a client may wait for its result this long at most.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Default bound on one HTTP request, body read included; longer than the longest wait.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
/// Largest `timeout_ms` a client may give (an hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// Default `Retry-After` on 429/503 answers, in seconds.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
/// Default most API requests (`/v1/…`, long polls included) a gateway serves at once. At
/// 10,000 requests/s and ~250 ms each, about 2,500 are open; the bound leaves room for
/// bursts and long polls while capping the memory and file descriptors one gateway commits.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 16_384;
/// Default most API requests one caller (a token's subject) may have in flight, long polls
/// included: a quarter of the gateway-wide limit, so one caller cannot take every slot, and
/// more than the ~2,500 a single caller keeps open at 10,000 requests/s.
pub const DEFAULT_MAX_REQUESTS_PER_CALLER: usize = 4096;
/// Default bound on receiving a request's body, from when its headers were read.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Whose identical inputs share one task (dedupe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DedupeScope {
    /// Only the same caller's: one user's input never answers with another user's task.
    #[default]
    Owner,
    /// Everyone's: an input anyone sent within the dedupe TTL is not run again. Saves GPU
    /// time across users, at a cost (docs/security.md): a caller learns that someone sent the
    /// same input, and such tasks belong to no one — any caller holding the id can read the
    /// result.
    Global,
}

/// A dedupe scope other than `owner` and `global`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dedupe scope must be `owner` or `global`, got {0:?}")]
pub struct UnknownDedupeScope(pub String);

impl std::str::FromStr for DedupeScope {
    type Err = UnknownDedupeScope;

    fn from_str(s: &str) -> Result<Self, UnknownDedupeScope> {
        match s {
            "owner" => Ok(DedupeScope::Owner),
            "global" => Ok(DedupeScope::Global),
            other => Err(UnknownDedupeScope(other.to_owned())),
        }
    }
}

/// What the gateway allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Largest accepted `input`, in bytes.
    pub max_input_bytes: usize,
    /// Bound on a whole request, from its first byte to its answer.
    pub request_timeout: Duration,
    /// Seconds a shed client is told to wait before retrying.
    pub retry_after_secs: u64,
    /// Most `/v1/…` requests served at once; more are answered 503 `concurrency_limited`.
    pub max_concurrent_requests: usize,
    /// Most `/v1/…` requests one authenticated caller may have in flight; more are answered
    /// 429 `too_many_in_flight`, before their bodies are read.
    pub max_requests_per_caller: usize,
    /// Bound on reading a request's body once its headers are in; past it, 408 `timeout`.
    pub body_read_timeout: Duration,
    /// Whose identical inputs share a task.
    pub dedupe_scope: DedupeScope,
    /// The zone this gateway runs in (`--zone`), stamped on every task it accepts.
    pub zone: Option<batchgate_protocol::zone::Zone>,
    /// The names of the models served (`--model-name`), as the OpenAI and KServe V2 front
    /// doors list them and requests name them; never empty.
    pub models: Vec<String>,
}

/// The name of the model when none is configured.
pub const DEFAULT_MODEL_NAME: &str = "default";

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_requests_per_caller: DEFAULT_MAX_REQUESTS_PER_CALLER,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            dedupe_scope: DedupeScope::Owner,
            zone: None,
            models: vec![DEFAULT_MODEL_NAME.to_owned()],
        }
    }
}

impl GatewayConfig {
    /// Whether a model of this name is served.
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }

    /// Largest request body: the input limit with room for JSON escaping (`\u00XX` is six
    /// bytes for one) and the other fields.
    pub fn max_body_bytes(&self) -> usize {
        self.max_input_bytes.saturating_mul(6).saturating_add(4096)
    }
}

/// The edge's protections and its admin API.
#[derive(Clone)]
pub struct EdgeConfig {
    /// Bearer token of the admin API (`/admin/...`); `None` disables it.
    pub admin_token: Option<String>,
    /// When new tasks are shed (503 `overloaded`): by default when the workers are the
    /// bottleneck and the estimate breaks the 500 ms objective.
    pub shed: ShedBound,
    /// Requests per period allowed to each authenticated caller, and per-user exceptions;
    /// `None`: unlimited.
    pub rate_limit: Option<RateLimitConfig>,
    /// Who may call. The library default is no authentication (tests, embedding); the command
    /// line requires JWT keys or an explicit `--insecure-no-auth` on loopback.
    pub auth: AuthConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            admin_token: None,
            shed: ShedBound::default(),
            rate_limit: Some(RateLimitConfig::default()),
            auth: AuthConfig::Disabled,
        }
    }
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("shed", &self.shed)
            .field("rate_limit", &self.rate_limit)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Per-user rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Every user's rate unless overridden.
    pub default: Rate,
    /// Users with a limit of their own (per the same period).
    pub overrides: HashMap<String, u64>,
}

/// The default: 1,000 requests per user per minute.
pub const DEFAULT_RATE_LIMIT: Rate = Rate {
    limit: 1000,
    period: Duration::from_secs(60),
};

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            default: DEFAULT_RATE_LIMIT,
            overrides: HashMap::new(),
        }
    }
}
