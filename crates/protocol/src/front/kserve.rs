//! The KServe V2 / Open Inference Protocol over HTTP as batchgate serves it: a `BYTES` input
//! tensor of `N` texts in, one output tensor of `N` rows out (`BYTES` for text outputs, `FP32`
//! of shape `[N, D]` for embeddings), and the health and metadata endpoints.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The datatype of text tensors.
pub const BYTES: &str = "BYTES";
/// The datatype of embedding tensors.
pub const FP32: &str = "FP32";
/// The name of the output tensor batchgate answers with.
pub const OUTPUT_NAME: &str = "output";
/// The name batchgate gives its input tensor in model metadata (any name is accepted).
pub const INPUT_NAME: &str = "input";

/// `POST /v2/models/{name}/infer` request body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferBody {
    /// Request id, echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Exactly one `BYTES` tensor of shape `[N]` (or `[N, 1]`): `N` texts, each a task.
    pub inputs: Vec<InputTensor>,
    /// The outputs wanted: `output`, or none for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputWanted>>,
    /// Request parameters (ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parameters: Option<Value>,
}

/// One input tensor.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputTensor {
    /// Its name (any).
    pub name: String,
    /// Its shape: `[N]`, or `[N, 1]`.
    pub shape: Vec<i64>,
    /// `BYTES`.
    pub datatype: String,
    /// Tensor parameters (ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parameters: Option<Value>,
    /// The texts, flat or nested in the tensor's shape.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub data: Value,
}

/// One wanted output.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputWanted {
    /// Its name.
    pub name: String,
    /// Output parameters (ignored; batchgate answers in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parameters: Option<Value>,
}

/// `POST /v2/models/{name}/infer` answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferAnswer {
    /// The model that answered.
    pub model_name: String,
    /// The request's id, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// One tensor, `output`.
    pub outputs: Vec<OutputTensor>,
}

/// One output tensor.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputTensor {
    /// `output`.
    pub name: String,
    /// `[N]` for `BYTES`, `[N, D]` for `FP32`.
    pub shape: Vec<i64>,
    /// `BYTES` (texts) or `FP32` (embeddings).
    pub datatype: String,
    /// The elements, flat in row-major order.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub data: Value,
}

/// `GET /v2`: the server's metadata.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// `batchgate`.
    pub name: String,
    /// batchgate's version.
    pub version: String,
    /// Protocol extensions (none).
    pub extensions: Vec<String>,
}

/// `GET /v2/models/{name}`: a model's metadata.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// Its versions (none: one version).
    pub versions: Vec<String>,
    /// `batchgate`.
    pub platform: String,
    /// The input tensor.
    pub inputs: Vec<TensorMetadata>,
    /// The output tensor.
    pub outputs: Vec<TensorMetadata>,
}

/// A tensor's name, type and shape (`-1`: any size).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub datatype: String,
    /// Its shape.
    pub shape: Vec<i64>,
}

/// The protocol's error body, `{"error": "…"}`, with batchgate's stable `code` beside it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KserveErrorBody {
    /// What went wrong.
    pub error: String,
    /// batchgate's stable snake_case code (the same as on its own API).
    pub code: String,
}
