//! A worker's output for one input, typed: text, bytes or a vector of numbers, and its
//! compact tagged encoding for stores.
//!
//! Each front door renders an output in its own protocol's form (`/v1/inference` as text,
//! the OpenAI embeddings as numbers or base64, KServe V2 as a BYTES or FP32 tensor); between
//! the worker and the front door it travels as it is, never re-encoded as JSON text.
//!
//! The stored form ([`Output::encode`]) keeps text as its UTF-8 bytes, so a record written
//! before outputs had types reads back as the text it was. Bytes and vectors start with the
//! byte `0xFF`, which never occurs in UTF-8 text, then a tag: `B` and the bytes, or `V` and
//! the numbers as little-endian `f32`.

use base64::Engine;

/// The first byte of a non-text output's stored form (never part of UTF-8 text).
const TYPED: u8 = 0xFF;

/// One worker output.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Text (batchgate's own worker API, gRPC, KServe BYTES).
    Text(String),
    /// Raw bytes (a KServe BYTES element that is not UTF-8).
    Bytes(Vec<u8>),
    /// A vector of numbers (an embedding: OpenAI-style workers, KServe FP32, the model).
    Vector(Vec<f32>),
}

/// An output equals a text when it is that text.
impl PartialEq<str> for Output {
    fn eq(&self, other: &str) -> bool {
        self.as_text() == Some(other)
    }
}

impl PartialEq<&str> for Output {
    fn eq(&self, other: &&str) -> bool {
        self.as_text() == Some(*other)
    }
}

impl PartialEq<String> for Output {
    fn eq(&self, other: &String) -> bool {
        self.as_text() == Some(other.as_str())
    }
}

impl From<String> for Output {
    fn from(text: String) -> Self {
        Output::Text(text)
    }
}

impl From<&str> for Output {
    fn from(text: &str) -> Self {
        Output::Text(text.to_owned())
    }
}

impl From<Vec<f32>> for Output {
    fn from(vector: Vec<f32>) -> Self {
        Output::Vector(vector)
    }
}

impl Output {
    /// The output as `/v1/inference` shows it: text as it is, a vector as the compact JSON
    /// array of its numbers (what that API gave for an embedding before outputs had types),
    /// bytes in standard base64.
    pub fn to_text(&self) -> String {
        match self {
            Output::Text(text) => text.clone(),
            Output::Bytes(bytes) => base64::engine::general_purpose::STANDARD.encode(bytes),
            Output::Vector(v) => vector_text(v),
        }
    }

    /// [`Output::to_text`], moving text rather than copying it.
    pub fn into_text(self) -> String {
        match self {
            Output::Text(text) => text,
            other => other.to_text(),
        }
    }

    /// The text, when the output is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Output::Text(text) => Some(text),
            _ => None,
        }
    }

    /// Bytes of the stored form: see the module's documentation.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Output::Text(text) => text.as_bytes().to_vec(),
            Output::Bytes(bytes) => {
                let mut out = Vec::with_capacity(bytes.len() + 2);
                out.extend_from_slice(&[TYPED, b'B']);
                out.extend_from_slice(bytes);
                out
            }
            Output::Vector(v) => {
                let mut out = Vec::with_capacity(v.len() * 4 + 2);
                out.extend_from_slice(&[TYPED, b'V']);
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out
            }
        }
    }

    /// The stored form, text borrowed rather than copied.
    pub fn stored(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Output::Text(text) => std::borrow::Cow::Borrowed(text.as_bytes()),
            other => std::borrow::Cow::Owned(other.encode()),
        }
    }

    /// The stored form, without copying text.
    pub fn into_encoded(self) -> Vec<u8> {
        match self {
            Output::Text(text) => text.into_bytes(),
            other => other.encode(),
        }
    }

    /// Reads the stored form; `None` if it is tagged but malformed. Untagged bytes are text
    /// (invalid UTF-8 in them is replaced, as it was before outputs had types).
    pub fn decode(stored: &[u8]) -> Option<Output> {
        match stored {
            [TYPED, b'B', bytes @ ..] => Some(Output::Bytes(bytes.to_vec())),
            [TYPED, b'V', numbers @ ..] if numbers.len() % 4 == 0 => Some(Output::Vector(
                numbers
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )),
            [TYPED, ..] => None,
            // Checked first: the lossy reader is several times slower on valid text.
            text => Some(Output::Text(match std::str::from_utf8(text) {
                Ok(text) => text.to_owned(),
                Err(_) => String::from_utf8_lossy(text).into_owned(),
            })),
        }
    }

    /// The length of the stored form in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Output::Text(text) => text.len(),
            Output::Bytes(bytes) => bytes.len() + 2,
            Output::Vector(v) => v.len() * 4 + 2,
        }
    }
}

/// A vector as compact JSON text (`[0.5,-1.0]`); non-finite numbers become `null`.
pub fn vector_text(v: &[f32]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_stored_form() {
        for output in [
            Output::Text("héllo;world".into()),
            Output::Text(String::new()),
            Output::Bytes(vec![0, 0xFF, 1]),
            Output::Bytes(Vec::new()),
            Output::Vector(vec![0.5, -1.0, 3.25e-7]),
            Output::Vector(Vec::new()),
        ] {
            let stored = output.encode();
            assert_eq!(stored.len(), output.encoded_len());
            assert_eq!(output.clone().into_encoded(), stored);
            assert_eq!(output.stored().as_ref(), stored.as_slice());
            assert_eq!(Output::decode(&stored), Some(output));
        }
    }

    #[test]
    fn text_is_stored_as_it_is_and_old_text_reads_back() {
        assert_eq!(Output::Text("[1,2]".into()).encode(), b"[1,2]");
        assert_eq!(Output::decode(b"abc"), Some(Output::Text("abc".into())));
        assert_eq!(Output::decode(b"\xFFV\x00"), None, "a partial number");
        assert_eq!(Output::decode(b"\xFFX"), None, "an unknown tag");
    }

    #[test]
    fn the_inference_api_renders_every_kind_as_text() {
        assert_eq!(Output::Vector(vec![0.5, -1.0]).to_text(), "[0.5,-1.0]");
        assert_eq!(Output::Bytes(vec![1, 2, 3]).to_text(), "AQID");
        assert_eq!(Output::Text("x".into()).to_text(), "x");
    }
}
