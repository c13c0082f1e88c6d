//! The load board on Redis: one hash, `{prefix}:workers`, a field per batcher holding its
//! latest [`WorkerLoad`] and when it was written (`busy;capacity;call_ms;unix_ms`). Every
//! gateway reads the whole hash and counts the reports younger than [`LOAD_REPORT_TTL`], so
//! all gateways shed by the same picture of the workers.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use batchgate_queue::load::LOAD_REPORT_TTL;
use batchgate_queue::{LoadBoard, QueueError, WorkerLoad};

use crate::conn::{bounded, RedisConn};
use crate::describe;
use crate::keys::Keys;

/// Reports this much older than the reader's clock are removed from the hash.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The load board on Redis. Cloning is shallow.
#[derive(Clone)]
pub struct RedisLoadBoard {
    conn: RedisConn,
    key: String,
    op_timeout: Duration,
}

impl RedisLoadBoard {
    pub fn new(conn: RedisConn, keys: &Keys, op_timeout: Duration) -> Self {
        RedisLoadBoard {
            conn,
            key: keys.workers(),
            op_timeout,
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(error: &redis::RedisError) -> QueueError {
    QueueError::Unavailable(describe(error))
}

#[async_trait]
impl LoadBoard for RedisLoadBoard {
    async fn publish(&self, who: &str, load: WorkerLoad) -> Result<(), QueueError> {
        let value = format!("{};{}", load.encode(), unix_ms(SystemTime::now()));
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg(&self.key).arg(who).arg(value).ignore();
        // The hash goes with the last batcher.
        pipe.cmd("PEXPIRE")
            .arg(&self.key)
            .arg(FORGET_AFTER.as_millis() as u64)
            .ignore();
        let mut conn = self.conn.clone();
        bounded(self.op_timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn read(&self) -> Result<Option<WorkerLoad>, QueueError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = bounded(
            self.op_timeout,
            redis::cmd("HGETALL").arg(&self.key).query_async(&mut conn),
        )
        .await
        .map_err(|e| unavailable(&e))?;
        let now = unix_ms(SystemTime::now());
        let ttl = LOAD_REPORT_TTL.as_millis() as u64;
        let mut fresh = Vec::new();
        let mut gone = Vec::new();
        for (who, value) in &fields {
            let report = value
                .rsplit_once(';')
                .and_then(|(load, at)| Some((WorkerLoad::decode(load)?, at.parse::<u64>().ok()?)));
            match report {
                // Clocks of different hosts differ a little: a report from the near future counts.
                Some((load, at)) if now.abs_diff(at) < ttl => fresh.push(load),
                Some((_, at)) if now.saturating_sub(at) < FORGET_AFTER.as_millis() as u64 => {}
                _ => gone.push(who.clone()),
            }
        }
        if !gone.is_empty() {
            let mut conn = self.conn.clone();
            // Best effort: a report left behind is only skipped again next time.
            let _ = bounded(
                self.op_timeout,
                redis::cmd("HDEL")
                    .arg(&self.key)
                    .arg(&gone)
                    .query_async::<()>(&mut conn),
            )
            .await;
        }
        Ok(WorkerLoad::combine(fresh))
    }
}
