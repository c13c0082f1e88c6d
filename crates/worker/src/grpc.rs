//! Adapter for the worker batch API over gRPC (`proto/worker.proto`, service
//! `batchgate.worker.v1.Worker`, method `Infer`), HTTP/2 without TLS (`grpc://`) or over TLS
//! (`grpcs://`, with the same CA and client certificate as `https://` workers). Health is the
//! standard `grpc.health.v1.Health/Check` for the service's name.

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::worker_grpc::{
    worker_client::WorkerClient, InferRequest, MAX_MESSAGE_BYTES, SERVICE_NAME,
};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::http::{truncate, MAX_CONNECT_TIMEOUT};
use crate::spec::WorkerToken;
use crate::{Output, Worker, WorkerError};

/// Calls a worker that serves `batchgate.worker.v1.Worker` over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcWorker {
    /// One HTTP/2 connection, made at the first call and re-made when it breaks (cloning
    /// is shallow: clones share it, and it multiplexes their calls).
    channel: Channel,
    /// Bound on one call, connect to last byte.
    timeout: Duration,
    /// `authorization` metadata of every inference call, for a worker that requires a token.
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl GrpcWorker {
    /// A client for the worker at `authority` (`host:port`). Nothing is connected yet: a
    /// worker that is down at start-up is found by its first call or health check.
    pub fn new(authority: &str, timeout: Duration) -> Result<Self, WorkerError> {
        Self::with_tls(authority, timeout, None)
    }

    /// [`GrpcWorker::new`]; with `tls`, over TLS with that configuration (the CA to trust,
    /// and a client certificate for workers that require one), HTTP/2 chosen by ALPN.
    pub fn with_tls(
        authority: &str,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, WorkerError> {
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| WorkerError::Unreachable(format!("bad gRPC address {authority}: {e}")))?
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .timeout(timeout)
            .tcp_nodelay(true);
        let channel = match tls {
            None => endpoint.connect_lazy(),
            Some(mut tls) => {
                tls.alpn_protocols = vec![b"h2".to_vec()];
                let connector = TlsConnector {
                    tls: tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)),
                    authority: authority.to_owned(),
                };
                endpoint.connect_with_connector_lazy(connector)
            }
        };
        Ok(GrpcWorker {
            channel,
            timeout,
            token: None,
        })
    }

    /// Sends `token` (`authorization: Bearer …`) with every inference call.
    pub fn with_token(mut self, token: Option<&WorkerToken>) -> Result<Self, WorkerError> {
        self.token = token
            .map(|t| {
                let mut value = t
                    .bearer()
                    .parse::<tonic::metadata::MetadataValue<_>>()
                    .map_err(|_| {
                        WorkerError::Unreachable(
                            "the worker token cannot be sent in gRPC metadata".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Ok::<_, WorkerError>(value)
            })
            .transpose()?;
        Ok(self)
    }
}

/// Opens the TCP connection and the TLS session to a `grpcs://` worker.
#[derive(Clone)]
struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
    /// `host:port`: where to connect, and the host the certificate must name.
    authority: String,
}

impl tower::Service<tonic::transport::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::transport::Uri) -> Self::Future {
        let (tls, authority) = (self.tls.clone(), self.authority.clone());
        Box::pin(async move {
            let host = authority
                .rsplit_once(':')
                .map_or(authority.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// The error a failed gRPC call amounts to. A status the worker sent becomes
/// [`WorkerError::Status`] with the HTTP status of the same meaning (the usual gRPC-to-HTTP
/// table: `RESOURCE_EXHAUSTED` is 429, `UNAVAILABLE` 503, so overload and retries behave as
/// with the HTTP adapters); a status made on our side of the wire (it carries the transport
/// error as its source) means the worker could not be reached.
pub fn status_error(status: &tonic::Status) -> WorkerError {
    let code = status.code();
    if code == Code::DeadlineExceeded {
        return WorkerError::Timeout;
    }
    if let Some(source) = status.source() {
        return WorkerError::Unreachable(format!("{}: {source}", status.message()));
    }
    WorkerError::Status {
        status: http_equivalent(code),
        message: truncate(status.message().to_owned()),
    }
}

/// The HTTP status that means what a gRPC code means.
pub fn http_equivalent(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

#[async_trait]
impl Worker for GrpcWorker {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        let mut client = WorkerClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(InferRequest {
            inputs: inputs.to_vec(),
        });
        // Also sent as `grpc-timeout`, so the worker can give up when we have.
        request.set_timeout(self.timeout);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        let call = client.infer(request);
        let response = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| WorkerError::Timeout)?
            .map_err(|s| status_error(&s))?;
        let outputs = response.into_inner().outputs;
        if outputs.len() != inputs.len() {
            return Err(WorkerError::InvalidResponse(format!(
                "{} outputs for {} inputs",
                outputs.len(),
                inputs.len()
            )));
        }
        Ok(outputs.into_iter().map(Output::Text).collect())
    }

    async fn health(&self) -> Result<(), WorkerError> {
        let mut client = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: SERVICE_NAME.to_owned(),
        };
        let answer = tokio::time::timeout(self.timeout, client.check(request))
            .await
            .map_err(|_| WorkerError::Timeout)?
            .map_err(|s| status_error(&s))?;
        match answer.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(WorkerError::Status {
                status: 503,
                message: format!("health check answered {}", other.as_str_name()),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
