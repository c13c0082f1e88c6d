//! OpenAI-style embeddings: `POST /v1/embeddings`, `GET /v1/models`. The embedding of an input
//! is derived from the model's output for it
//! ([`batchgate_protocol::openai::embedding_of_output`]): a small deterministic vector for
//! the simulator's digests, the vector itself for a model whose output already is one.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_protocol::openai::{
    embedding_of_output, Embedding, EmbeddingsRequest, EmbeddingsResponse, ModelCard, ModelList,
    Usage,
};

use super::error::Shape;
use super::{ApiError, Served};

pub(super) fn routes() -> Router<Served> {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
}

async fn models(State(served): State<Served>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: served
            .names()
            .map(|name| ModelCard {
                id: name.to_owned(),
                object: "model".into(),
                owned_by: "batchgate".into(),
            })
            .collect(),
    })
}

async fn embeddings(
    State(served): State<Served>,
    body: Result<Json<EmbeddingsRequest>, JsonRejection>,
) -> Response {
    let answer = async {
        let Json(request) = body.map_err(|e| ApiError::from_rejection(&e))?;
        if !served.serves(&request.model) {
            return Err(ApiError::UnknownModel(request.model));
        }
        if request
            .encoding_format
            .as_deref()
            .is_some_and(|f| f != "float")
        {
            return Err(ApiError::BadRequest(
                "only encoding_format \"float\" is supported".into(),
                StatusCode::BAD_REQUEST,
            ));
        }
        let inputs = request.input.into_vec();
        // Whitespace-separated words stand in for tokens: there is no tokenizer here.
        let tokens: u64 = inputs
            .iter()
            .map(|i| i.split_whitespace().count() as u64)
            .sum();
        let outputs = served.run(&inputs).await?;
        Ok(EmbeddingsResponse {
            object: "list".into(),
            data: outputs
                .iter()
                .enumerate()
                .map(|(index, output)| Embedding {
                    object: "embedding".into(),
                    index,
                    embedding: embedding_of_output(output),
                })
                .collect(),
            model: request.model,
            usage: Some(Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            }),
        })
    };
    match answer.await {
        Ok(response) => Json(response).into_response(),
        Err(error) => error.render(Shape::OpenAi),
    }
}
