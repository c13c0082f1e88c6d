//! The routes and the middleware around them.
//!
//! - `POST /v1/inference` ([`inference`]), `GET /v1/result/{task_id}` ([`result`]);
//! - `GET /healthz`, `GET /readyz` ([`health`]); `GET /metrics` ([`metrics`]);
//! - `GET /openapi.json` ([`openapi`]);
//! - `GET /` and `GET /status.json` ([`status`]): the live status page and its data;
//! - `GET /admin/dlq`, `POST /admin/dlq/replay`, `POST /admin/dlq/purge` ([`admin`]).

mod admin;
mod extract;
mod guard;
mod health;
mod inference;
mod metrics;
mod openapi;
mod request_id;
mod result;
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
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ErrorCode};
use crate::metrics::{CodeLabel, HttpLabels, RouteLabel, ShedLabel};
use crate::state::AppState;

/// The whole API with its middleware; tests call it with `oneshot`, `serve` serves it.
pub fn router(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    let body_limit = state.config.max_body_bytes();
    let counted = state.clone();
    Router::new()
        .route("/v1/inference", post(inference::submit))
        .route("/v1/result/{task_id}", get(result::get_result))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .route("/", get(status::page))
        .route("/status.json", get(status::snapshot))
        .route("/openapi.json", get(openapi::spec))
        .route("/admin/dlq", get(admin::list))
        .route("/admin/dlq/replay", post(admin::replay))
        .route("/admin/dlq/purge", post(admin::purge))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            count_by_route,
        ))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .map_request(request_id::sanitize)
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(
                    // No line per failed request (`on_failure`): errors are counted by code
                    // in the metrics, and a client must not be able to flood the log.
                    TraceLayer::new_for_http()
                        .make_span_with(span::request_span)
                        .on_response(span::record_response)
                        .on_failure(()),
                )
                .map_response(move |response| count_errors(&counted, response))
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
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .route("/", get(status::page))
        .route("/status.json", get(status::snapshot))
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(middleware::map_response(no_sniff))
        .with_state(state)
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
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let is_submit = route == "/v1/inference" && request.uri().query().is_none();
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed().as_secs_f64();
    if is_submit {
        state.metrics.submit_latency.observe(took);
    }
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(took);
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Counts every error answer by its stable code, including those of unmatched routes and
/// timeouts, which never reach a route; puts an error answer that is not in our JSON shape
/// (one made below the routes) into it; marks every answer `nosniff`. A plain response map
/// (`ServiceBuilder::map_response`): no future of its own, no allocation.
fn count_errors(state: &AppState, mut response: Response) -> Response {
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && response.extensions().get::<ErrorCode>().is_none()
    {
        response = ApiError::Rejected(status).into_response();
    }
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
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
    response
}
