//! Adapter for OpenAI-style embeddings: a batch is one `POST {base}/embeddings` with an array
//! `input`; the output for an input is its embedding, a vector of 32-bit floats
//! ([`Output::Vector`]). Health is `GET {base}/models`.
//!
//! `{base}` is the API's base URL, `http://host:port/v1`; the model is named in each request
//! (`sim` unless configured).

use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::openai::{EmbeddingsInput, EmbeddingsRequest, EmbeddingsResponse};

use crate::http::{self, status_error};
use crate::spec::WorkerToken;
use crate::{Output, Worker, WorkerError};

/// The model named in requests unless configured: the reference worker's.
pub const DEFAULT_MODEL: &str = "sim";

/// Calls an OpenAI-style embeddings API.
#[derive(Debug, Clone)]
pub struct OpenAiWorker {
    /// Pooled HTTP client (cloning is shallow).
    client: reqwest::Client,
    /// `{base}/embeddings`.
    embeddings_url: String,
    /// `{base}/models`, the health check.
    models_url: String,
    /// The model named in each request.
    model: String,
    /// Bound on one call, connect to last byte.
    timeout: Duration,
    /// `Authorization` of every inference call, for a worker that requires a token.
    token: Option<reqwest::header::HeaderValue>,
}

impl OpenAiWorker {
    /// A client for the API at `base_url` (`http://host:port/v1`) and its `model`.
    pub fn new(base_url: &str, model: &str, timeout: Duration) -> Result<Self, WorkerError> {
        let base = base_url.trim_end_matches('/');
        Ok(OpenAiWorker {
            client: http::client(timeout, None)?,
            embeddings_url: format!("{base}/embeddings"),
            models_url: format!("{base}/models"),
            model: model.to_owned(),
            timeout,
            token: None,
        })
    }

    /// The URL batches are posted to.
    pub fn endpoint(&self) -> &str {
        &self.embeddings_url
    }

    /// The same client; with `tls`, reaching an `https://` URL with it (the CA to trust, and a
    /// client certificate for workers that require one), and only over TLS.
    pub fn with_tls(mut self, tls: Option<rustls::ClientConfig>) -> Result<Self, WorkerError> {
        if tls.is_some() {
            self.client = http::client(self.timeout, tls)?;
        }
        Ok(self)
    }

    /// Sends `token` (`Authorization: Bearer …`) with every inference call.
    pub fn with_token(mut self, token: Option<&WorkerToken>) -> Result<Self, WorkerError> {
        self.token = http::token_header(token)?;
        Ok(self)
    }
}

/// Reads an embeddings answer: one vector per input, in input order (placed by each entry's
/// `index`), else the error it amounts to. Total over any status and any bytes.
pub fn parse_answer(status: u16, body: &[u8], expected: usize) -> Result<Vec<Output>, WorkerError> {
    if !(200..300).contains(&status) {
        return Err(status_error(status, body));
    }
    let invalid = WorkerError::InvalidResponse;
    let response: EmbeddingsResponse =
        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    if response.data.len() != expected {
        return Err(invalid(format!(
            "{} embeddings for {expected} inputs",
            response.data.len()
        )));
    }
    let mut outputs: Vec<Option<Output>> = vec![None; expected];
    for entry in &response.data {
        match outputs.get_mut(entry.index) {
            Some(slot @ None) => {
                *slot = Some(Output::Vector(
                    entry.embedding.iter().map(|&x| x as f32).collect(),
                ))
            }
            Some(Some(_)) => return Err(invalid(format!("index {} twice", entry.index))),
            None => {
                return Err(invalid(format!(
                    "index {} out of range for {expected} inputs",
                    entry.index
                )))
            }
        }
    }
    // n entries with distinct indexes below n fill every place.
    Ok(outputs.into_iter().flatten().collect())
}

#[async_trait]
impl Worker for OpenAiWorker {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        let body = EmbeddingsRequest {
            model: self.model.clone(),
            input: EmbeddingsInput::Many(inputs.to_vec()),
            encoding_format: Some("float".to_owned()),
        };
        let request = self.client.post(&self.embeddings_url).json(&body);
        let request = http::authorized(request, self.token.as_ref());
        let (status, body) = http::send(request, self.timeout).await?;
        parse_answer(status, &body, inputs.len())
    }

    async fn health(&self) -> Result<(), WorkerError> {
        http::get_ok(&self.client, &self.models_url, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Any status and any bytes: an answer of the right length or an error, never a panic.
        #[test]
        fn any_answer_parses_or_errs(status in 100u16..600, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), expected in 0usize..70) {
            if let Ok(outputs) = parse_answer(status, &body, expected) {
                proptest::prop_assert_eq!(outputs.len(), expected);
            }
        }
    }

    #[test]
    fn entries_are_placed_by_index_and_bad_indexes_are_errors() {
        let answer = br#"{"object":"list","model":"m","data":[
            {"object":"embedding","index":1,"embedding":[0.5]},
            {"object":"embedding","index":0,"embedding":[-0.25, 1]}]}"#;
        assert_eq!(
            parse_answer(200, answer, 2).expect("read"),
            [Output::Vector(vec![-0.25, 1.0]), Output::Vector(vec![0.5])]
        );
        let twice = br#"{"data":[{"index":0,"embedding":[]},{"index":0,"embedding":[]}]}"#;
        let beyond = br#"{"data":[{"index":0,"embedding":[]},{"index":2,"embedding":[]}]}"#;
        for answer in [&twice[..], &beyond[..]] {
            let err = parse_answer(200, answer, 2).expect_err("bad index");
            assert!(matches!(err, WorkerError::InvalidResponse(_)), "{err:?}");
        }
        match parse_answer(
            404,
            br#"{"error":{"message":"no such model","type":"invalid_request_error","code":null}}"#,
            1,
        ) {
            Err(WorkerError::Status { status, message }) => {
                assert_eq!((status, message.as_str()), (404, "no such model"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
