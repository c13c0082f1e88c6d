//! The dead-letter queue on Redis: one capped stream, `{prefix}:dlq`.
//!
//! Entries carry the task message (`m`, protobuf, with its input), the `error`, the attempt
//! count (`deliveries`) and the time (`at`, Unix ms). The queue's claimer writes entries for
//! tasks delivered too often; the batcher writes entries for tasks the worker failed.

use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use batchgate_queue::{DeadLetter, DeadLetters, Failure, QueueError, Selection};
use redis::streams::{StreamId, StreamRangeReply};
use redis::{RedisResult, Value};
use tracing::warn;

use crate::conn::{bounded, RedisConn};
use crate::describe;
use crate::keys::Keys;

/// Entries the dead-letter stream keeps (approximately); older ones are trimmed.
pub const DEAD_LETTER_MAXLEN: usize = 100_000;

/// The Redis dead-letter queue. Cloning is shallow.
#[derive(Clone)]
pub struct RedisDeadLetters {
    conn: RedisConn,
    keys: Keys,
    op_timeout: Duration,
}

impl RedisDeadLetters {
    /// The dead-letter stream of the deployment `keys` names.
    pub fn new(conn: RedisConn, keys: Keys, op_timeout: Duration) -> Self {
        RedisDeadLetters {
            conn,
            keys,
            op_timeout,
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, QueueError> {
        let mut conn = self.conn.clone();
        let result: RedisResult<T> = bounded(self.op_timeout, cmd.query_async(&mut conn)).await;
        result.map_err(|e| QueueError::Unavailable(describe(&e)))
    }

    async fn range(&self, count: usize) -> Result<Vec<StreamId>, QueueError> {
        let reply: StreamRangeReply = self
            .run(
                redis::cmd("XRANGE")
                    .arg(self.keys.dead_letter())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        Ok(reply.ids)
    }
}

/// The command that appends one dead letter: shared with the queue's claimer.
pub(crate) fn xadd(
    key: &str,
    task_bytes: &[u8],
    error: &str,
    attempts: u64,
    at: u64,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(DEAD_LETTER_MAXLEN)
        .arg("*")
        .arg("m")
        .arg(task_bytes)
        .arg("error")
        .arg(error)
        .arg("deliveries")
        .arg(attempts)
        .arg("at")
        .arg(at);
    cmd
}

fn text(entry: &StreamId, field: &str) -> Option<String> {
    match entry.map.get(field)? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn parse(entry: &StreamId) -> Option<DeadLetter> {
    let task = match entry.map.get("m") {
        Some(Value::BulkString(b)) => match Task::from_bytes(b) {
            Ok(task) => task,
            Err(error) => {
                warn!(entry = %entry.id, %error, "undecodable dead letter");
                return None;
            }
        },
        _ => return None,
    };
    Some(DeadLetter {
        id: entry.id.clone(),
        task_id: task.task_id,
        input: task.input,
        owner: task.owner,
        error: text(entry, "error").unwrap_or_default(),
        attempts: text(entry, "deliveries")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
        failed_at: text(entry, "at").and_then(|d| d.parse().ok()).unwrap_or(0),
    })
}

#[async_trait]
impl DeadLetters for RedisDeadLetters {
    async fn add(&self, failures: Vec<Failure>) -> Result<(), QueueError> {
        if failures.is_empty() {
            return Ok(());
        }
        let key = self.keys.dead_letter();
        let mut pipe = redis::pipe();
        for f in &failures {
            pipe.add_command(xadd(
                &key,
                &f.task.to_bytes(),
                &f.error,
                u64::from(f.attempts),
                f.failed_at,
            ))
            .ignore();
        }
        let mut conn = self.conn.clone();
        let result: RedisResult<()> = bounded(self.op_timeout, pipe.query_async(&mut conn)).await;
        result.map_err(|e| QueueError::Unavailable(describe(&e)))
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self.range(limit).await?.iter().filter_map(parse).collect())
    }

    async fn count(&self) -> Result<usize, QueueError> {
        self.run(redis::cmd("XLEN").arg(self.keys.dead_letter()))
            .await
    }

    async fn take(&self, selection: Selection) -> Result<Vec<DeadLetter>, QueueError> {
        let entries: Vec<StreamId> = match selection {
            Selection::Oldest(n) => self.range(n).await?,
            Selection::Ids(ids) => {
                let mut found = Vec::new();
                for id in ids {
                    let reply: StreamRangeReply = self
                        .run(
                            redis::cmd("XRANGE")
                                .arg(self.keys.dead_letter())
                                .arg(&id)
                                .arg(&id),
                        )
                        .await?;
                    found.extend(reply.ids);
                }
                found
            }
        };
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let _: usize = self
            .run(redis::cmd("XDEL").arg(self.keys.dead_letter()).arg(&ids))
            .await?;
        Ok(entries.iter().filter_map(parse).collect())
    }
}
