//! batchgate's JSON batch API: `POST /v1/batch`, `GET /healthz`, `GET /v1/stats`.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_protocol::worker_api::{BatchRequest, BatchResponse};

use super::error::Shape;
use super::{ApiError, Served, LOAD_HEADER};

pub(super) fn routes() -> Router<Served> {
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
}

async fn batch(
    State(served): State<Served>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Response {
    let answer = async {
        let Json(request) = body.map_err(|e| ApiError::from_rejection(&e))?;
        served.run(&request.inputs).await
    };
    match answer.await {
        Ok(outputs) => {
            let body = Json(BatchResponse { outputs });
            match &served.sim {
                Some(sim) => {
                    let load = format!("{}/{}", sim.in_flight(), sim.config().slots);
                    ([(LOAD_HEADER, load)], body).into_response()
                }
                None => body.into_response(),
            }
        }
        Err(error) => error.render(Shape::BatchApi),
    }
}

/// The simulator's counters; 404 for other models, which keep none.
async fn stats(State(served): State<Served>) -> Response {
    match &served.sim {
        Some(sim) => Json(sim.stats()).into_response(),
        None => ApiError::BadRequest(
            "this worker keeps no stats".into(),
            axum::http::StatusCode::NOT_FOUND,
        )
        .render(Shape::BatchApi),
    }
}
