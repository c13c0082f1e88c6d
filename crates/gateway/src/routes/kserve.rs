//! The KServe V2 / Open Inference Protocol front door over HTTP, as Triton's and KServe's
//! clients call it: `POST /v2/models/{name}/infer` takes one `BYTES` tensor of `N` texts,
//! each a task of its own batched with every other caller's, and answers one tensor
//! `output` of `N` rows in order — `FP32` of shape `[N, D]` when the outputs are vectors
//! (embeddings), else `BYTES` of shape `[N]`. Tensor data is JSON; the binary tensor data
//! extension is refused. Errors are `{"error": "…", "code": "…"}` (`shape.rs`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use batchgate_protocol::front::kserve::{
    InferAnswer, InferBody, KserveErrorBody, ModelMetadata, OutputTensor, ServerMetadata,
    TensorMetadata, BYTES, FP32, INPUT_NAME, OUTPUT_NAME,
};
use batchgate_protocol::kserve_v2::strings_of;
use batchgate_protocol::Output;
use serde_json::Value;

use super::admit::run_all;
use super::extract::{AnyJsonBody, Caller};
use super::health;
use crate::error::ApiError;
use crate::ops::Ops;
use crate::state::AppState;

/// Most texts in one infer request (as many as an embeddings request may hold).
const MAX_INPUTS: usize = batchgate_protocol::front::openai::MAX_INPUTS;

/// The header of the binary tensor data extension.
const BINARY_HEADER: &str = "inference-header-content-length";

/// The server's metadata.
#[utoipa::path(
    get,
    path = "/v2",
    tag = "kserve-v2",
    operation_id = "v2_server_metadata",
    responses((status = 200, description = "Name, version and extensions (none).", body = ServerMetadata))
)]
pub(crate) async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "batchgate".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: Vec::new(),
    })
}

/// Alive: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/v2/health/live",
    tag = "kserve-v2",
    operation_id = "v2_live",
    responses((status = 200, description = "The process serves HTTP."))
)]
pub(crate) async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready: the same verdict as `/readyz`.
#[utoipa::path(
    get,
    path = "/v2/health/ready",
    tag = "kserve-v2",
    operation_id = "v2_ready",
    responses(
        (status = 200, description = "Accepting work."),
        (status = 503, description = "Not accepting work (`/readyz` says why)."),
    )
)]
pub(crate) async fn ready(State(ops): State<Ops>) -> StatusCode {
    health::readyz(State(ops)).await.0
}

/// A model's metadata: one `BYTES` input of any length, one output.
#[utoipa::path(
    get,
    path = "/v2/models/{name}",
    tag = "kserve-v2",
    operation_id = "v2_model_metadata",
    params(("name" = String, Path, description = "The model's name.")),
    responses(
        (status = 200, description = "The model's tensors.", body = ModelMetadata),
        (status = 401, description = "`unauthenticated`: no valid bearer token.", body = KserveErrorBody),
        (status = 404, description = "`model_not_found`: the model is not served here.", body = KserveErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub(crate) async fn model_metadata(
    State(state): State<AppState>,
    Caller(_): Caller,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    served(&state, &name)?;
    Ok(Json(metadata_of(name)))
}

/// A served model's metadata, the same over HTTP and gRPC.
pub(super) fn metadata_of(name: String) -> ModelMetadata {
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape,
    };
    ModelMetadata {
        name,
        versions: Vec::new(),
        platform: "batchgate".into(),
        inputs: vec![tensor(INPUT_NAME, BYTES, vec![-1])],
        // `FP32` `[-1, -1]` for an embedding model, `BYTES` `[-1]` for text; the answer says.
        outputs: vec![tensor(OUTPUT_NAME, BYTES, vec![-1])],
    }
}

/// Ready when the model is served here and ready itself: not draining, its queue answers,
/// and, where this process runs its batcher, one of its workers is healthy.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/ready",
    tag = "kserve-v2",
    operation_id = "v2_model_ready",
    params(("name" = String, Path, description = "The model's name.")),
    responses(
        (status = 200, description = "The model accepts work."),
        (status = 401, description = "`unauthenticated`: no valid bearer token.", body = KserveErrorBody),
        (status = 404, description = "`model_not_found`: the model is not served here.", body = KserveErrorBody),
        (status = 503, description = "The model does not accept work (`draining`, `no_healthy_worker` of its own, `queue_unavailable`)."),
    ),
    security((), ("bearer" = []))
)]
pub(crate) async fn model_ready(
    State(state): State<AppState>,
    State(ops): State<Ops>,
    Caller(_): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let index = served(&state, &name)?;
    Ok(health::verdict(&ops, Some(index)).await.0)
}

