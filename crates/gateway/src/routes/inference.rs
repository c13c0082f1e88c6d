//! `POST /v1/inference`: accept one task.

use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use batchgate_protocol::api::InferenceRequest;
use batchgate_protocol::task::{unix_ms, Task};
use batchgate_queue::TaskRecord;
use uuid::Uuid;

use super::extract::{JsonBody, Wait};
use crate::error::ApiError;
use crate::state::AppState;

/// Validates, records the task as pending, enqueues it; answers 202 with the task id, or —
/// with `?wait_ms=` — 200 with the result if it is ready in time.
pub(crate) async fn submit(
    State(state): State<AppState>,
    Wait(wait): Wait,
    JsonBody(request): JsonBody<InferenceRequest>,
) -> Result<Response, ApiError> {
    let max = state.config.max_input_bytes;
    if request.input.len() > max {
        return Err(ApiError::InputTooLarge {
            got: request.input.len(),
            max,
        });
    }
    if request.input.is_empty() {
        return Err(ApiError::InvalidRequest("`input` must not be empty".into()));
    }
    let retry_after_secs = state.config.retry_after_secs;
    let now = SystemTime::now();
    let created_at = unix_ms(now);
    let task_id = Uuid::new_v4().to_string();
    {
        // Hold the gate until the task is in the queue: shutdown waits for us.
        let Some(_open) = state.admission.enter().await else {
            return Err(ApiError::ShuttingDown { retry_after_secs });
        };
        state
            .results
            .create(&task_id, created_at)
            .await
            .map_err(|e| ApiError::from_store(&e, retry_after_secs))?;
        let task = Task {
            task_id: task_id.clone(),
            input: request.input,
            enqueued_at: now,
        };
        if let Err(error) = state.queue.enqueue(task).await {
            // Never leave a pending record for a task that will not run.
            if let Err(e) = state.results.remove(&task_id).await {
                tracing::warn!(error = %e, "could not remove the record of a refused task");
            }
            return Err(ApiError::from_queue(&error, retry_after_secs));
        }
    }
    state.metrics.tasks_accepted.inc();

    let record = if wait.is_zero() {
        TaskRecord::pending(created_at)
    } else {
        state
            .results
            .wait(&task_id, wait)
            .await
            .map_err(|e| ApiError::from_store(&e, retry_after_secs))?
            .unwrap_or_else(|| TaskRecord::pending(created_at))
    };
    let status = if record.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let location = HeaderValue::from_str(&format!("/v1/result/{task_id}"))
        .expect("a UUID path is a valid header value. This is a bug.");
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(record.view(&task_id)),
    )
        .into_response())
}
