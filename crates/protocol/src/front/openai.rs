//! `POST /v1/embeddings` and `GET /v1/models` as the OpenAI SDKs call them, and OpenAI's
//! error shape.

use serde::{Deserialize, Serialize};

/// Most inputs in one embeddings request (OpenAI's own limit).
pub const MAX_INPUTS: usize = 2048;

/// `POST /v1/embeddings` request body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsBody {
    /// The model: one of those `GET /v1/models` lists.
    #[cfg_attr(feature = "openapi", schema(example = "default"))]
    pub model: String,
    /// One text, or an array of at most 2,048 texts; each becomes a task of its own.
    pub input: Input,
    /// `float` (the default: arrays of numbers) or `base64` (each vector as the base64 of
    /// its little-endian 32-bit floats).
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// Shortened embeddings are not supported: a request that sets this is refused (400).
    #[serde(default)]
    pub dimensions: Option<u64>,
    /// The end user, as the caller labels it; informational.
    #[serde(default)]
    pub user: Option<String>,
}

/// The `input` of an embeddings request.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// One text.
    One(String),
    /// Several texts, answered in this order.
    Many(Vec<String>),
}

impl Input {
    /// The texts, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Input::One(text) => vec![text],
            Input::Many(texts) => texts,
        }
    }
}

/// How the vectors of an answer are written.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    #[default]
    Float,
    /// The base64 of the little-endian 32-bit floats.
    Base64,
}

/// `POST /v1/embeddings` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingList {
    /// Always `list`.
    pub object: String,
    /// One entry per input, in input order.
    pub data: Vec<EmbeddingItem>,
    /// The model that answered.
    pub model: String,
    /// Token counts (whitespace-separated words: batchgate has no tokenizer).
    pub usage: EmbeddingUsage,
}

/// One input's embedding.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingItem {
    /// Always `embedding`.
    pub object: String,
    /// Its input's position in the request.
    pub index: usize,
    /// The vector: numbers, or a base64 string with `encoding_format: base64`.
    pub embedding: EmbeddingVector,
}

/// A vector as numbers or as base64.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// Token counts of an embeddings answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens in the inputs.
    pub prompt_tokens: u64,
    /// All tokens of the request.
    pub total_tokens: u64,
}

/// `GET /v1/models` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelsList {
    /// Always `list`.
    pub object: String,
    /// The models this deployment serves.
    pub data: Vec<ModelObject>,
}

/// One model.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelObject {
    /// Its name, as requests give it.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// When it was made available, in seconds since the Unix epoch (the gateway's start).
    pub created: u64,
    /// Always `batchgate`.
    pub owned_by: String,
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiErrorBody {
    /// The error itself.
    pub error: OpenAiError,
}

/// One error, in OpenAI's form; `code` is batchgate's stable code.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiError {
    /// Human-readable explanation.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error`, `timeout_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// batchgate's stable snake_case code (the same as on its own API).
    pub code: String,
}
