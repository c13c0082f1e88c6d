//! Admission on Redis in one round trip: a script claims the dedupe entry, checks the
//! partition's capacity, writes the pending record and adds the stream entry.
//!
//! With dedupe on, the gateway gives the task an id whose partition byte is the input hash's
//! (see `Keys::partition_of`), so the dedupe entry, the result and the stream share a slot.

use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use batchgate_queue::{AdmitError, Admitted, Intake, QueueError, StoreError};
use redis::Script;

use crate::conn::{bounded, RedisConn};
use crate::describe;
use crate::keys::Keys;

/// The Redis intake. Cloning is shallow.
#[derive(Clone)]
pub struct RedisIntake {
    conn: RedisConn,
    keys: Keys,
    script: Script,
    /// Most tasks in all partitions together (each partition takes its share).
    capacity: usize,
    result_ttl: Duration,
    /// How long identical inputs share a task.
    dedupe_ttl: Duration,
    op_timeout: Duration,
}

impl RedisIntake {
    /// An intake over `conn`.
    pub fn new(
        conn: RedisConn,
        keys: Keys,
        capacity: usize,
        result_ttl: Duration,
        dedupe_ttl: Duration,
        op_timeout: Duration,
    ) -> Self {
        RedisIntake {
            conn,
            keys,
            script: Script::new(include_str!("lua/admit.lua")),
            capacity,
            result_ttl,
            dedupe_ttl,
            op_timeout,
        }
    }
}

#[async_trait]
impl Intake for RedisIntake {
    async fn admit(
        &self,
        task: &Task,
        created_at: u64,
        input_sha256: Option<&str>,
    ) -> Result<Admitted, AdmitError> {
        let partition = self.keys.partition_of(&task.task_id);
        let mut call = self.script.prepare_invoke();
        call.key(self.keys.stream(partition))
            .key(self.keys.result(&task.task_id));
        if let Some(hash) = input_sha256 {
            let dedupe = self.keys.dedupe(hash);
            if self.keys.partition_of(hash) != partition {
                // Ids are made to match their input's partition; a mismatch is a caller bug,
                // and a cluster would refuse the cross-slot script anyway.
                return Err(AdmitError::Store(StoreError::Unavailable(format!(
                    "task {} is not in its input's partition",
                    task.task_id
                ))));
            }
            call.key(dedupe);
        }
        let per_partition = self.capacity.div_ceil(self.keys.partitions()).max(1);
        call.arg(per_partition)
            .arg(task.to_bytes())
            .arg(&task.task_id)
            .arg(created_at)
            .arg(self.result_ttl.as_secs())
            .arg(self.dedupe_ttl.as_millis() as u64)
            .arg(task.owner.as_deref().unwrap_or_default());
        let mut conn = self.conn.clone();
        let reply: Vec<String> = bounded(self.op_timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|e| AdmitError::Queue(QueueError::Unavailable(describe(&e))))?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Admitted::Enqueued {
                dedupe_bypassed: false,
            }),
            Some("dup") => match reply.get(1) {
                Some(existing) => Ok(Admitted::Duplicate(existing.clone())),
                None => Err(AdmitError::Queue(QueueError::Unavailable(
                    "admit script answered dup without an id".into(),
                ))),
            },
            Some("full") => Err(AdmitError::Queue(QueueError::Full {
                capacity: self.capacity,
            })),
            other => Err(AdmitError::Queue(QueueError::Unavailable(format!(
                "admit script answered {other:?}"
            )))),
        }
    }
}
