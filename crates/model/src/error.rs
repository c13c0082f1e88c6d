//! What can go wrong loading or running the model.

use std::path::PathBuf;

/// Why the model could not be loaded, or could not embed a batch.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model directory does not exist or is not a directory.
    #[error("model directory {0} does not exist or is not a directory (make one with scripts/fetch-model.sh)")]
    NoDirectory(PathBuf),
    /// A file the model needs is not in its directory.
    #[error("model file {0} is missing (a model directory holds config.json, tokenizer.json and model.safetensors)")]
    MissingFile(PathBuf),
    /// A file is there but could not be read or understood.
    #[error("cannot load {path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The tokenizer failed on an input.
    #[error("tokenizer failed: {0}")]
    Tokenize(String),
    /// The model computed a NaN or an infinity, which no JSON output can carry.
    #[error("the model produced a non-finite value ({0})")]
    NonFinite(f32),
    /// The device the model should run on cannot be used (e.g. no CUDA GPU with `cuda`).
    #[error("cannot use the device: {0}")]
    Device(candle_core::Error),
    /// The forward pass failed (shape, device or numeric error inside candle).
    #[error("forward pass failed: {0}")]
    Forward(#[from] candle_core::Error),
}
