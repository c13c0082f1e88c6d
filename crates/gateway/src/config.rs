//! The limits the gateway enforces.

use std::time::Duration;

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

impl std::str::FromStr for DedupeScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "owner" => Ok(DedupeScope::Owner),
            "global" => Ok(DedupeScope::Global),
            other => Err(format!(
                "dedupe scope must be `owner` or `global`, got {other:?}"
            )),
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
}

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
        }
    }
}

impl GatewayConfig {
    /// Largest request body: the input limit with room for JSON escaping (`\u00XX` is six
    /// bytes for one) and the other fields.
    pub fn max_body_bytes(&self) -> usize {
        self.max_input_bytes.saturating_mul(6).saturating_add(4096)
    }
}
