//! The KServe V2 / Open Inference Protocol over HTTP, for one model with one `BYTES` input
//! tensor `input` of shape `[n]` and one `BYTES` output tensor `output` of shape `[n]`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_protocol::kserve_v2::{
    strings_of, InferRequest, InferResponse, ModelMetadata, ResponseOutput, ServerMetadata,
    TensorMetadata, BYTES, DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME,
};
use serde_json::Value;

use super::error::Shape;
use super::{ApiError, Served};

/// The server's name in `GET /v2`.
const SERVER_NAME: &str = "batchgate-sim";

pub(super) fn routes() -> Router<Served> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(|| async { StatusCode::OK }))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
}

async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: SERVER_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: Vec::new(),
    })
}

fn known(served: &Served, name: &str) -> Result<(), ApiError> {
    if served.serves(name) {
        Ok(())
    } else {
        Err(ApiError::UnknownModel(name.to_owned()))
    }
}

fn tensor(name: &str) -> TensorMetadata {
    TensorMetadata {
        name: name.into(),
        datatype: BYTES.into(),
        shape: vec![-1],
    }
}

async fn model_metadata(State(served): State<Served>, Path(name): Path<String>) -> Response {
    match known(&served, &name) {
        Ok(()) => Json(ModelMetadata {
            name,
            versions: Vec::new(),
            platform: SERVER_NAME.into(),
            inputs: vec![tensor(DEFAULT_INPUT_NAME)],
            outputs: vec![tensor(DEFAULT_OUTPUT_NAME)],
        })
        .into_response(),
        Err(error) => error.render(Shape::KserveV2),
    }
}

async fn model_ready(State(served): State<Served>, Path(name): Path<String>) -> Response {
    match known(&served, &name) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => error.render(Shape::KserveV2),
    }
}

async fn infer(
    State(served): State<Served>,
    Path(name): Path<String>,
    body: Result<Json<InferRequest>, JsonRejection>,
) -> Response {
    let answer = async {
        known(&served, &name)?;
        let Json(request) = body.map_err(|e| ApiError::from_rejection(&e))?;
        let inputs = batch_of(&request)?;
        let outputs = served.run(&inputs).await?;
        Ok::<_, ApiError>(InferResponse {
            model_name: name,
            model_version: None,
            id: request.id,
            parameters: None,
            outputs: vec![ResponseOutput {
                name: DEFAULT_OUTPUT_NAME.into(),
                shape: vec![i64::try_from(outputs.len()).unwrap_or(i64::MAX)],
                datatype: BYTES.into(),
                parameters: None,
                data: Value::Array(outputs.into_iter().map(Value::String).collect()),
            }],
        })
    };
    match answer.await {
        Ok(response) => Json(response).into_response(),
        Err(error) => error.render(Shape::KserveV2),
    }
}

/// The batch in a request: its one `BYTES` tensor `input`, whose shape matches its data.
fn batch_of(request: &InferRequest) -> Result<Vec<String>, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message, StatusCode::BAD_REQUEST);
    let [input] = request.inputs.as_slice() else {
        return Err(bad(format!(
            "expected one input tensor {DEFAULT_INPUT_NAME:?}, got {}",
            request.inputs.len()
        )));
    };
    if input.name != DEFAULT_INPUT_NAME {
        return Err(bad(format!(
            "unknown input tensor {:?}; this model's input is {DEFAULT_INPUT_NAME:?}",
            input.name
        )));
    }
    if input.datatype != BYTES {
        return Err(bad(format!(
            "input tensor {DEFAULT_INPUT_NAME:?} must be {BYTES}, not {}",
            input.datatype
        )));
    }
    if let Some(wanted) = request
        .outputs
        .iter()
        .find(|o| o.name != DEFAULT_OUTPUT_NAME)
    {
        return Err(bad(format!(
            "unknown output tensor {:?}; this model's output is {DEFAULT_OUTPUT_NAME:?}",
            wanted.name
        )));
    }
    let strings = strings_of(&input.data).map_err(|e| bad(e.to_string()))?;
    let elements = input
        .shape
        .iter()
        .try_fold(1i64, |n, &d| if d >= 0 { n.checked_mul(d) } else { None });
    if elements != i64::try_from(strings.len()).ok() {
        return Err(bad(format!(
            "shape {:?} does not hold the {} elements given",
            input.shape,
            strings.len()
        )));
    }
    Ok(strings)
}
