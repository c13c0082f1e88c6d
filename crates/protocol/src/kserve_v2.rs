//! The KServe V2 / Open Inference Protocol over HTTP, the part batchgate uses: one `BYTES`
//! input tensor of shape `[n]` in, one `BYTES` output tensor of shape `[n]` out
//! (`POST /v2/models/{name}/infer`), and the health and metadata endpoints. Triton and
//! MLServer speak it.
//!
//! Tensor data is JSON: a flat array in row-major order, or nested arrays of the tensor's
//! shape; both are accepted when reading.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The datatype of a tensor of byte strings (text, for batchgate).
pub const BYTES: &str = "BYTES";
/// Default name of the input tensor batchgate sends.
pub const DEFAULT_INPUT_NAME: &str = "input";
/// Default name of the output tensor batchgate reads.
pub const DEFAULT_OUTPUT_NAME: &str = "output";

/// `POST /v2/models/{name}/infer` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    /// Request id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The input tensors.
    pub inputs: Vec<RequestInput>,
    /// The outputs wanted; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<RequestOutput>,
    /// Request parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
}

/// One input tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestInput {
    /// Its name, as the model declares it.
    pub name: String,
    /// Its shape; `[n]` for a batch of `n` strings.
    pub shape: Vec<i64>,
    /// Its element type; `BYTES` for strings.
    pub datatype: String,
    /// Tensor parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// The elements: flat in row-major order, or nested.
    pub data: Value,
}

/// One wanted output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestOutput {
    /// The output tensor's name.
    pub name: String,
}

/// `POST /v2/models/{name}/infer` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    /// The model that answered.
    pub model_name: String,
    /// Its version, if the server has versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// The output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseOutput {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<i64>,
    /// Its element type.
    pub datatype: String,
    /// Tensor parameters (MLServer adds `content_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// The elements.
    pub data: Value,
}

/// The protocol's error body: `{"error": "message"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: String,
}

/// `GET /v2`: the server's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// The server's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Protocol extensions it supports.
    pub extensions: Vec<String>,
}

/// `GET /v2/models/{name}`: a model's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// Its versions.
    #[serde(default)]
    pub versions: Vec<String>,
    /// What runs it.
    pub platform: String,
    /// Its input tensors.
    pub inputs: Vec<TensorMetadata>,
    /// Its output tensors.
    pub outputs: Vec<TensorMetadata>,
}

/// A tensor's name, type and shape (`-1`: any size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub datatype: String,
    /// Its shape.
    pub shape: Vec<i64>,
}

/// A `BYTES` tensor of shape `[n]` holding `strings`.
pub fn bytes_input(name: &str, strings: &[String]) -> RequestInput {
    RequestInput {
        name: name.to_owned(),
        shape: vec![i64::try_from(strings.len()).unwrap_or(i64::MAX)],
        datatype: BYTES.to_owned(),
        parameters: None,
        data: Value::Array(strings.iter().cloned().map(Value::String).collect()),
    }
}

/// Why a tensor's data is not the strings of a `BYTES` tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorDataError {
    /// The data is not an array at all.
    #[error("tensor data is not an array: {0}")]
    NotAnArray(&'static str),
    /// An element is not a string.
    #[error("BYTES tensor element is not a string: {0}")]
    NotAString(&'static str),
    /// Nested deeper than a tensor plausibly is: a bound for hostile input.
    #[error("tensor data nested deeper than {0}")]
    TooDeep(usize),
}

/// The strings of a `BYTES` tensor's data, flattened in row-major order; an error if an
/// element is not a string or nesting goes deeper than a tensor plausibly does.
pub fn strings_of(data: &Value) -> Result<Vec<String>, TensorDataError> {
    /// Deeper nesting than any tensor batchgate exchanges: a bound for hostile input.
    const MAX_DEPTH: usize = 8;
    fn walk(value: &Value, depth: usize, out: &mut Vec<String>) -> Result<(), TensorDataError> {
        match value {
            Value::String(s) => {
                out.push(s.clone());
                Ok(())
            }
            Value::Array(items) if depth < MAX_DEPTH => {
                items.iter().try_for_each(|item| walk(item, depth + 1, out))
            }
            Value::Array(_) => Err(TensorDataError::TooDeep(MAX_DEPTH)),
            other => Err(TensorDataError::NotAString(kind(other))),
        }
    }
    let mut out = Vec::new();
    match data {
        Value::Array(_) => walk(data, 0, &mut out)?,
        other => return Err(TensorDataError::NotAnArray(kind(other))),
    }
    Ok(out)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flat_and_nested_data_flatten_in_order_and_other_elements_are_refused() {
        assert_eq!(strings_of(&json!(["a", "b"])).expect("flat"), ["a", "b"]);
        assert_eq!(
            strings_of(&json!([["a"], ["b"]])).expect("nested"),
            ["a", "b"]
        );
        assert!(strings_of(&json!([1, 2])).is_err());
        assert!(strings_of(&json!("a")).is_err());
        let deep = (0..20).fold(json!("x"), |v, _| json!([v]));
        assert!(strings_of(&deep).is_err());
    }

    #[test]
    fn a_request_has_the_documented_shape() {
        let request = InferRequest {
            id: None,
            inputs: vec![bytes_input("text", &["hi".into(), "yo".into()])],
            outputs: vec![RequestOutput {
                name: "hash".into(),
            }],
            parameters: None,
        };
        assert_eq!(
            serde_json::to_value(&request).expect("json"),
            json!({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hi", "yo"]}],
                   "outputs": [{"name": "hash"}]})
        );
    }
}
