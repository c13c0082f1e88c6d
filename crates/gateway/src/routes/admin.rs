//! The admin API: the dead-letter queue, behind a bearer token (`--admin-token`).
//!
//! - `GET /admin/dlq?limit=N`: the oldest N entries (default 100, at most 10,000) and the count;
//! - `POST /admin/dlq/replay` `{"ids": [...]}` or `{"limit": N}`: the entries go back to the
//!   queue as new attempts of the same task ids (their results become PENDING again);
//! - `POST /admin/dlq/purge`, same body: the entries are deleted.
//!
//! Each model has its own dead letters, and a replay sends an entry back to its own model's
//! queue. With several models every entry names its `model`, and the id of a further model's
//! entry is `<model>/<id in its store>`, so ids stay unique across the models.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use batchgate_protocol::api::ErrorBody;
use batchgate_protocol::task::{unix_ms, Task};
use batchgate_queue::{DeadLetter, DeadLetters, Failure, Selection};
use serde::{Deserialize, Serialize};

use super::extract::{authorization, JsonBody, QueryOf};
use crate::error::ApiError;
use crate::state::AppState;

/// Default and largest `limit`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// `?limit=` of the listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Most entries listed: 100 by default, at most 10,000.
    #[param(minimum = 0)]
    limit: Option<usize>,
}

/// Body of replay and purge: which entries.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SelectionBody {
    /// These entries.
    #[serde(default)]
    ids: Option<Vec<String>>,
    /// Else the oldest this many (default 100).
    #[serde(default)]
    #[schema(minimum = 0)]
    limit: Option<usize>,
}

/// The listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Listing {
    /// Entries in the dead-letter queue (every model's).
    count: usize,
    /// The oldest of them: `id`, `task_id`, `input`, `owner`, `error`, `attempts`,
    /// `failed_at`, and with several models `model`.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<Listed>,
}

/// One entry of the listing, with its model when there are several.
#[derive(Debug, Serialize)]
pub(crate) struct Listed {
    /// The model whose task it is (with several models).
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// The entry, its id as the admin API names it.
    #[serde(flatten)]
    letter: DeadLetter,
}

/// What a replay or purge did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Done {
    /// Entries replayed or purged.
    count: usize,
    /// Their task ids.
    task_ids: Vec<String>,
}

/// The error answers of replay and purge, which take the same body under the same token:
/// described once, named in both routes' `responses`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes the answers to the API description
enum SelectionErrors {
    /// A body that is not JSON text.
    #[response(
        status = 400,
        description = "`invalid_json`: the body is not JSON; `invalid_utf8`: not UTF-8."
    )]
    NotJson(ErrorBody),
    /// A body over the limit.
    #[response(
        status = 413,
        description = "`body_too_large`: the body exceeds the limit."
    )]
    TooLarge(ErrorBody),
    /// A body not declared JSON.
    #[response(
        status = 415,
        description = "`unsupported_media_type`: the body is not declared `application/json`."
    )]
    NotDeclaredJson(ErrorBody),
    /// JSON of the wrong shape.
    #[response(
        status = 422,
        description = "`invalid_request`: JSON of the wrong shape."
    )]
    WrongShape(ErrorBody),
    /// No admin token, or the wrong one.
    #[response(
        status = 401,
        description = "`unauthorized`: missing or wrong admin token."
    )]
    Unauthorized(ErrorBody),
    /// The admin API is off.
    #[response(
        status = 404,
        description = "`admin_disabled`: the admin API is off (no `--admin-token`)."
    )]
    Disabled(ErrorBody),
    /// Too slow.
    #[response(
        status = 408,
        description = "`timeout`: the request took longer than the gateway allows."
    )]
    Timeout(ErrorBody),
    /// The queue is full or a backend failed.
    #[response(
        status = 503,
        description = "`overloaded`: the queue is full; `unavailable`: a backend failed.",
        headers(("retry-after" = u64, description = "Seconds to wait before trying again."))
    )]
    Unavailable(ErrorBody),
}

