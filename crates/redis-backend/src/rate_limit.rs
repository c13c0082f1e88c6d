//! Per-user rate limits on Redis: the GCRA of the gateway's in-memory limiter
//! (`batchgate_gateway::rate_limit`) as one script on Redis's clock, so a user's allowance is shared exactly by every gateway.

use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::sha256_hex;
use batchgate_queue::{Decision, QueueError, Rate, RateLimiter};
use redis::{RedisResult, Script};

use crate::conn::{bounded, RedisConn};
use crate::describe;

/// The Redis rate limiter. Cloning is shallow.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: RedisConn,
    /// Key prefix of the deployment.
    prefix: String,
    script: Script,
    op_timeout: Duration,
}

impl RedisRateLimiter {
    /// A limiter keeping its state under `{prefix}:rl:`.
    pub fn new(conn: RedisConn, prefix: &str, op_timeout: Duration) -> Self {
        RedisRateLimiter {
            conn,
            prefix: prefix.to_owned(),
            script: Script::new(include_str!("lua/rate_limit.lua")),
            op_timeout,
        }
    }

    /// The user's key: hashed, so that whatever the identity holds (braces included) it is
    /// one plain key.
    fn key(&self, user: &str) -> String {
        format!("{}:rl:{}", self.prefix, sha256_hex(user))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check_cost(&self, user: &str, rate: Rate, cost: u64) -> Result<Decision, QueueError> {
        let mut call = self.script.prepare_invoke();
        call.key(self.key(user))
            .arg(micros(rate.interval()).max(1))
            .arg(micros(rate.period))
            .arg(cost.max(1));
        let mut conn = self.conn.clone();
        let reply: RedisResult<(u8, u64, u64, u64)> =
            bounded(self.op_timeout, call.invoke_async(&mut conn)).await;
        let (allowed, remaining, reset_us, retry_us) =
            reply.map_err(|e| QueueError::Unavailable(describe(&e)))?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: rate.limit,
            remaining,
            reset: Duration::from_micros(reset_us),
            retry_after: Duration::from_micros(retry_us),
        })
    }
}
