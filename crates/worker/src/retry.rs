//! Retries around any [`Worker`]: a failed or timed-out call is tried again, up to a limit,
//! after an exponential backoff with full jitter.
//!
//! Only failures that another try may cure are retried: timeouts, connection failures, `429`
//! and `5xx` answers, and malformed answers. A `4xx` answer is the worker's judgement of the
//! batch itself (`413` too large, `422` malformed) and would fail again.
//!
//! With a [`RetryBudget`], each retry is taken from it first: past the budget, the call fails
//! at once with [`WorkerError::RetryBudgetExhausted`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use tracing::warn;

use crate::{Output, RetryBudget, Worker, WorkerError};

/// Default retries after the first try (3, with exponential backoff).
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
    /// Whether overload answers (`429`/`503`) are retried here. A caller that reacts to
    /// overload itself (backpressure, requeueing) turns this off.
    pub retry_overload: bool,
    /// Retries and bisection calls may add at most this share of first tries, in percent,
    /// over a sliding window, plus a small allowance ([`crate::budget`]); `None`: no budget.
    pub budget_percent: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: DEFAULT_RETRIES,
            base_backoff: DEFAULT_BASE_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            retry_overload: true,
            budget_percent: Some(crate::budget::DEFAULT_RETRY_BUDGET_PERCENT),
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
        WorkerError::RetryBudgetExhausted(_) => false,
    }
}

/// What a call is, for the retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A batch's first call: it earns the budget its share.
    FirstTry,
    /// A call the caller has already taken from the budget ([`Retrying::try_extra`]), such
    /// as one half of a bisected batch.
    Extra,
}

/// A worker whose calls are retried by a [`RetryPolicy`].
pub struct Retrying {
    /// The worker called.
    inner: Arc<dyn Worker>,
    /// When and how often to retry.
    policy: RetryPolicy,
    /// Called once per retry, e.g. to count retries in metrics.
    on_retry: Box<dyn Fn(&WorkerError) + Send + Sync>,
    /// Called after every attempt, retried or not, with its error if it failed: how a
    /// concurrency limiter learns of each overload answer, not just the last.
    on_attempt: Box<AttemptObserver>,
    /// Bounds retries (and the caller's other extra calls) to a share of first tries; `None`:
    /// no bound but `policy.retries` per call.
    budget: Option<Arc<RetryBudget>>,
}

/// Told the outcome of each attempt (`None` for success, else its error) and how long it took.
type AttemptObserver = dyn Fn(Option<&WorkerError>, Duration) + Send + Sync;

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
            on_attempt: Box::new(|_, _| {}),
            budget: None,
        }
    }

    /// The same, with every retry taken from `budget` first.
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Takes `calls` extra calls (beyond first tries) from the budget, if there is one;
    /// whether they may be made.
    pub fn try_extra(&self, calls: u64) -> bool {
        self.budget.as_ref().is_none_or(|b| b.try_extra(calls))
    }

    /// The same, with `on_attempt` told the result of every attempt (`None`: it succeeded) and
    /// its duration.
    pub fn observe_attempts(
        mut self,
        on_attempt: impl Fn(Option<&WorkerError>, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.on_attempt = Box::new(on_attempt);
        self
    }
}

impl Retrying {
    /// Calls the worker, retrying as the policy (and the budget) says; returns the last result
    /// and how many attempts it took (at least 1).
    pub async fn infer_counting(
        &self,
        inputs: &[String],
        kind: CallKind,
    ) -> (Result<Vec<Output>, WorkerError>, u32) {
        if let (Some(budget), CallKind::FirstTry) = (&self.budget, kind) {
            budget.first_try();
        }
        let mut attempt = 0;
        loop {
            let started = tokio::time::Instant::now();
            let result = self.inner.infer(inputs).await;
            (self.on_attempt)(result.as_ref().err(), started.elapsed());
            match result {
                Err(error)
                    if attempt < self.policy.retries
                        && is_retryable(&error)
                        && (self.policy.retry_overload || !error.is_overload()) =>
                {
                    if !self.try_extra(1) {
                        warn!(%error, attempt = attempt + 1, size = inputs.len(), "worker call failed; retry budget exhausted, not retrying");
                        let error = WorkerError::RetryBudgetExhausted(Box::new(error));
                        return (Err(error), attempt + 1);
                    }
                    attempt += 1;
                    (self.on_retry)(&error);
                    let ceiling = self.policy.backoff_ceiling(attempt);
                    let wait = ceiling.mul_f64(rand::rng().random::<f64>());
                    warn!(%error, attempt, wait_ms = wait.as_millis() as u64, size = inputs.len(), "worker call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                result => return (result, attempt + 1),
            }
        }
    }
}

#[async_trait]
impl Worker for Retrying {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        self.infer_counting(inputs, CallKind::FirstTry).await.0
    }

    fn expected_call(&self, inputs: usize) -> Option<Duration> {
        self.inner.expected_call(inputs)
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
        async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.failures.lock().expect("lock").pop() {
                Some(e) => Err(e),
                None => Ok(inputs.iter().map(|i| Output::from(i.as_str())).collect()),
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
    async fn every_attempt_is_observed_with_its_error() {
        let inner = scripted(vec![status(429), status(503)]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let w =
            Retrying::new(inner, RetryPolicy::default(), |_| {}).observe_attempts(move |e, _| {
                log.lock()
                    .expect("not poisoned")
                    .push(e.map(|e| e.is_overload()));
            });
        w.infer(&["a".into()]).await.expect("third try works");
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            vec![Some(true), Some(true), None]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn overload_is_not_retried_when_the_caller_handles_it() {
        let inner = scripted(vec![status(429), status(503), status(500)]);
        let policy = RetryPolicy {
            retry_overload: false,
            ..RetryPolicy::default()
        };
        let w = Retrying::new(inner.clone(), policy, |_| {});
        let (result, attempts) = w.infer_counting(&["a".into()], CallKind::FirstTry).await;
        assert!(matches!(
            result,
            Err(WorkerError::Status { status: 429, .. })
        ));
        assert_eq!((attempts, inner.calls.load(Ordering::SeqCst)), (1, 1));
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

    #[tokio::test(start_paused = true)]
    async fn past_the_budget_a_failed_call_fails_at_once_with_a_clear_error() {
        let inner = scripted(vec![status(500); 100]);
        // 50% of first tries, no allowance: 2 first tries earn 1 retry.
        let budget = Arc::new(RetryBudget::new(50, 0));
        let w = Retrying::new(inner.clone(), RetryPolicy::default(), |_| {}).with_budget(budget);
        let (first, attempts) = w.infer_counting(&["a".into()], CallKind::FirstTry).await;
        assert_eq!(attempts, 1);
        assert!(matches!(first, Err(WorkerError::RetryBudgetExhausted(_))));
        let (second, attempts) = w.infer_counting(&["b".into()], CallKind::FirstTry).await;
        assert_eq!(attempts, 2, "the one retry the budget had");
        let error = second.expect_err("fails");
        assert_eq!(
            error.public_reason(),
            "worker answered 500; not tried again: retry budget exhausted"
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy {
            retries: 10,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        let ceilings: Vec<u64> = (1..=5)
            .map(|a| p.backoff_ceiling(a).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [50, 100, 200, 300, 300]);
        assert!(is_retryable(&status(429)) && !is_retryable(&status(404)));
    }
}
