//! What the HTTP adapters share: the client, the bounds on a call, and reading error answers.

use std::time::Duration;

use batchgate_protocol::api::ErrorBody;

use crate::spec::WorkerToken;
use crate::WorkerError;

/// Longest error message kept from a worker's body, so a huge error page cannot flood logs.
pub(crate) const MAX_ERROR_CHARS: usize = 300;

/// Longest a connection attempt may take, whatever the call's timeout.
pub(crate) const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A pooled HTTP client whose every request is bounded by `timeout` (cloning is shallow).
/// With `tls`, it speaks only HTTPS, with that configuration: the CA it trusts for the worker
/// and the certificate it presents to a worker that requires one (mTLS).
pub(crate) fn client(
    timeout: Duration,
    tls: Option<rustls::ClientConfig>,
) -> Result<reqwest::Client, WorkerError> {
    batchgate_net::install_crypto_provider();
    let mut builder = reqwest::Client::builder();
    if let Some(mut tls) = tls {
        // One HTTP/1.1 connection per call in flight, as over plain HTTP.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        builder = builder.use_preconfigured_tls(tls).https_only(true);
    }
    builder
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| WorkerError::Unreachable(e.to_string()))
}

/// The `Authorization` header of a worker token.
pub(crate) fn token_header(
    token: Option<&WorkerToken>,
) -> Result<Option<reqwest::header::HeaderValue>, WorkerError> {
    token
        .map(WorkerToken::header)
        .transpose()
        .map_err(|e| WorkerError::Unreachable(e.to_string()))
}

/// `request` with the worker's token, if it has one.
pub(crate) fn authorized(
    request: reqwest::RequestBuilder,
    token: Option<&reqwest::header::HeaderValue>,
) -> reqwest::RequestBuilder {
    match token {
        Some(value) => request.header(reqwest::header::AUTHORIZATION, value.clone()),
        None => request,
    }
}

/// A failed request: timed out, or could not reach the worker.
pub(crate) fn transport_error(e: &reqwest::Error) -> WorkerError {
    if e.is_timeout() {
        WorkerError::Timeout
    } else {
        WorkerError::Unreachable(e.to_string())
    }
}

/// Sends `request` and reads the whole answer, both within `timeout` (reqwest's own timeout
/// covers the request; this one also bounds reading the body).
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<(u16, bytes::Bytes), WorkerError> {
    let call = async {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| transport_error(&e))?;
        Ok((status, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| WorkerError::Timeout)?
}

/// The error a non-2xx answer amounts to. The message is taken from the body's
/// `{"error": {"message": ...}}` (batchgate, OpenAI) or `{"error": "..."}` (KServe V2), else
/// the body itself, cut to [`MAX_ERROR_CHARS`].
pub(crate) fn status_error(status: u16, body: &[u8]) -> WorkerError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error.message)
        .or_else(|_| {
            serde_json::from_slice::<batchgate_protocol::kserve_v2::ErrorResponse>(body)
                .map(|e| e.error)
        })
        .or_else(|_| serde_json::from_slice::<MessageOnly>(body).map(|e| e.error.message))
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    WorkerError::Status {
        status,
        message: truncate(message),
    }
}

/// `{"error": {"message": ...}}` with other fields, as OpenAI-style servers answer.
#[derive(serde::Deserialize)]
struct MessageOnly {
    error: MessageField,
}

#[derive(serde::Deserialize)]
struct MessageField {
    message: String,
}

/// `s` cut to at most [`MAX_ERROR_CHARS`] characters.
pub(crate) fn truncate(mut s: String) -> String {
    if let Some((cut, _)) = s.char_indices().nth(MAX_ERROR_CHARS) {
        s.truncate(cut);
    }
    s
}

/// A health check by HTTP: `GET url` answering 2xx within `timeout`.
pub(crate) async fn get_ok(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(), WorkerError> {
    let (status, body) = send(client.get(url), timeout).await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(status_error(status, &body))
    }
}
