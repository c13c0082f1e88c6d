//! Per-user rate limits: GCRA (the generic cell rate algorithm), in memory or in Redis.
//!
//! A user may send `limit` requests per `period`, all at once if they like: each request
//! pushes the user's theoretical arrival time (TAT) on by `period / limit`, and a request is
//! refused while the TAT is more than a whole `period` ahead of now. The state is one number
//! per user, so the Redis version is exact across any number of gateways (one script call,
//! Redis's own clock).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// The GCRA step: given the stored TAT (`None`: a new user) at `now`, the decision and the TAT
/// to store. Times are offsets from any fixed origin.
pub fn gcra(tat: Option<Duration>, now: Duration, rate: Rate) -> (Decision, Option<Duration>) {
    let interval = rate.interval();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    // The earliest moment this request would be allowed.
    let allow_at = new_tat.saturating_sub(rate.period);
    if now < allow_at {
        let used = tat - now;
        return (
            Decision {
                allowed: false,
                limit: rate.limit,
                remaining: 0,
                reset: used,
                retry_after: allow_at - now,
            },
            None,
        );
    }
    let used = new_tat - now;
    let left = rate.period.saturating_sub(used);
    (
        Decision {
            allowed: true,
            limit: rate.limit,
            remaining: (left.as_nanos() / interval.as_nanos().max(1)) as u64,
            reset: used,
            retry_after: Duration::ZERO,
        },
        Some(new_tat),
    )
}

/// Decides whether a user's request may go ahead.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `user` against `rate`.
    async fn check(&self, user: &str, rate: Rate) -> Result<Decision, QueueError>;
}

/// Users tracked at most in memory; past it the table starts afresh (every user gets a whole
/// allowance), which bounds memory whatever ids clients invent.
const MAX_USERS: usize = 100_000;

/// The in-process limiter: one gateway's view only.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    origin: Instant,
    tats: Mutex<HashMap<String, Duration>>,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        MemoryRateLimiter {
            origin: Instant::now(),
            tats: Mutex::default(),
        }
    }
}

impl MemoryRateLimiter {
    /// The decision at `now` (for tests with a fake clock).
    pub fn check_at(&self, user: &str, rate: Rate, now: Instant) -> Decision {
        let now = now.saturating_duration_since(self.origin);
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        if tats.len() >= MAX_USERS && !tats.contains_key(user) {
            tats.clear();
        }
        let (decision, tat) = gcra(tats.get(user).copied(), now, rate);
        if let Some(tat) = tat {
            tats.insert(user.to_owned(), tat);
        }
        decision
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, user: &str, rate: Rate) -> Result<Decision, QueueError> {
        Ok(self.check_at(user, rate, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_whole_period_may_come_at_once_then_one_per_interval() {
        let rate = Rate {
            limit: 10,
            period: Duration::from_secs(1),
        };
        let limiter = MemoryRateLimiter::default();
        let t0 = limiter.origin;
        for i in 0..10 {
            let d = limiter.check_at("u", rate, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
        }
        let refused = limiter.check_at("u", rate, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 100 * MS);
        assert_eq!(refused.reset, Duration::from_secs(1));
        assert!(!limiter.check_at("u", rate, t0 + 99 * MS).allowed);
        assert!(limiter.check_at("u", rate, t0 + 100 * MS).allowed);
        assert!(
            limiter.check_at("other", rate, t0).allowed,
            "users are separate"
        );
        // After a whole period of silence the allowance is whole again.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(limiter.check_at("u", rate, later).remaining, 9);
    }
}
