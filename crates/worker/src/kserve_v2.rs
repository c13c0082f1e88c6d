//! Adapter for the KServe V2 / Open Inference Protocol over HTTP (Triton, MLServer, KServe):
//! a batch is one `BYTES` input tensor of shape `[n]`, `POST {model}/infer`; the outputs are
//! the strings of one `BYTES` output tensor of `n` elements. Health is `GET {model}/ready`.
//!
//! `{model}` is the model's URL, `http://host:port/v2/models/NAME` (or
//! `…/versions/VERSION`). The tensor names are the model's: `input` and `output` unless
//! configured.

use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::kserve_v2::{
    bytes_input, strings_of, InferRequest, InferResponse, RequestOutput, BYTES,
};

use crate::http::{self, status_error};
use crate::spec::WorkerToken;
use crate::{Output, Worker, WorkerError};

/// Calls one model of a KServe V2 server.
#[derive(Debug, Clone)]
pub struct KserveV2Worker {
    /// Pooled HTTP client (cloning is shallow).
    client: reqwest::Client,
    /// `{model}/infer`.
    infer_url: String,
    /// `{model}/ready`.
    ready_url: String,
    /// Name of the input tensor the model expects.
    input_name: String,
    /// Name of the output tensor to read.
    output_name: String,
    /// Bound on one call, connect to last byte.
    timeout: Duration,
    /// `Authorization` of every inference call, for a worker that requires a token.
    token: Option<reqwest::header::HeaderValue>,
}

impl KserveV2Worker {
    /// A client for the model at `model_url` (`http://host:port/v2/models/NAME`), sending
    /// input tensor `input_name` and reading output tensor `output_name`.
    pub fn new(
        model_url: &str,
        input_name: &str,
        output_name: &str,
        timeout: Duration,
    ) -> Result<Self, WorkerError> {
        let model = model_url.trim_end_matches('/');
        Ok(KserveV2Worker {
            client: http::client(timeout, None)?,
            infer_url: format!("{model}/infer"),
            ready_url: format!("{model}/ready"),
            input_name: input_name.to_owned(),
            output_name: output_name.to_owned(),
            timeout,
            token: None,
        })
    }

    /// The URL batches are posted to.
    pub fn endpoint(&self) -> &str {
        &self.infer_url
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

/// Reads an inference answer: the strings of output tensor `output_name`, exactly
/// `expected` of them, else the error it amounts to. Total over any status and any bytes.
pub fn parse_answer(
    status: u16,
    body: &[u8],
    output_name: &str,
    expected: usize,
) -> Result<Vec<String>, WorkerError> {
    if !(200..300).contains(&status) {
        return Err(status_error(status, body));
    }
    let invalid = WorkerError::InvalidResponse;
    let response: InferResponse =
        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let Some(output) = response.outputs.iter().find(|o| o.name == output_name) else {
        let names: Vec<&str> = response.outputs.iter().map(|o| o.name.as_str()).collect();
        return Err(invalid(format!(
            "no output tensor named {output_name:?} (the answer has {names:?})"
        )));
    };
    if output.datatype != BYTES {
        return Err(invalid(format!(
            "output tensor {output_name:?} is {}, not {BYTES}",
            output.datatype
        )));
    }
    let strings = strings_of(&output.data).map_err(|e| invalid(e.to_string()))?;
    if strings.len() != expected {
        return Err(invalid(format!(
            "{} outputs for {expected} inputs",
            strings.len()
        )));
    }
    Ok(strings)
}

#[async_trait]
impl Worker for KserveV2Worker {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        let body = InferRequest {
            id: None,
            inputs: vec![bytes_input(&self.input_name, inputs)],
            outputs: vec![RequestOutput {
                name: self.output_name.clone(),
            }],
            parameters: None,
        };
        let request = self.client.post(&self.infer_url).json(&body);
        let request = http::authorized(request, self.token.as_ref());
        let (status, body) = http::send(request, self.timeout).await?;
        let outputs = parse_answer(status, &body, &self.output_name, inputs.len())?;
        Ok(outputs.into_iter().map(Output::Text).collect())
    }

    async fn health(&self) -> Result<(), WorkerError> {
        http::get_ok(&self.client, &self.ready_url, self.timeout).await
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
            if let Ok(outputs) = parse_answer(status, &body, "output", expected) {
                proptest::prop_assert_eq!(outputs.len(), expected);
            }
        }
    }

    #[test]
    fn the_named_bytes_output_is_read_and_others_are_errors() {
        let answer = br#"{"model_name":"m","outputs":[
            {"name":"other","shape":[2],"datatype":"FP32","data":[1.0,2.0]},
            {"name":"hash","shape":[2,1],"datatype":"BYTES","data":[["x"],["y"]]}]}"#;
        assert_eq!(
            parse_answer(200, answer, "hash", 2).expect("read"),
            ["x", "y"]
        );
        for (name, n) in [("missing", 2), ("other", 2), ("hash", 3)] {
            let err = parse_answer(200, answer, name, n).expect_err(name);
            assert!(matches!(err, WorkerError::InvalidResponse(_)), "{err:?}");
        }
        match parse_answer(400, br#"{"error":"no model m"}"#, "hash", 1) {
            Err(WorkerError::Status { status, message }) => {
                assert_eq!((status, message.as_str()), (400, "no model m"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
