//! The dedupe cache on Redis: `SET key task_id NX GET EX ttl` in one round trip.

use std::time::Duration;

use async_trait::async_trait;
use batchgate_queue::{Dedupe, StoreError};

use crate::conn::{bounded, RedisConn};
use crate::describe;
use crate::keys::Keys;

/// SHA-256 of the input → the task id of its first submission.
#[derive(Clone)]
pub struct RedisDedupe {
    conn: RedisConn,
    keys: Keys,
    ttl: Duration,
    op_timeout: Duration,
}

impl RedisDedupe {
    /// A cache on `conn` whose entries live `ttl`.
    pub fn new(conn: RedisConn, keys: Keys, ttl: Duration, op_timeout: Duration) -> Self {
        RedisDedupe {
            conn,
            keys,
            ttl,
            op_timeout,
        }
    }
}

#[async_trait]
impl Dedupe for RedisDedupe {
    async fn claim(&self, input_sha256: &str, task_id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        bounded(
            self.op_timeout,
            redis::cmd("SET")
                .arg(self.keys.dedupe(input_sha256))
                .arg(task_id)
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(self.ttl.as_millis() as u64)
                .query_async(&mut conn),
        )
        .await
        .map_err(|e| StoreError::Unavailable(describe(&e)))
    }

    async fn release(&self, input_sha256: &str, task_id: &str) -> Result<(), StoreError> {
        // Only our own claim goes: a script compares and deletes atomically.
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let mut conn = self.conn.clone();
        bounded(
            self.op_timeout,
            script
                .key(self.keys.dedupe(input_sha256))
                .arg(task_id)
                .invoke_async::<()>(&mut conn),
        )
        .await
        .map_err(|e| StoreError::Unavailable(describe(&e)))
    }
}
