//! The OpenAI-compatible front door: `POST /v1/embeddings` and `GET /v1/models`, as the
//! OpenAI SDKs call them (the bearer token is the API key). Each input of a request becomes a
//! task of its own, batched with every other caller's; the answer lists the embeddings in
//! input order. Errors are in OpenAI's shape (`shape.rs`).

use std::sync::LazyLock;
use std::time::SystemTime;

use axum::extract::State;
use axum::Json;
use base64::Engine;
use batchgate_protocol::front::openai::{
    EmbeddingItem, EmbeddingList, EmbeddingUsage, EmbeddingVector, EmbeddingsBody, EncodingFormat,
    ModelObject, ModelsList, OpenAiErrorBody, MAX_INPUTS,
};
use batchgate_protocol::openai::embedding_of_output;
use batchgate_protocol::Output;

use super::admit::run_all;
use super::extract::{Caller, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// When this process started serving, in seconds since the Unix epoch: the `created` of
/// its models.
static STARTED: LazyLock<u64> = LazyLock::new(|| {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
});

/// Embed one text or several. Each input is a task of its own, batched with every other
/// caller's inputs; the answer holds their embeddings in input order.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    operation_id = "create_embeddings",
    request_body(content = EmbeddingsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The embeddings, in input order.", body = EmbeddingList),
        (status = 400, description = "`invalid_json`, `invalid_utf8`; `unsupported_parameter`: `dimensions` is set (shortened embeddings are not supported).", body = OpenAiErrorBody),
        (status = 401, description = "`unauthenticated`: no valid bearer token (the API key).", body = OpenAiErrorBody),
        (status = 404, description = "`model_not_found`: the model is not served here (`GET /v1/models` lists them).", body = OpenAiErrorBody),
        (status = 413, description = "`body_too_large`, `input_too_large`; `too_many_inputs`: more inputs than the caller's rate limit allows in a period.", body = OpenAiErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = OpenAiErrorBody),
        (status = 422, description = "`invalid_request`: JSON of the wrong shape, an empty input, more than 2,048 inputs.", body = OpenAiErrorBody),
        (status = 429, description = "`rate_limited` (a request of N inputs takes N of the caller's rate), `too_many_in_flight`.", body = OpenAiErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
        (status = 502, description = "`inference_failed`: an input failed at the worker.", body = OpenAiErrorBody),
        (status = 503, description = "`overloaded`, `concurrency_limited`, `shutting_down`, `unavailable`.", body = OpenAiErrorBody, headers(("retry-after" = u64, description = "Seconds to wait before trying again."))),
        (status = 504, description = "`result_timeout`: the results did not come in time.", body = OpenAiErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody<EmbeddingsBody>,
) -> Result<Json<EmbeddingList>, ApiError> {
    let Some(model) = state.model_index(&body.model) else {
        return Err(ApiError::ModelNotFound(body.model));
    };
    if body.dimensions.is_some() {
        return Err(ApiError::Unsupported(
            "`dimensions`: shortened embeddings are not offered; leave it out".into(),
        ));
    }
    let inputs = body.input.into_vec();
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(ApiError::InvalidRequest(format!(
            "`input` must hold 1 to {MAX_INPUTS} texts, got {}",
            inputs.len()
        )));
    }
    // Whitespace-separated words stand in for tokens: there is no tokenizer here.
    let tokens: u64 = inputs
        .iter()
        .map(|i| i.split_whitespace().count() as u64)
        .sum();
    let outputs = run_all(&state, &caller, model, inputs).await?;
    let format = body.encoding_format.unwrap_or_default();
    let data = outputs
        .iter()
        .enumerate()
        .map(|(index, output)| EmbeddingItem {
            object: "embedding".into(),
            index,
            embedding: render(&vector_of(output), format),
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list".into(),
        data,
        model: body.model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// The models served here.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    operation_id = "list_models",
    responses(
        (status = 200, description = "The models served here.", body = ModelsList),
        (status = 401, description = "`unauthenticated`: no valid bearer token (the API key).", body = OpenAiErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub(crate) async fn models(State(state): State<AppState>, Caller(_): Caller) -> Json<ModelsList> {
    Json(ModelsList {
        object: "list".into(),
        data: state
            .config
            .models
            .iter()
            .map(|id| ModelObject {
                id: id.clone(),
                object: "model".into(),
                created: *STARTED,
                owned_by: "batchgate".into(),
            })
            .collect(),
    })
}

/// The embedding an output stands for: a vector as it is; text (a worker that answers
/// text) as [`embedding_of_output`] reads it — a JSON array of numbers as those numbers,
/// anything else (the simulated worker's digests) as the small vector derived from it.
pub(crate) fn vector_of(output: &Output) -> Vec<f32> {
    match output {
        Output::Vector(v) => v.clone(),
        Output::Text(text) => embedding_of_output(text)
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        Output::Bytes(bytes) => embedding_of_output(&String::from_utf8_lossy(bytes))
            .into_iter()
            .map(|x| x as f32)
            .collect(),
    }
}

/// A vector in the requested encoding: numbers, or the base64 of its little-endian `f32`s.
fn render(vector: &[f32], format: EncodingFormat) -> EmbeddingVector {
    match format {
        EncodingFormat::Float => EmbeddingVector::Float(vector.to_vec()),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_little_endian_floats() {
        let EmbeddingVector::Base64(text) = render(&[1.0, -2.5], EncodingFormat::Base64) else {
            panic!("base64 asked for");
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64");
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }

    #[test]
    fn text_outputs_stand_for_their_derived_or_parsed_vectors() {
        assert_eq!(vector_of(&Output::Text("[0.5,-1]".into())), [0.5, -1.0]);
        assert_eq!(vector_of(&Output::Text("abc".into())).len(), 8);
        assert_eq!(vector_of(&Output::Vector(vec![3.0])), [3.0]);
    }
}