/// Checks the bearer token, in time independent of where it differs.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let given = authorization(headers)
        .map_err(|_| ApiError::Unauthorized)?
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Whether `given` equals `expected`, in time that depends only on `expected`'s length: every
/// byte of `expected` is compared, whatever `given`'s length and wherever they differ.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut differ = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        differ |= given.get(i).copied().unwrap_or(!e) ^ e;
    }
    std::hint::black_box(differ) == 0
}

fn selection(body: SelectionBody) -> Selection {
    match body.ids {
        Some(ids) => Selection::Ids(ids),
        None => Selection::Oldest(body.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT)),
    }
}

fn unavailable(state: &AppState, error: &batchgate_queue::QueueError) -> ApiError {
    ApiError::from_queue(error, state.config.retry_after_secs)
}

/// The oldest dead letters and their count.
#[utoipa::path(
    get,
    path = "/admin/dlq",
    tag = "admin",
    operation_id = "dlq_list",
    params(ListQuery),
    responses(
        (status = 200, description = "The listing.", body = Listing),
        (status = 400, description = "`invalid_query`: `limit` is malformed.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong admin token.", body = ErrorBody),
        (status = 404, description = "`admin_disabled`: the admin API is off (no `--admin-token`).", body = ErrorBody),
        (status = 408, description = "`timeout`: the request took longer than the gateway allows.", body = ErrorBody),
        (status = 503, description = "`overloaded`: the queue is full; `unavailable`: a backend failed.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
    ),
    security(("admin" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryOf(q): QueryOf<ListQuery>,
) -> Result<Json<Listing>, ApiError> {
    authorize(&state, &headers)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let entries = oldest(&state, limit)
        .await?
        .into_iter()
        .map(|(model, letter)| Listed {
            model: (state.config.models.len() > 1)
                .then(|| state.config.models.get(model).cloned())
                .flatten(),
            letter,
        })
        .collect();
    let mut count = 0;
    for (_, store) in stores(&state) {
        count += store.count().await.map_err(|e| unavailable(&state, &e))?;
    }
    Ok(Json(Listing { count, entries }))
}

/// Each model's dead letters, by the model's position; a store two models share (none
/// should) is looked in once, as the first one's.
fn stores(state: &AppState) -> Vec<(usize, &Arc<dyn DeadLetters>)> {
    let mut stores: Vec<(usize, &Arc<dyn DeadLetters>)> = Vec::new();
    for index in 0..state.config.models.len().max(1) {
        let store = state.dead_letters_of(index);
        if !stores.iter().any(|(_, s)| Arc::ptr_eq(s, store)) {
            stores.push((index, store));
        }
    }
    stores
}

/// The id the admin API shows for entry `id` of model `model`'s store.
fn public_id(state: &AppState, model: usize, id: &str) -> String {
    match state.config.models.get(model) {
        Some(name) if model > 0 => format!("{name}/{id}"),
        _ => id.to_owned(),
    }
}

/// The model and the id in its store of an id the admin API showed.
fn store_id<'i>(state: &AppState, id: &'i str) -> (usize, &'i str) {
    if let Some((name, rest)) = id.split_once('/') {
        if let Some(model) = state.model_index(name).filter(|&m| m > 0) {
            return (model, rest);
        }
    }
    (0, id)
}

/// The oldest `limit` entries of every model, oldest first, with their models and their
/// ids as the admin API shows them.
async fn oldest(state: &AppState, limit: usize) -> Result<Vec<(usize, DeadLetter)>, ApiError> {
    let mut all = Vec::new();
    for (model, store) in stores(state) {
        let letters = store
            .list(limit)
            .await
            .map_err(|e| unavailable(state, &e))?;
        all.extend(letters.into_iter().map(|mut letter| {
            letter.id = public_id(state, model, &letter.id);
            (model, letter)
        }));
    }
    all.sort_by_key(|(_, letter)| letter.failed_at);
    all.truncate(limit);
    Ok(all)
}

/// Checks the token, then removes the selected entries and hands them over, each with its
/// model.
async fn take_selected(
    state: &AppState,
    headers: &HeaderMap,
    body: SelectionBody,
) -> Result<Vec<(usize, DeadLetter)>, ApiError> {
    authorize(state, headers)?;
    let ids: Vec<String> = match selection(body) {
        Selection::Ids(ids) => ids,
        Selection::Oldest(n) => oldest(state, n)
            .await?
            .into_iter()
            .map(|(_, l)| l.id)
            .collect(),
    };
    let mut taken = Vec::with_capacity(ids.len());
    for (model, store) in stores(state) {
        let own: Vec<String> = ids
            .iter()
            .map(|id| store_id(state, id))
            .filter(|(m, _)| *m == model)
            .map(|(_, id)| id.to_owned())
            .collect();
        if own.is_empty() {
            continue;
        }
        let letters = store
            .take(Selection::Ids(own))
            .await
            .map_err(|e| unavailable(state, &e))?;
        taken.extend(letters.into_iter().map(|l| (model, l)));
    }
    taken.sort_by_key(|(_, letter)| letter.failed_at);
    Ok(taken)
}

/// Puts the selected entries back in the queue as new attempts of the same task ids.
#[utoipa::path(
    post,
    path = "/admin/dlq/replay",
    tag = "admin",
    operation_id = "dlq_replay",
    request_body(content = SelectionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "What was replayed.", body = Done),
        SelectionErrors,
    ),
    security(("admin" = []))
)]
pub(crate) async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SelectionBody>,
) -> Result<Json<Done>, ApiError> {
    let taken = take_selected(&state, &headers, body).await?;
    let mut task_ids = Vec::with_capacity(taken.len());
    let mut left = taken.into_iter();
    while let Some((model, letter)) = left.next() {
        let now = SystemTime::now();
        let task = Task {
            task_id: letter.task_id.clone(),
            input: letter.input.clone(),
            enqueued_at: now,
            reply_to: None,
            deadline: None,
            owner: letter.owner.clone(),
            trace_parent: None,
            zone: state.config.zone.clone(),
        };
        // Back to its own model's queue: its batcher and workers, its result store.
        if let Err(error) = state
            .intake_of(model)
            .admit(&task, unix_ms(now), None)
            .await
        {
            // Put this one and the rest back, each in its own model's store, so nothing is
            // lost, and say how far we got.
            put_back(&state, std::iter::once((model, letter)).chain(left), now).await;
            tracing::warn!(replayed = task_ids.len(), %error, "replay stopped");
            return Err(ApiError::from_admit(&error, state.config.retry_after_secs));
        }
        task_ids.push(letter.task_id);
    }
    tracing::info!(replayed = task_ids.len(), "dead letters replayed");
    Ok(Json(Done {
        count: task_ids.len(),
        task_ids,
    }))
}

