//! The public HTTP API's JSON bodies.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/inference`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// The text to run the model on: not empty, at most the gateway's input limit in bytes
    /// (64 KiB by default).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, example = "hello"))]
    pub input: String,
    /// The caller's own label for itself. With authentication it must match the token's
    /// subject; without, it is informational.
    #[serde(default)]
    pub client_id: Option<String>,
    /// How long the client will wait for the result, in milliseconds: a task past it is not
    /// sent to the worker, and one the queue cannot serve in time is refused at once.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3_600_000))]
    pub timeout_ms: Option<u64>,
    /// The model to run, by name (`GET /v1/models` lists them); the served model when absent.
    /// Another name is refused (404 `model_not_found`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "default"))]
    pub model: Option<String>,
}

/// Query parameters accepted by both `POST /v1/inference` and `GET /v1/result/{id}`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct WaitQuery {
    /// How long the call may wait for the result, in milliseconds (capped by the server at
    /// 30,000).
    #[cfg_attr(feature = "openapi", param(minimum = 0))]
    pub wait_ms: Option<u64>,
}

/// Where a task is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Accepted and not finished yet.
    Pending,
    /// The worker produced an output.
    Success,
    /// It will never have an output; `error` says why.
    Failed,
}

impl TaskStatus {
    /// True once the task will not change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskStatus::Pending)
    }
}

/// Body of `GET /v1/result/{id}`, of `POST /v1/inference` (202 while pending, 200 when done).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task's id, as returned when it was accepted.
    pub task_id: String,
    /// Where the task is.
    pub status: TaskStatus,
    /// The worker's output, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it failed, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the gateway accepted it, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When its result was stored, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
}

/// Every error body: `{"error": {"code": "...", "message": "..."}}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a human message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable snake_case code, safe to match on.
    pub code: String,
    /// Human-readable explanation; never contains internals.
    pub message: String,
}
