//! The fixed worker batch API: `POST /v1/batch`.
//!
//! This is batchgate's own JSON protocol; `docs/worker-api.md` documents it for implementers.

use serde::{Deserialize, Serialize};

/// Request body: the inputs of one batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The inputs, in batch order.
    pub inputs: Vec<String>,
}

/// Response body: one entry per input, in the same order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResponse {
    /// `outputs[i]` is the output for `inputs[i]`.
    pub outputs: Vec<String>,
}
