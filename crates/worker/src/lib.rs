//! The fixed GPU worker API, as the batcher sees it: one [`Worker`] trait, one call per batch.
//!
//! Adapters translate a batch into a protocol; everything about batching stays out of here.
//!
//! Layout:
//! - [`Worker`] and [`WorkerError`]: the trait and what can go wrong with a call.
//! - [`http_json`]: batchgate's own JSON batch API (`POST /v1/batch`), see `docs/worker-api.md`.
//! - [`retry`]: [`Retrying`], retries with exponential backoff and jitter around any worker.

pub mod http_json;
pub mod retry;

use async_trait::async_trait;

pub use http_json::HttpJsonWorker;
pub use retry::{RetryPolicy, Retrying};

/// Why a worker call produced no outputs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    /// The call took longer than its timeout.
    #[error("worker call timed out")]
    Timeout,
    /// The worker could not be reached, or the connection broke.
    #[error("worker unreachable: {0}")]
    Unreachable(String),
    /// The worker answered with an error status.
    #[error("worker answered {status}: {message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The worker's error message, or the start of its body.
        message: String,
    },
    /// The worker's answer did not follow the protocol.
    #[error("invalid worker response: {0}")]
    InvalidResponse(String),
}

impl WorkerError {
    /// Whether the worker said it is overloaded (`429` or `503`): a signal to send it less,
    /// not a judgement of the batch.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            WorkerError::Status {
                status: 429 | 503,
                ..
            }
        )
    }

    /// What a client may be told: the kind of failure, without addresses or the worker's own
    /// words (those go to the logs).
    pub fn public_reason(&self) -> String {
        match self {
            WorkerError::Timeout => "worker call timed out".into(),
            WorkerError::Unreachable(_) => "worker unreachable".into(),
            WorkerError::Status { status, .. } => format!("worker answered {status}"),
            WorkerError::InvalidResponse(_) => "invalid worker response".into(),
        }
    }
}

/// A model server that takes a whole batch in one call.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// Runs the model on `inputs`; on success `outputs[i]` belongs to `inputs[i]`, and there
    /// are exactly as many outputs as inputs.
    async fn infer(&self, inputs: &[String]) -> Result<Vec<String>, WorkerError>;
}
