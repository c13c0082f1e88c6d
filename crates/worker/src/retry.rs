//! Retries around any [`Worker`]: a failed or timed-out call is tried again, up to a limit,
//! after an exponential backoff with full jitter.
//!
//! Only failures that another try may cure are retried: timeouts, connection failures, `429`
//! and `5xx` answers, and malformed answers. A `4xx` answer is the worker's judgement of the
//! batch itself (`413` too large, `422` malformed) and would fail again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use tracing::warn;

use crate::{Worker, WorkerError};

/// Default retries after the first try (the article: 3, with exponential backoff).
pub const DEFAULT_RETRIES: u32 = 3;
/// Default backoff before the first retry; it doubles after each.
pub const DEFAULT_BASE_BACKOFF: Duration = Duration::from_millis(50);
/// Default cap on one backoff.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (0: no retries).
    pub retries: u32,
    /// Backoff before the first retry.
    pub base_backoff: Duration,
    /// Cap on one backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: DEFAULT_RETRIES,
            base_backoff: DEFAULT_BASE_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The longest wait before retry number `attempt` (1-based): `base × 2^(attempt−1)`,
    /// capped. The actual wait is drawn uniformly below it ("full jitter"), so batchers that
    /// failed together do not retry together.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Whether another try may succeed.
pub fn is_retryable(error: &WorkerError) -> bool {
    match error {
        WorkerError::Timeout | WorkerError::Unreachable(_) | WorkerError::InvalidResponse(_) => {
            true
        }
        WorkerError::Status { status, .. } => *status == 429 || *status >= 500,
    }
}

/// A worker whose calls are retried by a [`RetryPolicy`].
pub struct Retrying {
    /// The worker called.
    inner: Arc<dyn Worker>,
    /// When and how often to retry.
    policy: RetryPolicy,
    /// Called once per retry, e.g. to count retries in metrics.
    on_retry: Box<dyn Fn(&WorkerError) + Send + Sync>,
}

impl Retrying {
    /// Wraps `inner`; `on_retry` is told of every failure that is about to be retried.
    pub fn new(
        inner: Arc<dyn Worker>,
        policy: RetryPolicy,
        on_retry: impl Fn(&WorkerError) + Send + Sync + 'static,
    ) -> Self {
        Retrying {
            inner,
            policy,
            on_retry: Box::new(on_retry),
        }
    }
}

#[async_trait]
impl Worker for Retrying {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<String>, WorkerError> {
        let mut attempt = 0;
        loop {
            match self.inner.infer(inputs).await {
                Ok(outputs) => return Ok(outputs),
                Err(error) if attempt < self.policy.retries && is_retryable(&error) => {
                    attempt += 1;
                    (self.on_retry)(&error);
                    let ceiling = self.policy.backoff_ceiling(attempt);
                    let wait = ceiling.mul_f64(rand::rng().random::<f64>());
                    warn!(%error, attempt, wait_ms = wait.as_millis() as u64, size = inputs.len(), "worker call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// Fails with the given errors in turn, then succeeds.
    struct Scripted {
        failures: Mutex<Vec<WorkerError>>,
        calls: AtomicU32,
    }

    #[async_trait]
    impl Worker for Scripted {
        async fn infer(&self, inputs: &[String]) -> Result<Vec<String>, WorkerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.failures.lock().expect("lock").pop() {
                Some(e) => Err(e),
                None => Ok(inputs.to_vec()),
            }
        }
    }

    fn scripted(mut failures: Vec<WorkerError>) -> Arc<Scripted> {
        failures.reverse();
        Arc::new(Scripted {
            failures: Mutex::new(failures),
            calls: AtomicU32::new(0),
        })
    }

    fn status(code: u16) -> WorkerError {
        WorkerError::Status {
            status: code,
            message: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let inner = scripted(vec![WorkerError::Timeout, status(503)]);
        let retries = Arc::new(AtomicU32::new(0));
        let counted = retries.clone();
        let w = Retrying::new(inner.clone(), RetryPolicy::default(), move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let start = tokio::time::Instant::now();
        assert_eq!(
            w.infer(&["a".into()]).await.expect("third try works"),
            ["a"]
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
        assert_eq!(retries.load(Ordering::SeqCst), 2);
        // Full jitter: at most 50 ms + 100 ms of backoff in all.
        assert!(start.elapsed() <= Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_retry_limit() {
        let inner = scripted(vec![status(500); 10]);
        let w = Retrying::new(inner.clone(), RetryPolicy::default(), |_| {});
        let err = w.infer(&["a".into()]).await.expect_err("fails");
        assert!(matches!(err, WorkerError::Status { status: 500, .. }));
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            4,
            "one try and 3 retries"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_verdict_on_the_batch_is_not_retried() {
        for code in [400, 413, 422] {
            let inner = scripted(vec![status(code)]);
            let w = Retrying::new(inner.clone(), RetryPolicy::default(), |_| {});
            assert!(w.infer(&["a".into()]).await.is_err());
            assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "{code}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy {
            retries: 10,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
        };
        let ceilings: Vec<u64> = (1..=5)
            .map(|a| p.backoff_ceiling(a).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [50, 100, 200, 300, 300]);
        assert!(is_retryable(&status(429)) && !is_retryable(&status(404)));
    }
}
