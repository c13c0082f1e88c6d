//! `POST /v1/inference`: accept one task.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use batchgate_protocol::api::{ErrorBody, InferenceRequest, TaskView, WaitQuery};

use super::admit::{admit, check_input, outcome, Admission, Submission};
use super::extract::{Caller, JsonBody, Wait};
use crate::config::MAX_TIMEOUT_MS;
use crate::error::ApiError;
use crate::state::AppState;

// Validates and admits the task (pending record, dedupe, enqueue).
/// Submit one input. Answers 202 with the task's id at once, or — with `?wait_ms=` — 200 with
/// the result if it is ready in time.
#[utoipa::path(
    post,
    path = "/v1/inference",
    tag = "inference",
    operation_id = "submit",
    params(WaitQuery),
    request_body(content = InferenceRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Finished within `wait_ms`: the result.", body = TaskView,
            headers(("location" = String, description = "Where the result is read: `/v1/result/{task_id}`."))),
        (status = 202, description = "Accepted, not finished yet: read the result at `Location`.", body = TaskView,
            headers(("location" = String, description = "Where the result is read: `/v1/result/{task_id}`."))),
        (status = 400, description = "`invalid_json`: the body is not JSON; `invalid_utf8`: not UTF-8; `invalid_query`: a query parameter is malformed.", body = ErrorBody),
        (status = 413, description = "`body_too_large`: the body exceeds the limit; `input_too_large`: `input` exceeds the input limit.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not declared `application/json`.", body = ErrorBody),
        (status = 422, description = "`invalid_request`: JSON of the wrong shape (missing, unknown or mistyped fields, empty `input`, `timeout_ms` out of range).", body = ErrorBody),
        (status = 401, description = "`unauthenticated`: no valid bearer token (authentication on).", body = ErrorBody, headers(("www-authenticate" = String, description = "`Bearer error=\"invalid_token\"`."))),
        (status = 408, description = "`timeout`: the request took longer than the gateway allows.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the caller's rate (`RateLimit-*` headers say more); `too_many_in_flight`: the caller has its most requests open.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
        (status = 403, description = "`client_id_mismatch`: the body's `client_id` is not the token's subject.", body = ErrorBody),
        (status = 404, description = "`model_not_found`: `model` names a model not served here.", body = ErrorBody),
        (status = 503, description = "`overloaded`: the queue is full or its wait too long; `deadline_unmeetable`: the estimated wait exceeds `timeout_ms`; `concurrency_limited`: the gateway serves its most requests; `shutting_down`: draining; `unavailable`: a backend failed.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
    ),
    security((), ("bearer" = []))
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Wait(wait): Wait,
    JsonBody(request): JsonBody<InferenceRequest>,
) -> Result<Response, ApiError> {
    // With authentication the token says who calls; a body that claims otherwise is refused.
    if state.auth.enabled() && request.client_id.as_ref().is_some_and(|c| *c != caller) {
        return Err(ApiError::ClientIdMismatch);
    }
    let model = match request.model.as_deref() {
        None => 0,
        Some(name) => state
            .model_index(name)
            .ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))?,
    };
    check_input(&state, &request.input)?;
    let timeout = match request.timeout_ms {
        None => None,
        Some(ms @ 1..=MAX_TIMEOUT_MS) => Some(Duration::from_millis(ms)),
        Some(ms) => {
            return Err(ApiError::InvalidRequest(format!(
                "`timeout_ms` must be between 1 and {MAX_TIMEOUT_MS}, got {ms}"
            )))
        }
    };
    let scope = dedupe_scope(&state, &caller, &request);
    let submission = Submission {
        input: request.input,
        timeout,
        dedupe_scope: scope,
        waits: !wait.is_zero(),
        model,
    };
    let admission = admit(&state, &caller, submission).await?;
    answer(&state, admission, wait).await
}

/// Whose identical inputs this submission's may share a task with (owner scope): the
/// authenticated caller; without authentication, where every caller is the same anonymous
/// one, the body's `client_id`, so that different clients never share a task through the
/// cache. Submissions without a `client_id` share the anonymous scope. The two forms cannot
/// meet: a scope with a client id always has a `/` after the caller's name.
fn dedupe_scope(state: &AppState, caller: &str, request: &InferenceRequest) -> Option<String> {
    match request.client_id.as_deref() {
        // Joined by copying, not `format!` (whose machinery costs several times more).
        Some(client_id) if !state.auth.enabled() => Some([caller, "/", client_id].concat()),
        _ => None,
    }
}

/// 200 with the result if the task finishes within `wait`, else 202 with its pending view.
async fn answer(
    state: &AppState,
    admission: Admission,
    wait: Duration,
) -> Result<Response, ApiError> {
    let (task_id, record) = outcome(state, admission, wait).await?;
    let status = if record.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    // The joined text becomes the header's bytes as it is (made to its exact size, so not
    // copied again).
    let location = HeaderValue::from_maybe_shared(Bytes::from(["/v1/result/", &task_id].concat()))
        .expect("a UUID path is a valid header value. This is a bug.");
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(record.into_view(task_id)),
    )
        .into_response())
}
