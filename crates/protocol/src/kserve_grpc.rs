//! The KServe V2 / Open Inference Protocol over gRPC, generated from
//! `proto/grpc_predict_v2.proto` (package `inference`): the messages, a client
//! ([`grpc_inference_service_client::GrpcInferenceServiceClient`]) and a server
//! ([`grpc_inference_service_server::GrpcInferenceServiceServer`]). The raw tensor forms the
//! protocol's clients send and read are in [`crate::front::kserve_raw`].

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("inference");

/// The service's full name: the gRPC path prefix of its methods.
pub const SERVICE_NAME: &str = "inference.GRPCInferenceService";
