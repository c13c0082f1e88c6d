//! Adapter for batchgate's own JSON batch API: `POST {base}/v1/batch`.

use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::worker_api::{BatchRequest, BatchResponse};

use crate::http::{self, status_error};
use crate::spec::WorkerToken;
use crate::{Output, Worker, WorkerError};

#[cfg(test)]
use crate::http::MAX_ERROR_CHARS;

/// Default time one batch call may take before it counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls a worker that speaks the JSON batch API over HTTP.
#[derive(Debug, Clone)]
pub struct HttpJsonWorker {
    /// Pooled HTTP client (cloning is shallow).
    client: reqwest::Client,
    /// `{base}/v1/batch`, computed once.
    endpoint: String,
    /// `{base}/healthz`, the health check.
    health: String,
    /// Bound on one call, connect to last byte.
    timeout: Duration,
    /// `Authorization` of every inference call, for a worker that requires a token.
    token: Option<reqwest::header::HeaderValue>,
}

impl HttpJsonWorker {
    /// A client for the worker at `base_url` (e.g. `http://127.0.0.1:9000`).
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, WorkerError> {
        Self::with_tls(base_url, timeout, None)
    }

    /// A client for the worker at `base_url`; with `tls`, an `https://` URL is reached with
    /// that configuration (the CA to trust, and a client certificate for workers that
    /// require one), and only over TLS.
    pub fn with_tls(
        base_url: &str,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, WorkerError> {
        let base = base_url.trim_end_matches('/');
        Ok(HttpJsonWorker {
            client: http::client(timeout, tls)?,
            endpoint: format!("{base}/v1/batch"),
            health: format!("{base}/healthz"),
            timeout,
            token: None,
        })
    }

    /// Sends `token` (`Authorization: Bearer …`) with every inference call.
    pub fn with_token(mut self, token: Option<&WorkerToken>) -> Result<Self, WorkerError> {
        self.token = http::token_header(token)?;
        Ok(self)
    }

    /// The URL batches are posted to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Reads a worker's answer: `outputs` for a 2xx with exactly `expected` of them, else the
/// error it amounts to. Total over any status and any bytes (fuzzed in the tests).
pub fn parse_answer(status: u16, body: &[u8], expected: usize) -> Result<Vec<String>, WorkerError> {
    if !(200..300).contains(&status) {
        return Err(status_error(status, body));
    }
    let parsed: BatchResponse =
        serde_json::from_slice(body).map_err(|e| WorkerError::InvalidResponse(e.to_string()))?;
    if parsed.outputs.len() != expected {
        return Err(WorkerError::InvalidResponse(format!(
            "{} outputs for {expected} inputs",
            parsed.outputs.len()
        )));
    }
    Ok(parsed.outputs)
}

#[async_trait]
impl Worker for HttpJsonWorker {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        let request = self.client.post(&self.endpoint).json(&BatchRequest {
            inputs: inputs.to_vec(),
        });
        let request = http::authorized(request, self.token.as_ref());
        let (status, body) = http::send(request, self.timeout).await?;
        let outputs = parse_answer(status, &body, inputs.len())?;
        Ok(outputs.into_iter().map(Output::Text).collect())
    }

    async fn health(&self) -> Result<(), WorkerError> {
        http::get_ok(&self.client, &self.health, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};

    use super::*;

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn round_trip_keeps_order() {
        let url = serve(Router::new().route(
            "/v1/batch",
            post(|Json(req): Json<BatchRequest>| async move {
                Json(BatchResponse {
                    outputs: req.inputs.iter().map(|i| i.to_uppercase()).collect(),
                })
            }),
        ))
        .await;
        let w = HttpJsonWorker::new(&url, DEFAULT_TIMEOUT).expect("client");
        let out = w
            .infer(&["a".into(), "b".into()])
            .await
            .expect("infer works");
        assert_eq!(out, vec!["A", "B"]);
    }

    #[tokio::test]
    async fn wrong_output_count_and_error_status_are_errors() {
        let url = serve(
            Router::new()
                .route(
                    "/v1/batch",
                    post(|| async {
                        Json(BatchResponse {
                            outputs: vec!["only one".into()],
                        })
                    }),
                )
                .route(
                    "/bad/v1/batch",
                    post(|| async {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            r#"{"error":{"code":"busy","message":"all slots busy"}}"#,
                        )
                    }),
                ),
        )
        .await;
        let w = HttpJsonWorker::new(&url, DEFAULT_TIMEOUT).expect("client");
        let err = w
            .infer(&["a".into(), "b".into()])
            .await
            .expect_err("mismatch");
        assert!(matches!(err, WorkerError::InvalidResponse(_)), "{err:?}");
        let w = HttpJsonWorker::new(&format!("{url}/bad"), DEFAULT_TIMEOUT).expect("client");
        let err = w.infer(&["a".into()]).await.expect_err("503");
        match err {
            WorkerError::Status { status, message } => {
                assert_eq!(status, 503);
                assert_eq!(message, "all slots busy");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any status and any bytes: an answer or an error, never a panic; error text bounded.
        #[test]
        fn any_answer_parses_or_errs(status in 100u16..600, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), expected in 0usize..70) {
            match parse_answer(status, &body, expected) {
                Ok(outputs) => proptest::prop_assert_eq!(outputs.len(), expected),
                Err(WorkerError::Status { message, .. }) => {
                    proptest::prop_assert!(message.chars().count() <= MAX_ERROR_CHARS);
                }
                Err(_) => {}
            }
        }

        /// Well-formed answers: accepted exactly when the count matches.
        #[test]
        fn counts_must_match(outputs in proptest::collection::vec(".{0,20}", 0..70), expected in 0usize..70) {
            let body = serde_json::to_vec(&BatchResponse { outputs: outputs.clone() }).expect("json");
            let parsed = parse_answer(200, &body, expected);
            proptest::prop_assert_eq!(parsed.is_ok(), outputs.len() == expected);
        }
    }

    #[tokio::test]
    async fn unreachable_worker_fails_fast() {
        // Bind then drop, so the port is very likely closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let w = HttpJsonWorker::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2))
            .expect("client");
        let err = w.infer(&["a".into()]).await.expect_err("closed port");
        assert!(matches!(err, WorkerError::Unreachable(_)), "{err:?}");
    }
}
