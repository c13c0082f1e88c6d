//! The worker batch API over gRPC, generated from `proto/worker.proto`: the messages
//! [`InferRequest`] and [`InferResponse`], a client ([`worker_client::WorkerClient`]) and a
//! server ([`worker_server::WorkerServer`]).

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("batchgate.worker.v1");

/// The service's full name: the gRPC path prefix, and the name its health is reported under
/// by the standard `grpc.health.v1.Health` service.
pub const SERVICE_NAME: &str = "batchgate.worker.v1.Worker";

/// Largest gRPC message either side accepts. tonic's default is 4 MiB, less than a full batch
/// of 64 inputs of 64 KiB; this matches the JSON API's body limit.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
