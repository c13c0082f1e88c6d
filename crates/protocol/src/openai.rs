//! OpenAI-style embeddings (`POST {base}/embeddings`), as batchgate uses them: an array
//! `input` in, one embedding per input out. batchgate's output for an input is its embedding,
//! a vector ([`crate::Output::Vector`]).
//!
//! The reference worker derives a small deterministic embedding from its output for an input
//! ([`embedding_of_output`]), so every result can be checked.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Dimensions of the embedding [`embedding_of_output`] derives from a non-vector output.
pub const DERIVED_DIMENSIONS: usize = 8;

/// `POST /embeddings` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    /// The model to use.
    pub model: String,
    /// The texts: one string or an array of them.
    pub input: EmbeddingsInput,
    /// `float` (a JSON array of numbers) or `base64`; batchgate asks for `float`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
}

/// The `input` of a request: one text or several (token arrays are not supported).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingsInput {
    /// One text.
    One(String),
    /// A batch of texts.
    Many(Vec<String>),
}

impl EmbeddingsInput {
    /// The texts, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            EmbeddingsInput::One(text) => vec![text],
            EmbeddingsInput::Many(texts) => texts,
        }
    }
}

/// `POST /embeddings` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    #[serde(default)]
    pub object: String,
    /// One entry per input; `index` says which.
    pub data: Vec<Embedding>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// Token counts, if the server reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The embedding of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `embedding`.
    #[serde(default)]
    pub object: String,
    /// Position of its input in the request.
    pub index: usize,
    /// The vector.
    pub embedding: Vec<f64>,
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the inputs.
    pub prompt_tokens: u64,
    /// All tokens of the request.
    pub total_tokens: u64,
}

/// `GET /models`: the models a server offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelCard>,
}

/// One model of a [`ModelList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Its name.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Who serves it.
    pub owned_by: String,
}

/// The embedding a worker's output stands for: the output itself when it already is a JSON
/// array of numbers (a real embedding model's output), else [`DERIVED_DIMENSIONS`] numbers in
/// [-1, 1) taken from the SHA-256 of the output (the simulated worker's hex digests). Each is a
/// multiple of 2⁻¹⁵, so its decimal text is exact and round-trips.
pub fn embedding_of_output(output: &str) -> Vec<f64> {
    if let Ok(vector) = serde_json::from_str::<Vec<f64>>(output) {
        return vector;
    }
    Sha256::digest(output.as_bytes())
        .chunks_exact(2)
        .take(DERIVED_DIMENSIONS)
        .map(|pair| f64::from(i16::from_be_bytes([pair[0], pair[1]])) / 32768.0)
        .collect()
}

/// An embedding's compact JSON array text, in 64-bit numbers.
pub fn embedding_text(embedding: &[f64]) -> String {
    // Serializing a slice of f64 cannot fail; non-finite numbers become `null`.
    serde_json::to_string(embedding).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_embeddings_are_small_deterministic_and_round_trip_as_text() {
        let e = embedding_of_output(&crate::sim_output("hello"));
        assert_eq!(e.len(), DERIVED_DIMENSIONS);
        assert!(e.iter().all(|x| (-1.0..1.0).contains(x)));
        assert_eq!(e, embedding_of_output(&crate::sim_output("hello")));
        let text = embedding_text(&e);
        let parsed: Vec<f64> = serde_json::from_str(&text).expect("json");
        assert_eq!(embedding_text(&parsed), text);
        // An output that is already a vector is used as it is.
        assert_eq!(embedding_of_output("[0.5,-1]"), vec![0.5, -1.0]);
    }

    #[test]
    fn input_is_one_text_or_many() {
        let one: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"m","input":"a"}"#).expect("one");
        assert_eq!(one.input.into_vec(), ["a"]);
        let many: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"m","input":["a","b"]}"#).expect("many");
        assert_eq!(many.input.into_vec(), ["a", "b"]);
    }
}
