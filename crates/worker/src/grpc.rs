//! Adapter for the worker batch API over gRPC (`proto/worker.proto`, service
//! `batchgate.worker.v1.Worker`, method `Infer`), HTTP/2 without TLS. Health is the standard
//! `grpc.health.v1.Health/Check` for the service's name.

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
use crate::{Worker, WorkerError};

/// Calls a worker that serves `batchgate.worker.v1.Worker` over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcWorker {
    /// One HTTP/2 connection, made at the first call and re-made when it breaks (cloning
    /// is shallow: clones share it, and it multiplexes their calls).
    channel: Channel,
    /// Bound on one call, connect to last byte.
    timeout: Duration,
}

impl GrpcWorker {
    /// A client for the worker at `authority` (`host:port`). Nothing is connected yet: a
    /// worker that is down at start-up is found by its first call or health check.
    pub fn new(authority: &str, timeout: Duration) -> Result<Self, WorkerError> {
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| WorkerError::Unreachable(format!("bad gRPC address {authority}: {e}")))?
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .timeout(timeout)
            .tcp_nodelay(true);
        Ok(GrpcWorker {
            channel: endpoint.connect_lazy(),
            timeout,
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
    async fn infer(&self, inputs: &[String]) -> Result<Vec<String>, WorkerError> {
        let mut client = WorkerClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(InferRequest {
            inputs: inputs.to_vec(),
        });
        // Also sent as `grpc-timeout`, so the worker can give up when we have.
        request.set_timeout(self.timeout);
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
        Ok(outputs)
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
