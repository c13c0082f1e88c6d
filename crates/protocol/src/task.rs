//! The task as it travels from the gateway through the queue to the batcher, and its wire
//! form: a protobuf message (prost), so the distributed queue carries compact bytes that any
//! language can read (`proto/task.proto` documents the schema).

use std::time::{Duration, SystemTime};

/// One accepted request, waiting for the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Unguessable id (UUID v4) handed to the client.
    pub task_id: String,
    /// The input to send to the worker.
    pub input: String,
    /// When the gateway accepted it; used for queue-age and end-to-end latency.
    pub enqueued_at: SystemTime,
    /// The gateway that waits for this task's result, to be told when it is stored.
    pub reply_to: Option<String>,
    /// The client's deadline (`timeout_ms` after acceptance): past it, the task is failed
    /// instead of sent to the worker.
    pub deadline: Option<SystemTime>,
    /// Who submitted it (the token's subject): only they may read its result.
    pub owner: Option<String>,
    /// The W3C `traceparent` of the span that enqueued it, so the batcher's spans join the
    /// request's trace; `None` when tracing is off (nothing to carry, nothing to parse).
    pub trace_parent: Option<String>,
}

/// The task's wire form. Field numbers are the contract: never reuse one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskMessage {
    /// See [`Task::task_id`].
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// See [`Task::input`].
    #[prost(string, tag = "2")]
    pub input: String,
    /// See [`Task::enqueued_at`], in milliseconds since the Unix epoch.
    #[prost(uint64, tag = "3")]
    pub enqueued_at_ms: u64,
    /// See [`Task::reply_to`]; empty when no gateway waits.
    #[prost(string, tag = "4")]
    pub reply_to: String,
    /// See [`Task::deadline`], in milliseconds since the Unix epoch; 0 when there is none.
    #[prost(uint64, tag = "5")]
    pub deadline_ms: u64,
    /// See [`Task::owner`]; empty when there is none.
    #[prost(string, tag = "6")]
    pub owner: String,
    /// See [`Task::trace_parent`]; empty when there is none.
    #[prost(string, tag = "7")]
    pub traceparent: String,
}

/// A task message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid task message: {0}")]
pub struct DecodeError(String);

impl Task {
    /// The protobuf encoding of this task.
    pub fn to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&TaskMessage {
            task_id: self.task_id.clone(),
            input: self.input.clone(),
            enqueued_at_ms: unix_ms(self.enqueued_at),
            reply_to: self.reply_to.clone().unwrap_or_default(),
            deadline_ms: self.deadline.map_or(0, unix_ms),
            owner: self.owner.clone().unwrap_or_default(),
            traceparent: self.trace_parent.clone().unwrap_or_default(),
        })
    }

    /// Decodes a task encoded by [`Task::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Task, DecodeError> {
        let m: TaskMessage =
            prost::Message::decode(bytes).map_err(|e| DecodeError(e.to_string()))?;
        if m.task_id.is_empty() {
            return Err(DecodeError("no task id".into()));
        }
        Ok(Task {
            task_id: m.task_id,
            input: m.input,
            enqueued_at: SystemTime::UNIX_EPOCH + Duration::from_millis(m.enqueued_at_ms),
            reply_to: (!m.reply_to.is_empty()).then_some(m.reply_to),
            deadline: (m.deadline_ms != 0)
                .then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(m.deadline_ms)),
            owner: (!m.owner.is_empty()).then_some(m.owner),
            trace_parent: (!m.traceparent.is_empty()).then_some(m.traceparent),
        })
    }
}

/// Milliseconds since the Unix epoch, the timestamp unit of the API.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_protobuf() {
        let t = Task {
            task_id: "ab-1".into(),
            input: "héllo".into(),
            enqueued_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            reply_to: Some("gw-1".into()),
            deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_001_000)),
            owner: Some("alice".into()),
            trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        assert_eq!(Task::from_bytes(&t.to_bytes()).expect("decodes"), t);
        let none = Task {
            reply_to: None,
            deadline: None,
            owner: None,
            trace_parent: None,
            ..t
        };
        assert_eq!(Task::from_bytes(&none.to_bytes()).expect("decodes"), none);
        assert!(Task::from_bytes(b"\xff\xff").is_err());
        assert!(Task::from_bytes(&[]).is_err(), "no id");
    }
}
