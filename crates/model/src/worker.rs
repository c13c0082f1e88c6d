//! [`ModelWorker`]: the embedding model as a [`Worker`], and the text form of its outputs.

use std::sync::Arc;

use async_trait::async_trait;
use batchgate_worker::{Output, Worker, WorkerError};
use tokio::sync::Semaphore;

use crate::embed::EmbeddingModel;
use crate::error::ModelError;

/// The fixed batch API's limit, and so the default of [`ModelWorker`].
pub const DEFAULT_MAX_BATCH_SIZE: usize = 64;

/// Runs an [`EmbeddingModel`] for the batcher: one call, one padded forward pass.
///
/// An output is the input's embedding, a vector of numbers ([`Output::Vector`]), which
/// `/v1/inference` shows as a JSON array, e.g. `[0.0123,-0.0456,…]` ([`format_embedding`]).
///
/// Errors, as the batcher reads them: more than `max_batch_size` inputs → status 413 (the batch
/// API's verdict, not retried); a tokenizer or forward-pass failure → 500, which the batcher
/// retries and then bisects so that an input the model cannot take fails alone.
pub struct ModelWorker {
    /// Shared with the blocking task that runs each call.
    model: Arc<EmbeddingModel>,
    /// Most inputs per call; bigger calls are refused.
    max_batch_size: usize,
    /// Forward passes that may run at once (1 by default). On the CPU candle already spreads
    /// one pass over every core: two at once only contend for them and double the activation
    /// memory. Further calls wait here, after their batch is formed, so the next batch is
    /// ready the moment the current one ends.
    passes: Semaphore,
}

impl std::fmt::Debug for ModelWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelWorker")
            .field("model", &self.model)
            .field("max_batch_size", &self.max_batch_size)
            .finish_non_exhaustive()
    }
}

impl ModelWorker {
    /// A worker running one forward pass at a time, on batches of up to 64.
    pub fn new(model: EmbeddingModel) -> Self {
        ModelWorker {
            model: Arc::new(model),
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            passes: Semaphore::new(1),
        }
    }

    /// Sets the most inputs per call (at least 1).
    pub fn with_max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.max_batch_size = max_batch_size.max(1);
        self
    }

    /// Sets how many forward passes may run at once (at least 1); more than one pays off only
    /// with more than one device's worth of compute, e.g. a large GPU.
    pub fn with_concurrent_passes(mut self, passes: usize) -> Self {
        self.passes = Semaphore::new(passes.max(1));
        self
    }

    /// The model.
    pub fn model(&self) -> &EmbeddingModel {
        &self.model
    }

    /// Most inputs per call.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }
}

#[async_trait]
impl Worker for ModelWorker {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        if inputs.len() > self.max_batch_size {
            return Err(WorkerError::Status {
                status: 413,
                message: format!(
                    "batch of {} inputs exceeds the limit of {}",
                    inputs.len(),
                    self.max_batch_size
                ),
            });
        }
        let _pass = self
            .passes
            .acquire()
            .await
            .expect("the semaphore is never closed. This is a bug.");
        let model = Arc::clone(&self.model);
        let inputs = inputs.to_vec();
        let outputs = tokio::task::spawn_blocking(move || {
            let embeddings = model.embed(&inputs)?;
            // The vectors as they are (typed outputs), once checked to be numbers.
            embeddings
                .into_iter()
                .map(|e| match e.iter().find(|x| !x.is_finite()) {
                    Some(&bad) => Err(ModelError::NonFinite(bad)),
                    None => Ok(Output::Vector(e)),
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| model_failed(&format!("forward pass panicked: {e}")))?;
        outputs.map_err(|e| model_failed(&e.to_string()))
    }
}

fn model_failed(message: &str) -> WorkerError {
    tracing::warn!(error = message, "model call failed");
    WorkerError::Status {
        status: 500,
        message: message.to_owned(),
    }
}

/// An embedding as its output text: a JSON array of numbers, each the f32 value itself written
/// with the fewest decimal digits that parse back to the same f32 (serde_json's shortest
/// round-trip form). Lossless: reading the array back as f32 gives the computed vector bit for
/// bit. About 10 bytes a number, 4 KB for a 384-number embedding. A non-finite value (which
/// JSON cannot hold) is an error rather than a `null`.
pub fn format_embedding(embedding: &[f32]) -> Result<String, ModelError> {
    if let Some(&bad) = embedding.iter().find(|x| !x.is_finite()) {
        return Err(ModelError::NonFinite(bad));
    }
    Ok(serde_json::to_string(embedding)
        .expect("a slice of finite f32 always serialises. This is a bug."))
}
