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

/// What the gateway allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Largest accepted `input`, in bytes.
    pub max_input_bytes: usize,
    /// Bound on a whole request, from its first byte to its answer.
    pub request_timeout: Duration,
    /// Seconds a shed client is told to wait before retrying.
    pub retry_after_secs: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
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
