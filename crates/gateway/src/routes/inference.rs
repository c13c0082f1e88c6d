//! `POST /v1/inference`: accept one task.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use batchgate_protocol::api::InferenceRequest;
use batchgate_protocol::sha256_hex;
use batchgate_protocol::task::{unix_ms, Task};
use batchgate_queue::TaskRecord;
use uuid::Uuid;

use super::extract::{JsonBody, Wait};
use crate::error::ApiError;
use crate::state::AppState;

/// Validates, deduplicates, records the task as pending, enqueues it; answers 202 with the
/// task id, or — with `?wait_ms=` — 200 with the result if it is ready in time.
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

    // The record comes first, so that whoever finds this task through the dedupe cache can
    // already read (and wait on) it.
    state
        .results
        .create(&task_id, created_at)
        .await
        .map_err(|e| ApiError::from_store(&e, retry_after_secs))?;

    // An identical input already has a task: answer with it, never run it twice.
    let claim = match &state.dedupe {
        Some(dedupe) => {
            let hash = sha256_hex(&request.input);
            match dedupe.claim(&hash, &task_id).await {
                Ok(Some(existing)) => {
                    state.metrics.dedupe_hits.inc();
                    forget(&state, &task_id).await;
                    return answer(&state, existing, created_at, wait, false).await;
                }
                Ok(None) => Some((dedupe, hash)),
                Err(error) => {
                    // The cache is an optimisation: without it, run the task anyway.
                    tracing::warn!(%error, "dedupe cache failed; bypassing it");
                    state.metrics.dedupe_bypassed.inc();
                    None
                }
            }
        }
        None => None,
    };

    let enqueued = async {
        // Hold the gate until the task is in the queue: shutdown waits for us.
        let Some(_open) = state.admission.enter().await else {
            return Err(ApiError::ShuttingDown { retry_after_secs });
        };
        let task = Task {
            task_id: task_id.clone(),
            input: request.input,
            enqueued_at: now,
            reply_to: state.gateway_id.clone(),
        };
        state
            .queue
            .enqueue(task)
            .await
            .map_err(|error| ApiError::from_queue(&error, retry_after_secs))
    }
    .await;
    if let Err(refused) = enqueued {
        // Never leave a pending record, or a dedupe entry, for a task that will not run.
        forget(&state, &task_id).await;
        if let Some((dedupe, hash)) = claim {
            if let Err(error) = dedupe.release(&hash, &task_id).await {
                tracing::warn!(%error, "could not release the dedupe entry of a refused task");
            }
        }
        return Err(refused);
    }
    state.metrics.tasks_accepted.inc();
    answer(&state, task_id, created_at, wait, true).await
}

/// Removes the record of a task that will not run (best effort: it expires anyway).
async fn forget(state: &AppState, task_id: &str) {
    if let Err(error) = state.results.remove(task_id).await {
        tracing::warn!(%error, "could not remove the record of a task that will not run");
    }
}

/// 200 with the result if the task finishes within `wait`, else 202 with its pending view.
/// A `fresh` task was just enqueued, so without a wait it is known to be pending; another
/// (a dedupe hit) may be done already and is read.
async fn answer(
    state: &AppState,
    task_id: String,
    created_at: u64,
    wait: Duration,
    fresh: bool,
) -> Result<Response, ApiError> {
    let store_error = |e| ApiError::from_store(&e, state.config.retry_after_secs);
    let record = if !wait.is_zero() {
        state
            .results
            .wait(&task_id, wait)
            .await
            .map_err(store_error)?
    } else if !fresh {
        state.results.get(&task_id).await.map_err(store_error)?
    } else {
        None
    };
    let record = record.unwrap_or_else(|| TaskRecord::pending(created_at));
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
