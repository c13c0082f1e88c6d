//! The routes and the middleware around them.
//!
//! - `POST /v1/inference` ([`inference`]), `GET /v1/result/{task_id}` ([`result`]);
//! - `POST /v1/embeddings`, `GET /v1/models` ([`openai`]): OpenAI-compatible embeddings;
//! - `POST /v2/models/{name}/infer`, `GET /v2/models/{name}[/ready]`, `GET /v2`,
//!   `GET /v2/health/{live,ready}` ([`kserve`]): the KServe V2 / Open Inference Protocol;
//! - `GET /healthz`, `GET /readyz` ([`health`]); `GET /metrics` ([`metrics`]);
//! - `GET /openapi.json` ([`openapi`]);
//! - `GET /` and `GET /status.json` ([`status`]): the live status page and its data;
//! - `GET /admin/dlq`, `POST /admin/dlq/replay`, `POST /admin/dlq/purge` ([`admin`]).

mod admin;
mod admit;
mod extract;
mod guard;
mod health;
mod inference;
mod kserve;
mod metrics;
mod openai;
pub mod openapi;
mod request_id;
mod result;
mod shape;
mod span;
mod status;

use std::time::Instant;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use tower::ServiceBuilder;
use tracing::Instrument;

use crate::error::{ApiError, ErrorCode};
use crate::metrics::{route, CodeLabel, ShedLabel};
use crate::ops::Ops;
use crate::state::AppState;

/// The whole API with its middleware; tests call it with `oneshot`, `serve` serves it.
///
/// Middleware costs CPU on every request (each `from_fn` layer clones the services below it
/// and boxes a future), so the layers are few: the edge (request id, the request's span,
/// error shape, error counts), the guard, the timeout and body limit, and the per-route
/// counts.
pub fn router(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    let body_limit = state.config.max_body_bytes();
    Router::new()
        .route(route::INFERENCE, post(inference::submit))
        .route(route::RESULT, get(result::get_result))
        .route(route::HEALTHZ, get(health::healthz))
        .route(route::READYZ, get(health::readyz))
        .route(route::METRICS, get(metrics::render_api))
        .route(route::STATUS_PAGE, get(status::page))
        .route(route::STATUS_JSON, get(status::snapshot_api))
        .route(route::OPENAPI, get(openapi::spec))
        .route(route::DLQ, get(admin::list))
        .route(route::DLQ_REPLAY, post(admin::replay))
        .route(route::DLQ_PURGE, post(admin::purge))
        .route(route::EMBEDDINGS, post(openai::embeddings))
        .route(route::MODELS, get(openai::models))
        .route(route::V2, get(kserve::server_metadata))
        .route(route::V2_LIVE, get(kserve::live))
        .route(route::V2_READY, get(kserve::ready))
        .route(route::V2_MODEL, get(kserve::model_metadata))
        .route(route::V2_MODEL_READY, get(kserve::model_ready))
        .route(route::V2_INFER, post(kserve::infer))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            count_by_route,
        ))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(state.clone(), edge))
                .layer(middleware::from_fn_with_state(state.clone(), guard::admit))
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    ApiError::Timeout
                }))
                .timeout(timeout)
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

/// Only `/healthz`, `/readyz`, `/metrics` and the status page: what a process without the
/// API (a batcher) serves to its operators.
pub fn ops_router(ops: Ops) -> Router {
    Router::new()
        .route(route::HEALTHZ, get(health::healthz))
        .route(route::READYZ, get(health::readyz))
        .route(route::METRICS, get(metrics::render))
        .route(route::STATUS_PAGE, get(status::page))
        .route(route::STATUS_JSON, get(status::snapshot))
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(middleware::map_response(no_sniff))
        .with_state(ops)
}

/// Whether `response` declares a JSON body.
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// Tells browsers not to guess a content type other than the one declared.
async fn no_sniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Counts answers by matched route and status.
async fn count_by_route(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>();
    let route = route::ALL
        .into_iter()
        .find(|r| matched.is_some_and(|m| m.as_str() == *r))
        .unwrap_or(route::UNMATCHED);
    let is_submit = route == route::INFERENCE && request.uri().query().is_none();
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed().as_secs_f64();
    if is_submit {
        state.metrics.submit_latency.observe(took);
    }
    state
        .metrics
        .count_answer(route, response.status().as_u16(), took);
    response
}

/// The outermost layer, around every request:
/// - its id: a client's `x-request-id` is kept if acceptable (`request_id.rs`), else replaced
///   by a new UUID, before anything below sees it; the answer echoes it;
/// - its span (`span.rs`), which every log line about the request carries, entered while the
///   request is handled (not while its answer's body is written: nothing logs then);
/// - an error answer that is not JSON (one made below the routes, by the framework) is put
///   into our shape, and every error answer is counted by its stable code (no line per failed request:
///   a client must not be able to flood the log);
/// - an error on the OpenAI or KServe V2 routes is put in that protocol's shape (`shape.rs`);
/// - every answer is marked `nosniff`.
async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let request_id = request_id::ensure(request.headers_mut());
    let door = shape::door_of(request.uri().path());
    let span = span::request_span(&request);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    // A handler's own JSON answer (`/readyz`'s 503 says why it is not ready) is kept.
    if (status.is_client_error() || status.is_server_error())
        && response.extensions().get::<ErrorCode>().is_none()
        && !is_json(&response)
    {
        response = ApiError::Rejected(status).into_response();
    }
    // The OpenAI and KServe V2 routes answer errors in their protocols' shapes.
    let mut response = shape::reshape(door, response);
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        state
            .metrics
            .errors
            .get_or_create(&CodeLabel { code })
            .inc();
        if matches!(*code, "overloaded" | "deadline_unmeetable") {
            state
                .metrics
                .shed
                .get_or_create(&ShedLabel { reason: code })
                .inc();
        }
    }
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(request_id) = request_id {
        headers.entry(request_id::HEADER).or_insert(request_id);
    }
    span::record_response(&response, started.elapsed(), &span);
    response
}
