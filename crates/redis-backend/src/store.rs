//! The result store on Redis: one hash per task, `status`, `output`, `error`, `created_at`,
//! `completed_at`, with a TTL; completions are announced on the waiting gateway's channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::api::TaskStatus;
use batchgate_queue::{Completion, Outcome, ResultStore, StoreError, TaskRecord};
use redis::RedisResult;

use crate::conn::{bounded, RedisConn};
use crate::describe;
use crate::keys::Keys;
use crate::notify::{Notice, Notifier};

/// How often a waiter re-reads the store when no notification came: the fallback for tasks
/// submitted through another gateway, or a lost pub/sub message. Not a busy loop.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// The Redis result store. Cloning is shallow.
#[derive(Clone)]
pub struct RedisResultStore {
    /// Shared multiplexed connection.
    conn: RedisConn,
    /// Key names.
    keys: Keys,
    /// Lifetime of a record after its last write.
    ttl: Duration,
    /// Bound on one command.
    op_timeout: Duration,
    /// Wakes local waiters when this gateway's tasks complete; absent in batcher-only
    /// processes, which never wait.
    notifier: Option<Arc<Notifier>>,
}

impl RedisResultStore {
    /// A store on `conn`; `notifier` is this gateway's subscription, if it serves waits.
    pub fn new(
        conn: RedisConn,
        keys: Keys,
        ttl: Duration,
        op_timeout: Duration,
        notifier: Option<Arc<Notifier>>,
    ) -> Self {
        RedisResultStore {
            conn,
            keys,
            ttl,
            op_timeout,
            notifier,
        }
    }

    fn unavailable(error: &redis::RedisError) -> StoreError {
        StoreError::Unavailable(describe(error))
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        let mut conn = self.conn.clone();
        bounded(self.op_timeout, cmd.query_async(&mut conn)).await
    }
}

fn parse_record(fields: &HashMap<String, String>) -> Option<TaskRecord> {
    let status = match fields.get("status")?.as_str() {
        "PENDING" => TaskStatus::Pending,
        "SUCCESS" => TaskStatus::Success,
        "FAILED" => TaskStatus::Failed,
        _ => return None,
    };
    let number = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    Some(TaskRecord {
        status,
        output: fields.get("output").cloned(),
        error: fields.get("error").cloned(),
        created_at: number("created_at").or(number("completed_at")).unwrap_or(0),
        owner: fields.get("owner").cloned(),
        completed_at: number("completed_at"),
    })
}

#[async_trait]
impl ResultStore for RedisResultStore {
    async fn create(
        &self,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = self.keys.result(task_id);
        let mut pipe = redis::pipe();
        let hset = pipe
            .cmd("HSET")
            .arg(&key)
            .arg("status")
            .arg("PENDING")
            .arg("created_at")
            .arg(created_at);
        if let Some(owner) = owner {
            hset.arg("owner").arg(owner);
        }
        hset.ignore();
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(self.ttl.as_secs())
            .ignore();
        let mut conn = self.conn.clone();
        bounded(self.op_timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|e| Self::unavailable(&e))
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        // One pipeline per partition: a cluster pipeline must stay on one slot.
        let mut by_partition: HashMap<usize, redis::Pipeline> = HashMap::new();
        let mut notify: HashMap<String, Vec<Notice>> = HashMap::new();
        for c in &completions {
            let key = self.keys.result(&c.task_id);
            let pipe = by_partition
                .entry(self.keys.partition_of(&c.task_id))
                .or_insert_with(redis::pipe);
            let cmd = pipe.cmd("HSET").arg(&key);
            match &c.outcome {
                Outcome::Success(output) => {
                    cmd.arg("status").arg("SUCCESS").arg("output").arg(output)
                }
                Outcome::Failed(error) => cmd.arg("status").arg("FAILED").arg("error").arg(error),
            };
            cmd.arg("completed_at").arg(c.completed_at).ignore();
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(self.ttl.as_secs())
                .ignore();
            if let Some(gateway) = &c.reply_to {
                notify
                    .entry(gateway.clone())
                    .or_default()
                    .push(Notice::of(c));
            }
        }
        let writes = by_partition.into_values().map(|pipe| {
            let mut conn = self.conn.clone();
            async move { bounded(self.op_timeout, pipe.query_async::<()>(&mut conn)).await }
        });
        for result in futures_util::future::join_all(writes).await {
            result.map_err(|e| Self::unavailable(&e))?;
        }
        // Stored: now tell the waiting gateways. A lost message only delays a waiter until
        // its fallback read.
        for (gateway, notices) in notify {
            let Ok(message) = serde_json::to_string(&notices) else {
                continue;
            };
            let cmd = redis::cmd("PUBLISH")
                .arg(self.keys.notify_channel(&gateway))
                .arg(message)
                .clone();
            if let Err(error) = self.run::<()>(&cmd).await {
                tracing::debug!(%error, "publishing completions failed; waiters fall back to reads");
            }
        }
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("DEL").arg(self.keys.result(task_id)))
            .await
            .map_err(|e| Self::unavailable(&e))
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let fields: HashMap<String, String> = self
            .run(redis::cmd("HGETALL").arg(self.keys.result(task_id)))
            .await
            .map_err(|e| Self::unavailable(&e))?;
        Ok(parse_record(&fields))
    }

    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register before reading, so a completion between the read and the wait wakes us.
            let woken = self.notifier.as_ref().map(|n| n.register(task_id));
            let record = self.get(task_id).await?;
            let pending = match record {
                Some(r) if !r.status.is_terminal() => r,
                other => return Ok(other),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Some(pending));
            }
            let nap = (deadline - now).min(FALLBACK_POLL);
            match woken {
                Some(woken) => {
                    // The notice carries the result: no second read of the store.
                    if let Ok(Ok(notice)) = tokio::time::timeout(nap, woken).await {
                        return Ok(Some(TaskRecord {
                            status: notice.status,
                            output: notice.output,
                            error: notice.error,
                            created_at: pending.created_at,
                            completed_at: Some(notice.completed_at),
                            owner: pending.owner.clone(),
                        }));
                    }
                }
                None => tokio::time::sleep(nap).await,
            }
        }
    }

    async fn count(&self) -> Result<usize, StoreError> {
        // Every key of the database (results, streams, dedupe): cheap, and close enough for a
        // gauge; an exact count would need a SCAN.
        self.run(&redis::cmd("DBSIZE"))
            .await
            .map_err(|e| Self::unavailable(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_unknown_statuses_do_not() {
        let mut f = HashMap::new();
        f.insert("status".to_owned(), "SUCCESS".to_owned());
        f.insert("output".to_owned(), "o".to_owned());
        f.insert("created_at".to_owned(), "5".to_owned());
        f.insert("completed_at".to_owned(), "9".to_owned());
        let r = parse_record(&f).expect("parses");
        assert_eq!(
            (r.status, r.created_at, r.completed_at),
            (TaskStatus::Success, 5, Some(9))
        );
        f.insert("status".to_owned(), "WAT".to_owned());
        assert!(parse_record(&f).is_none());
        assert!(parse_record(&HashMap::new()).is_none());
    }
}
