//! `GET /v1/result/{task_id}`: a task's state, optionally long-polled.

use axum::extract::{Path, State};
use axum::Json;
use batchgate_protocol::api::TaskView;

use super::extract::Wait;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest task id looked up; anything longer cannot be ours.
const MAX_TASK_ID_LEN: usize = 64;

/// The task's record, waiting up to `?wait_ms=` for it to finish; 404 if unknown or expired.
pub(crate) async fn get_result(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    Wait(wait): Wait,
) -> Result<Json<TaskView>, ApiError> {
    if task_id.len() > MAX_TASK_ID_LEN {
        return Err(ApiError::TaskNotFound);
    }
    let record = state
        .results
        .wait(&task_id, wait)
        .await
        .map_err(|e| ApiError::from_store(&e, state.config.retry_after_secs))?
        .ok_or(ApiError::TaskNotFound)?;
    Ok(Json(record.view(&task_id)))
}