/// Puts dead letters a replay could not send back in their models' stores.
async fn put_back(
    state: &AppState,
    letters: impl Iterator<Item = (usize, DeadLetter)>,
    now: SystemTime,
) {
    let mut by_model: Vec<(usize, Vec<Failure>)> = Vec::new();
    for (model, l) in letters {
        let failure = Failure {
            task: Task {
                task_id: l.task_id,
                input: l.input,
                enqueued_at: now,
                reply_to: None,
                deadline: None,
                owner: l.owner,
                trace_parent: None,
                zone: None,
            },
            error: l.error,
            attempts: l.attempts,
            failed_at: l.failed_at,
        };
        match by_model.iter_mut().find(|(m, _)| *m == model) {
            Some((_, failures)) => failures.push(failure),
            None => by_model.push((model, vec![failure])),
        }
    }
    for (model, failures) in by_model {
        if let Err(e) = state.dead_letters_of(model).add(failures).await {
            tracing::error!(error = %e, "could not put dead letters back after a failed replay");
        }
    }
}

/// Deletes the selected entries.
#[utoipa::path(
    post,
    path = "/admin/dlq/purge",
    tag = "admin",
    operation_id = "dlq_purge",
    request_body(content = SelectionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "What was purged.", body = Done),
        SelectionErrors,
    ),
    security(("admin" = []))
)]
pub(crate) async fn purge(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SelectionBody>,
) -> Result<Json<Done>, ApiError> {
    let taken = take_selected(&state, &headers, body).await?;
    tracing::info!(purged = taken.len(), "dead letters purged");
    Ok(Json(Done {
        count: taken.len(),
        task_ids: taken.into_iter().map(|(_, l)| l.task_id).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
