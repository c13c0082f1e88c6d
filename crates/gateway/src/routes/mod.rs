//! The routes and the middleware around them.
//!
//! - `POST /v1/inference` ([`inference`]), `GET /v1/result/{task_id}` ([`result`]);
//! - `POST /v1/embeddings`, `GET /v1/models` ([`openai`]): OpenAI-compatible embeddings;
//! - `POST /v2/models/{name}/infer`, `GET /v2/models/{name}[/ready]`, `GET /v2`,
//!   `GET /v2/health/{live,ready}` ([`kserve`]): the KServe V2 / Open Inference Protocol;
//! - `/inference.GRPCInferenceService/{method}` ([`kserve_grpc`]): the same protocol over
//!   gRPC, on the same port;
//! - `GET /healthz`, `GET /readyz` ([`health`]); `GET /metrics` ([`metrics`]);
//! - `GET /openapi.json` ([`openapi`]);
//! - `GET /` and `GET /status.json` ([`status`]): the live status page and its data;
//! - `GET /admin/dlq`, `POST /admin/dlq/replay`, `POST /admin/dlq/purge` ([`admin`]).

mod admin;
mod admit;
mod api;
mod extract;
mod front;
mod guard;
mod health;
mod inference;
mod kserve;
mod kserve_grpc;
mod metrics;
mod openai;
pub mod openapi;
mod request_id;
mod result;
mod shape;
mod span;
mod status;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;

use crate::error::ApiError;
use crate::metrics::route;
use crate::ops::Ops;
use crate::state::AppState;

pub use api::{Answer, Api};

/// The whole API with its middleware; tests call it with `oneshot`, `serve` serves it.
///
/// Middleware costs CPU on every request, so there is one service around each route
/// (`front.rs`: the request id, the span, the guard, the timeout, the counts, the error
/// shape) and the body limit (which only marks the request); the gRPC methods have their
/// own (`kserve_grpc`). `POST /v1/inference` is taken to its handler without the router
/// (`api.rs`).
pub fn router(state: AppState) -> Api {
    Api::new(state.clone(), routes(state))
}

/// Every route, through the router.
fn routes(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes();
    let router = Router::new()
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
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // One layer of the router, the body limit inside the front service: each layer of a
        // router wraps every route in a boxed service of its own, which every request clones
        // (an allocation, and a boxed future) to call.
        .layer(
            ServiceBuilder::new()
                .layer(front::FrontLayer(state.clone()))
                .layer(DefaultBodyLimit::max(body_limit)),
        );
    // After the layer, so that gRPC calls pass their own front service instead.
    kserve_grpc::add_routes(router, &state).with_state(state)
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

/// Tells browsers not to guess a content type other than the one declared.
async fn no_sniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
