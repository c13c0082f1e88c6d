//! The fixed GPU worker API, as the batcher sees it: one [`Worker`] trait, one call per batch.
//!
//! The worker clients (one adapter per protocol) translate a batch into a protocol; everything
//! about batching stays out of here.
//!
//! Layout:
//! - [`Worker`] and [`WorkerError`]: the trait and what can go wrong with a call.
//! - [`spec`]: [`WorkerSpec`], a `--worker-url` parsed and checked: protocol, address,
//!   per-worker limits (`docs/worker-api.md`).
//! - One worker client per protocol: [`http_json`] (batchgate's JSON batch API, `http://`),
//!   [`grpc`] (`grpc://`), [`kserve_v2`] (KServe V2 / Open Inference Protocol,
//!   `kserve-v2+http://`), [`openai`] (OpenAI-style embeddings, `openai+http://`); `http`
//!   holds what the HTTP ones share.
//! - [`pool`]: [`Pool`], several workers behind one: least in-flight, per-worker limits,
//!   health checks, failover.
//! - [`retry`]: [`Retrying`], retries with exponential backoff and jitter around any worker.
//! - [`budget`]: [`RetryBudget`], which keeps retries and bisection calls within a share of
//!   first tries.

pub mod budget;
pub mod grpc;
mod http;
pub mod http_json;
pub mod kserve_v2;
pub mod openai;
pub mod pool;
pub mod retry;
pub mod spec;

use async_trait::async_trait;

pub use batchgate_protocol::Output;

pub use budget::RetryBudget;
pub use grpc::GrpcWorker;
pub use http_json::HttpJsonWorker;
pub use kserve_v2::KserveV2Worker;
pub use openai::OpenAiWorker;
pub use pool::{Pool, PoolConfig};
pub use retry::{CallKind, RetryPolicy, Retrying};
pub use spec::{
    Protocol, SpecError, TokenError, TokenSource, WorkerLimits, WorkerSpec, WorkerToken,
};

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
    /// The call failed with this error, and was not tried again (retried, or bisected)
    /// because retries and bisection calls had used up their budget.
    #[error("{0}; retry budget exhausted")]
    RetryBudgetExhausted(Box<WorkerError>),
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
            WorkerError::RetryBudgetExhausted(last) => format!(
                "{}; not tried again: retry budget exhausted",
                last.public_reason()
            ),
        }
    }
}

/// A model server that takes a whole batch in one call.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// Runs the model on `inputs`; on success `outputs[i]` belongs to `inputs[i]`, and there
    /// are exactly as many outputs as inputs.
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError>;

    /// How long a call of `inputs` inputs takes at the worker itself, when the worker knows
    /// its own cost: an in-process model of a worker does. A call that took longer was slowed
    /// by the machine the caller runs on (its CPU taken, its timers late), not by the worker;
    /// the batcher's load report tells the two apart with it. `None` (the default): only the
    /// time seen from outside is known.
    fn expected_call(&self, inputs: usize) -> Option<std::time::Duration> {
        let _ = inputs;
        None
    }

    /// Whether the worker can take calls now, asked by its protocol's health endpoint. A
    /// [`Pool`] stops sending to a worker whose check fails and sends again once it passes.
    /// Workers without such an endpoint (in-process models) are always healthy.
    async fn health(&self) -> Result<(), WorkerError> {
        Ok(())
    }
}
