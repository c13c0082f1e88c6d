//! The wire types of the front doors batchgate serves besides its own API, in the forms
//! existing clients already speak: OpenAI-compatible embeddings ([`openai`]) and the KServe
//! V2 / Open Inference Protocol over HTTP ([`kserve`]) and its raw tensor data over gRPC
//! ([`kserve_raw`]; the gRPC messages are [`crate::kserve_grpc`]).
//!
//! These are batchgate's *server* side of those protocols; [`crate::openai`] and
//! [`crate::kserve_v2`] are its client side, to workers that speak them.

pub mod kserve;
pub mod kserve_raw;
pub mod openai;
