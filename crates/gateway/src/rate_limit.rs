//! Per-user rate limits in one gateway's memory: GCRA (the generic cell rate algorithm).
//! The trait and its values are in `batchgate_queue::rate_limiter`, beside the other
//! backends, because the Redis backend implements it too.
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
use batchgate_queue::{Decision, QueueError, Rate, RateLimiter};

/// The GCRA step: given the stored TAT (`None`: a new user) at `now`, the decision and the TAT
/// to store. Times are offsets from any fixed origin.
pub fn gcra(tat: Option<Duration>, now: Duration, rate: Rate) -> (Decision, Option<Duration>) {
    gcra_cost(tat, now, rate, 1)
}

/// The GCRA step for `cost` requests at once: all pass, or none (the TAT unchanged).
pub fn gcra_cost(
    tat: Option<Duration>,
    now: Duration,
    rate: Rate,
    cost: u64,
) -> (Decision, Option<Duration>) {
    let interval = rate.interval();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval * u32::try_from(cost.max(1)).unwrap_or(u32::MAX);
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

/// Users tracked at most in memory (a few MB), whatever ids clients invent.
pub const MAX_USERS: usize = 100_000;

/// The in-process limiter: one gateway's view only.
///
/// Its table is bounded. When it is full and a new user comes, users whose allowance is whole
/// again are forgotten first — forgetting them changes no decision, since a TAT in the past
/// decides like none at all. Only if every tracked user is still using part of its allowance
/// are the eighth closest to a whole allowance forgotten: a user at its limit is forgotten
/// only when the table is full of users using theirs. The table is never cleared whole.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    origin: Instant,
    /// Most users tracked.
    capacity: usize,
    tats: Mutex<HashMap<String, Duration>>,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_USERS)
    }
}

impl MemoryRateLimiter {
    /// A limiter tracking at most `capacity` users (at least 8).
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryRateLimiter {
            origin: Instant::now(),
            capacity: capacity.max(8),
            tats: Mutex::default(),
        }
    }

    /// Users tracked now.
    pub fn tracked(&self) -> usize {
        self.tats.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The decision at `now` (for tests with a fake clock).
    pub fn check_at(&self, user: &str, rate: Rate, now: Instant) -> Decision {
        self.check_cost_at(user, rate, 1, now)
    }

    /// The decision for `cost` requests at once at `now`.
    pub fn check_cost_at(&self, user: &str, rate: Rate, cost: u64, now: Instant) -> Decision {
        let now = now.saturating_duration_since(self.origin);
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        if tats.len() >= self.capacity && !tats.contains_key(user) {
            evict(&mut tats, now, self.capacity);
        }
        let (decision, tat) = gcra_cost(tats.get(user).copied(), now, rate, cost);
        if let Some(tat) = tat {
            tats.insert(user.to_owned(), tat);
        }
        decision
    }
}

/// Makes room in a full table: first the users whose allowance is whole at `now`, then, if
/// none is, the eighth of the table closest to a whole allowance (the lowest TATs).
fn evict(tats: &mut HashMap<String, Duration>, now: Duration, capacity: usize) {
    tats.retain(|_, tat| *tat > now);
    if tats.len() < capacity {
        return;
    }
    let mut by_tat: Vec<Duration> = tats.values().copied().collect();
    let count = (capacity / 8).max(1);
    let (_, cutoff, _) = by_tat.select_nth_unstable(count - 1);
    let cutoff = *cutoff;
    let mut removed = 0;
    tats.retain(|_, tat| {
        if removed < count && *tat <= cutoff {
            removed += 1;
            false
        } else {
            true
        }
    });
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check_cost(&self, user: &str, rate: Rate, cost: u64) -> Result<Decision, QueueError> {
        Ok(self.check_cost_at(user, rate, cost, Instant::now()))
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

    #[test]
    fn a_request_of_several_inputs_takes_them_all_or_none() {
        let rate = Rate {
            limit: 10,
            period: Duration::from_secs(1),
        };
        let limiter = MemoryRateLimiter::default();
        let t0 = limiter.origin;
        let d = limiter.check_cost_at("u", rate, 7, t0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        // 4 more do not fit in the 3 left: refused whole, nothing taken.
        let refused = limiter.check_cost_at("u", rate, 4, t0);
        assert!(!refused.allowed);
        assert_eq!(
            refused.retry_after,
            100 * MS,
            "one interval frees the fourth"
        );
        assert!(limiter.check_cost_at("u", rate, 3, t0).allowed);
        assert!(!limiter.check_at("u", rate, t0).allowed);
        // More than the whole allowance never fits.
        assert!(!limiter.check_cost_at("v", rate, 11, t0).allowed);
    }

    #[test]
    fn a_full_table_never_forgets_a_limited_user_and_stays_bounded() {
        let rate = Rate {
            limit: 10,
            period: Duration::from_secs(60),
        };
        let limiter = MemoryRateLimiter::with_capacity(1000);
        let t0 = limiter.origin + Duration::from_secs(1);
        for _ in 0..10 {
            assert!(limiter.check_at("mallory", rate, t0).allowed);
        }
        assert!(!limiter.check_at("mallory", rate, t0).allowed);
        // Ten times the table's size of new users, each using part of its allowance, some
        // while mallory keeps trying: mallory stays refused all along.
        for i in 0..10_000u32 {
            let now = t0 + MS * (i / 100);
            assert!(limiter.check_at(&format!("user-{i}"), rate, now).allowed);
            if i % 500 == 0 {
                assert!(
                    !limiter.check_at("mallory", rate, now).allowed,
                    "mallory got a fresh allowance after {i} new users"
                );
            }
            assert!(limiter.tracked() <= 1000);
        }
        assert!(!limiter.check_at("mallory", rate, t0 + 100 * MS).allowed);
        // Users whose allowance is whole again go first, and lose nothing by it.
        for j in 0..1000 {
            if limiter.tracked() == 1000 {
                break;
            }
            limiter.check_at(&format!("filler-{j}"), rate, t0 + 100 * MS);
        }
        assert_eq!(limiter.tracked(), 1000, "the table is full");
        let later = t0 + Duration::from_secs(3600);
        assert!(limiter.check_at("newcomer", rate, later).allowed);
        assert_eq!(
            limiter.tracked(),
            1,
            "every idle user was forgotten at once"
        );
    }
}
