//! `GET /v1/result/{task_id}`: a task's state, optionally long-polled.

use axum::extract::{Path, State};
use axum::Json;
use batchgate_protocol::api::TaskView;

use super::extract::{Caller, Wait};
use crate::error::ApiError;
use crate::state::AppState;

/// Longest task id looked up; anything longer cannot be ours.
const MAX_TASK_ID_LEN: usize = 64;

/// The task's record, waiting up to `?wait_ms=` for it to finish; 404 if unknown, expired, or
/// someone else's (404, not 403: another user's task is not confirmed to exist).
pub(crate) async fn get_result(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(task_id): Path<String>,
    Wait(wait): Wait,
) -> Result<Json<TaskView>, ApiError> {
    if task_id.len() > MAX_TASK_ID_LEN {
        return Err(ApiError::TaskNotFound);
    }
    let store_error = |e| ApiError::from_store(&e, state.config.retry_after_secs);
    // Ownership is checked on the stored record before any wait: a wake-up notice does not
    // carry the owner.
    let record = state
        .results
        .get(&task_id)
        .await
        .map_err(store_error)?
        .filter(|r| r.readable_by(&caller, state.unowned_is_public()))
        .ok_or(ApiError::TaskNotFound)?;
    if record.status.is_terminal() || wait.is_zero() {
        return Ok(Json(record.view(&task_id)));
    }
    let record = state
        .results
        .wait(&task_id, wait)
        .await
        .map_err(store_error)?
        .ok_or(ApiError::TaskNotFound)?;
    Ok(Json(record.view(&task_id)))
}