/// Runs the model on each text of the input tensor; the output tensor holds the results in
/// the same order.
#[utoipa::path(
    post,
    path = "/v2/models/{name}/infer",
    tag = "kserve-v2",
    operation_id = "v2_infer",
    params(("name" = String, Path, description = "The model's name.")),
    request_body(content = InferBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The output tensor, one row per input text, in order.", body = InferAnswer),
        (status = 400, description = "`invalid_json`, `invalid_utf8`; `unsupported_parameter`: binary tensor data, or an output other than `output`.", body = KserveErrorBody),
        (status = 401, description = "`unauthenticated`: no valid bearer token.", body = KserveErrorBody),
        (status = 404, description = "`model_not_found`: the model is not served here.", body = KserveErrorBody),
        (status = 413, description = "`body_too_large`, `input_too_large`; `too_many_inputs`: more inputs than the caller's rate limit allows in a period.", body = KserveErrorBody),
        (status = 422, description = "`invalid_request`: not one `BYTES` tensor of 1 to 2,048 non-empty texts matching its shape.", body = KserveErrorBody),
        (status = 429, description = "`rate_limited` (a request of N inputs takes N of the caller's rate), `too_many_in_flight`.", body = KserveErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
        (status = 502, description = "`inference_failed`: an input failed at the worker.", body = KserveErrorBody),
        (status = 503, description = "`overloaded`, `concurrency_limited`, `shutting_down`, `unavailable`.", body = KserveErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
        (status = 504, description = "`result_timeout`: the results did not come in time.", body = KserveErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub(crate) async fn infer(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    AnyJsonBody(body): AnyJsonBody<InferBody>,
) -> Result<Json<InferAnswer>, ApiError> {
    let model = served(&state, &name)?;
    if headers.contains_key(BINARY_HEADER) {
        return Err(ApiError::Unsupported(
            "binary tensor data; send the tensor's data as JSON (binary_data=False)".into(),
        ));
    }
    only_output(body.outputs.iter().flatten().map(|o| o.name.as_str()))?;
    let inputs = texts_of(body.inputs)?;
    let outputs = run_all(&state, &caller, model, inputs).await?;
    Ok(Json(InferAnswer {
        model_name: name,
        id: body.id,
        outputs: vec![tensor_of(&outputs)],
    }))
}

/// `Err` unless every output asked for is `output`.
pub(super) fn only_output<'a>(mut wanted: impl Iterator<Item = &'a str>) -> Result<(), ApiError> {
    match wanted.find(|name| *name != OUTPUT_NAME) {
        Some(other) => Err(ApiError::Unsupported(format!(
            "output {other:?}: the only output is {OUTPUT_NAME:?}"
        ))),
        None => Ok(()),
    }
}

/// The model's position among those served, or `Err` if it is not served here.
pub(super) fn served(state: &AppState, name: &str) -> Result<usize, ApiError> {
    state
        .model_index(name)
        .ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))
}

/// The texts of the request's one `BYTES` tensor, checked against its shape.
fn texts_of(
    mut tensors: Vec<batchgate_protocol::front::kserve::InputTensor>,
) -> Result<Vec<String>, ApiError> {
    let invalid = |m: String| Err(ApiError::InvalidRequest(m));
    if tensors.len() != 1 {
        return invalid(format!(
            "expected one input tensor of texts, got {}",
            tensors.len()
        ));
    }
    let tensor = tensors.remove(0);
    check_bytes(&tensor.name, &tensor.datatype)?;
    let texts = strings_of(&tensor.data).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    check_rows(&tensor.name, &tensor.shape, texts.len())?;
    Ok(texts)
}

/// `Err` unless the input tensor `name` is of texts, over HTTP and gRPC alike.
pub(super) fn check_bytes(name: &str, datatype: &str) -> Result<(), ApiError> {
    if datatype != BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "input {name:?} is {datatype}, expected {BYTES}"
        )));
    }
    Ok(())
}

