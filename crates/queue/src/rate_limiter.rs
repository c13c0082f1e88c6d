//! The per-user rate limiter's seam: [`RateLimiter`], with the [`Rate`] it enforces and the
//! [`Decision`] it returns.
//!
//! The trait lives here, below the gateway that calls it, because a backend implements it
//! too: on Redis the limit is one script on Redis's clock, exact across every gateway
//! (`batchgate_redis::RedisRateLimiter`), and it reaches the gateway in [`crate::Backends`]
//! like the other shared backends. The in-process limiter (GCRA in one gateway's memory) is
//! the gateway's own.

use std::time::Duration;

use async_trait::async_trait;

use crate::QueueError;

/// A rate: `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period (at least 1).
    pub limit: u64,
    /// The period.
    pub period: Duration,
}

impl Rate {
    /// Time one request uses up.
    pub fn interval(&self) -> Duration {
        self.period / u32::try_from(self.limit.max(1)).unwrap_or(u32::MAX)
    }
}

/// What the limiter decided, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The limit in force for this user.
    pub limit: u64,
    /// Requests left right now.
    pub remaining: u64,
    /// Until the user's allowance is whole again.
    pub reset: Duration,
    /// When refused: how long until one request is allowed.
    pub retry_after: Duration,
}

/// Decides whether a user's request may go ahead.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `user` against `rate`.
    async fn check(&self, user: &str, rate: Rate) -> Result<Decision, QueueError> {
        self.check_cost(user, rate, 1).await
    }

    /// Counts `cost` requests of `user` against `rate` at once (a request of `cost` inputs):
    /// all of them are allowed, or none is (then `retry_after` is when all would be). A cost
    /// over `rate.limit` is never allowed.
    async fn check_cost(&self, user: &str, rate: Rate, cost: u64) -> Result<Decision, QueueError>;
}
