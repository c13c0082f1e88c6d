//! `POST /v1/inference`: accept one task.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use batchgate_protocol::api::{ErrorBody, InferenceRequest, TaskStatus, TaskView, WaitQuery};
use batchgate_protocol::task::{unix_ms, Task};
use batchgate_protocol::{owner_input_sha256_hex, sha256_hex};
use batchgate_queue::Admitted;
use batchgate_store::{Expectation, TaskRecord};
use tracing::{Instrument, Span};
use uuid::Uuid;

use super::extract::{Caller, JsonBody, Wait};
use crate::config::{DedupeScope, MAX_TIMEOUT_MS};
use crate::error::ApiError;
use crate::shed::Shed;
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
    let timeout = match request.timeout_ms {
        None => None,
        Some(ms @ 1..=MAX_TIMEOUT_MS) => Some(Duration::from_millis(ms)),
        Some(ms) => {
            return Err(ApiError::InvalidRequest(format!(
                "`timeout_ms` must be between 1 and {MAX_TIMEOUT_MS}, got {ms}"
            )))
        }
    };
    let retry_after_secs = state.config.retry_after_secs;
    // The caller's rate limit and share were checked when the headers arrived
    // (`guard.rs`), before the body was read.
    state.shedder.check(timeout).map_err(|shed| match shed {
        Shed::Overloaded => ApiError::Overloaded { retry_after_secs },
        Shed::DeadlineUnmeetable { estimate_ms } => ApiError::DeadlineUnmeetable {
            estimate_ms,
            retry_after_secs,
        },
    })?;
    let now = SystemTime::now();
    let created_at = unix_ms(now);
    // Dedupe is per owner unless configured global: by default one user's input never
    // answers with another user's task. Globally shared tasks belong to no one.
    let global = state.config.dedupe_scope == DedupeScope::Global;
    let input_sha256 = state.dedupe.then(|| {
        if global {
            sha256_hex(&request.input)
        } else {
            owner_input_sha256_hex(&dedupe_scope(&state, &caller, &request), &request.input)
        }
    });
    let task_id = new_task_id(input_sha256.as_deref());
    Span::current().record("task_id", task_id.as_str());
    // The task carries this span's context through the queue: the batcher's spans for the
    // task are its children, and the batch span links to it. Only exported traces have it:
    // log lines inside the admission carry the request's span either way.
    let enqueue_span = if batchgate_telemetry::enabled() {
        tracing::info_span!("enqueue", otel.kind = "producer")
    } else {
        Span::none()
    };
    let task = Task {
        task_id: task_id.clone(),
        input: request.input,
        enqueued_at: now,
        reply_to: state.gateway_id.clone(),
        deadline: timeout.map(|t| now + t),
        owner: (!global).then(|| caller.clone()),
        trace_parent: batchgate_telemetry::traceparent_of(&enqueue_span),
        zone: state.config.zone.clone(),
    };
    // Hold the gate until the task is in the queue: shutdown waits for us.
    let Some(gate) = state.admission.enter().await else {
        return Err(ApiError::ShuttingDown { retry_after_secs });
    };
    // A caller who waits is registered for the result before the task can complete, so the
    // wait needs no read of the store: the completion's notice brings the result.
    let expected = (!wait.is_zero()).then(|| {
        let pending = TaskRecord {
            owner: task.owner.clone(),
            ..TaskRecord::pending(created_at)
        };
        state.results.clone().expect(&task_id, pending)
    });
    let admit_error = |e| ApiError::from_admit(&e, retry_after_secs);
    let admitted = state
        .intake
        .admit(&task, created_at, input_sha256.as_deref())
        .instrument(enqueue_span.clone())
        .await
        .map_err(admit_error)?;
    match admitted {
        Admitted::Enqueued { dedupe_bypassed } => {
            if dedupe_bypassed {
                state.metrics.dedupe_bypassed.inc();
            }
        }
        Admitted::Duplicate(existing) => {
            let record = state
                .results
                .get(&existing)
                .await
                .map_err(|e| ApiError::from_store(&e, retry_after_secs))?;
            let shareable = record.is_some_and(|r| {
                r.status != TaskStatus::Failed && r.readable_by(&caller, state.unowned_is_public())
            });
            if shareable {
                // An identical input already has a task: answer with it, never run it twice.
                state.metrics.dedupe_hits.inc();
                drop(gate);
                return answer(&state, existing, created_at, wait, Known::Existing).await;
            }
            // The first task ended between the admission (which takes over the entry of a
            // task that failed or expired) and this read, or belongs to someone this caller
            // may not see: run this one on its own.
            state
                .intake
                .admit(&task, created_at, None)
                .instrument(enqueue_span)
                .await
                .map_err(admit_error)?;
        }
    }
    drop(gate);
    state.shedder.admitted();
    state.metrics.tasks_accepted.inc();
    answer(&state, task_id, created_at, wait, Known::Fresh(expected)).await
}

/// Whose identical inputs this submission's may share a task with (owner scope): the
/// authenticated caller; without authentication, where every caller is the same anonymous
/// one, the body's `client_id`, so that different clients never share a task through the
/// cache. Submissions without a `client_id` share the anonymous scope. The two forms cannot
/// meet: a scope with a client id always has a `/` after the caller's name.
fn dedupe_scope<'a>(
    state: &AppState,
    caller: &'a str,
    request: &InferenceRequest,
) -> std::borrow::Cow<'a, str> {
    match request.client_id.as_deref() {
        Some(client_id) if !state.auth.enabled() => format!("{caller}/{client_id}").into(),
        _ => caller.into(),
    }
}

/// What [`answer`] knows of the task it answers for.
enum Known {
    /// Just admitted here, so pending; with a wait, its expectation was registered before
    /// the admission.
    Fresh(Option<Box<dyn Expectation>>),
    /// Another submission's task (a dedupe hit): it may be done already, so it is read.
    Existing,
}

/// A fresh unguessable id (UUID v4). With an input hash, its first byte is the hash's, so
/// the task lands in the partition of its dedupe entry (one slot on a Redis Cluster); the
/// other 15 bytes stay random.
fn new_task_id(input_sha256: Option<&str>) -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Uuid::new_v4().hyphenated().encode_lower(&mut text);
    if let Some(byte) = input_sha256.and_then(|h| h.as_bytes().get(..2)) {
        text[..2].copy_from_slice(byte);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// 200 with the result if the task finishes within `wait`, else 202 with its pending view.
async fn answer(
    state: &AppState,
    task_id: String,
    created_at: u64,
    wait: Duration,
    known: Known,
) -> Result<Response, ApiError> {
    let store_error = |e| ApiError::from_store(&e, state.config.retry_after_secs);
    let record = match known {
        Known::Fresh(Some(expected)) => expected.wait(wait).await.map_err(store_error)?,
        Known::Fresh(None) => None,
        Known::Existing if !wait.is_zero() => state
            .results
            .wait(&task_id, wait)
            .await
            .map_err(store_error)?,
        Known::Existing => state.results.get(&task_id).await.map_err(store_error)?,
    };
    let record = record.unwrap_or_else(|| TaskRecord::pending(created_at));
    let status = if record.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let location = HeaderValue::try_from(format!("/v1/result/{task_id}"))
        .expect("a UUID path is a valid header value. This is a bug.");
    // The record is ours: its output moves into the answer rather than being copied.
    let view = TaskView {
        task_id,
        status: record.status,
        output: record.output,
        error: record.error,
        created_at: record.created_at,
        completed_at: record.completed_at,
    };
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}