/// `Err` unless the input tensor `name` of `shape` holds `count` texts, one per row, and
/// 1 to [`MAX_INPUTS`] of them; over HTTP and gRPC alike.
pub(super) fn check_rows(name: &str, shape: &[i64], count: usize) -> Result<(), ApiError> {
    let invalid = |m: String| Err(ApiError::InvalidRequest(m));
    let elements = shape
        .iter()
        .try_fold(1i64, |n, &d| if d < 0 { None } else { n.checked_mul(d) });
    let rows_only = matches!(shape, [_] | [_, 1]);
    if !rows_only || elements != i64::try_from(count).ok() {
        return invalid(format!(
            "input {name:?} has shape {shape:?} and {count} texts; expected [N] or [N, 1] with N texts"
        ));
    }
    if count == 0 || count > MAX_INPUTS {
        return invalid(format!(
            "the input must hold 1 to {MAX_INPUTS} texts, got {count}"
        ));
    }
    Ok(())
}

/// The outputs as rows of one length `D` when every one is a vector of that length (an
/// `FP32` tensor `[N, D]`), with `D`; `None` when they must be a `BYTES` tensor.
pub(super) fn vector_rows(outputs: &[Output]) -> Option<(Vec<&[f32]>, usize)> {
    let rows: Vec<&[f32]> = outputs
        .iter()
        .map(|o| match o {
            Output::Vector(v) => Some(v.as_slice()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let d = rows.first().map_or(0, |v| v.len());
    rows.iter().all(|v| v.len() == d).then_some((rows, d))
}

/// The output tensor: `FP32` `[N, D]` when every output is a vector of one length `D`, else
/// `BYTES` `[N]` of their text (`/v1/inference`'s form).
fn tensor_of(outputs: &[Output]) -> OutputTensor {
    let n = i64::try_from(outputs.len()).unwrap_or(i64::MAX);
    if let Some((rows, d)) = vector_rows(outputs) {
        let data: Vec<Value> = rows
            .iter()
            .flat_map(|v| v.iter())
            .map(|&x| Value::from(x))
            .collect();
        return OutputTensor {
            name: OUTPUT_NAME.into(),
            shape: vec![n, i64::try_from(d).unwrap_or(i64::MAX)],
            datatype: FP32.into(),
            data: Value::Array(data),
        };
    }
    OutputTensor {
        name: OUTPUT_NAME.into(),
        shape: vec![n],
        datatype: BYTES.into(),
        data: Value::Array(outputs.iter().map(|o| Value::String(o.to_text())).collect()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use batchgate_protocol::front::kserve::InputTensor;

    fn tensor(shape: Vec<i64>, datatype: &str, data: Value) -> InputTensor {
        InputTensor {
            name: "text".into(),
            shape,
            datatype: datatype.into(),
            parameters: None,
            data,
        }
    }

    #[test]
    fn texts_must_match_the_shape_and_type() {
        let ok = texts_of(vec![tensor(vec![2], BYTES, json!(["a", "b"]))]).expect("ok");
        assert_eq!(ok, ["a", "b"]);
        let column = texts_of(vec![tensor(vec![2, 1], BYTES, json!([["a"], ["b"]]))]);
        assert_eq!(column.expect("ok"), ["a", "b"]);
        for bad in [
            vec![tensor(vec![3], BYTES, json!(["a", "b"]))],
            vec![tensor(vec![2], FP32, json!([1.0, 2.0]))],
            vec![tensor(vec![1, 2], BYTES, json!([["a", "b"]]))],
            vec![tensor(vec![0], BYTES, json!([]))],
            vec![tensor(vec![-1], BYTES, json!(["a"]))],
            vec![],
        ] {
            assert!(texts_of(bad).is_err());
        }
    }

    #[test]
    fn vectors_of_one_length_are_fp32_rows_and_anything_else_is_bytes() {
        let fp32 = tensor_of(&[
            Output::Vector(vec![1.0, 2.0]),
            Output::Vector(vec![3.0, 4.5]),
        ]);
        assert_eq!(
            (fp32.datatype.as_str(), fp32.shape.clone()),
            (FP32, vec![2, 2])
        );
        assert_eq!(fp32.data, json!([1.0, 2.0, 3.0, 4.5]));
        let text = tensor_of(&[Output::Text("x".into()), Output::Vector(vec![1.0])]);
        assert_eq!(
            (text.datatype.as_str(), text.shape.clone()),
            (BYTES, vec![2])
        );
        assert_eq!(text.data, json!(["x", "[1.0]"]));
    }
}
