//! `GET /v1/result/{task_id}`: a task's state, optionally long-polled.

use axum::extract::State;
use axum::Json;
use batchgate_protocol::api::{ErrorBody, TaskView, WaitQuery};
use batchgate_store::{TaskRecord, Watched};

use super::extract::{Caller, TaskIdPath, Wait};
use crate::error::ApiError;
use crate::state::AppState;

/// Longest task id looked up; anything longer cannot be ours.
const MAX_TASK_ID_LEN: usize = 64;

// 404 if unknown, expired, or someone else's (404, not 403: another user's task is not
// confirmed to exist).
/// A task's state and, once finished, its result; with `?wait_ms=`, waits up to that long for
/// it to finish.
#[utoipa::path(
    get,
    path = "/v1/result/{task_id}",
    tag = "inference",
    operation_id = "result",
    params(("task_id" = String, Path, description = "The id `POST /v1/inference` answered."), WaitQuery),
    responses(
        (status = 200, description = "The task: `PENDING` (also when a wait ends first), `SUCCESS` or `FAILED`.", body = TaskView),
        (status = 400, description = "`invalid_query`: `wait_ms` is malformed.", body = ErrorBody),
        (status = 404, description = "`task_not_found`: unknown, expired, or another caller's.", body = ErrorBody),
        (status = 401, description = "`unauthenticated`: no valid bearer token (authentication on).", body = ErrorBody, headers(("www-authenticate" = String, description = "`Bearer error=\"invalid_token\"`."))),
        (status = 408, description = "`timeout`: the request took longer than the gateway allows.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the caller's rate (`RateLimit-*` headers say more); `too_many_in_flight`: the caller has its most requests open.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "`concurrency_limited`: the gateway serves its most requests; `unavailable`: the result store failed.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
    ),
    security((), ("bearer" = []))
)]
pub(crate) async fn get_result(
    State(state): State<AppState>,
    Caller(caller): Caller,
    TaskIdPath(task_id): TaskIdPath,
    Wait(wait): Wait,
) -> Result<Json<TaskView>, ApiError> {
    if task_id.len() > MAX_TASK_ID_LEN {
        return Err(ApiError::TaskNotFound);
    }
    let store_error = |e| ApiError::from_store(&e, state.config.retry_after_secs);
    let readable = |r: &TaskRecord| r.readable_by(&caller, state.unowned_is_public());
    // With several models on Redis each has a store of its own: the task is in one of them.
    let stores = state.all_results();
    if wait.is_zero() {
        let mut found = None;
        for store in stores {
            found = store.get(&task_id).await.map_err(store_error)?;
            if found.is_some() {
                break;
            }
        }
        let record = found.filter(readable).ok_or(ApiError::TaskNotFound)?;
        return Ok(Json(record.into_view(task_id)));
    }
    // One step reads the record and registers for its result. Ownership is checked on the
    // stored record before any wait: a wake-up notice does not carry the owner.
    let mut watched = Watched::Missing;
    for store in stores {
        watched = store.clone().watch(&task_id).await.map_err(store_error)?;
        if !matches!(watched, Watched::Missing) {
            break;
        }
    }
    let record = match watched {
        Watched::Missing => None,
        Watched::Done(record) => Some(record).filter(readable),
        Watched::Pending(record, expectation) => {
            if !readable(&record) {
                return Err(ApiError::TaskNotFound);
            }
            expectation.wait(wait).await.map_err(store_error)?
        }
    };
    let record = record.ok_or(ApiError::TaskNotFound)?;
    Ok(Json(record.into_view(task_id)))
}
