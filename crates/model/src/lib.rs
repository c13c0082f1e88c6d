//! A real model behind [`batchgate_worker::Worker`]: sentence embeddings from a BERT-family
//! encoder (all-MiniLM-L6-v2 and its kin), run with candle, on the CPU unless built with `cuda`.
//!
//! An input's output is its embedding: the encoder's last hidden states averaged over the
//! input's real tokens (mean pooling, padding excluded by the attention mask), then scaled to
//! unit length (L2). That is what sentence-transformers computes for this model family.
//!
//! The model is loaded from a local directory, never downloaded: `config.json`,
//! `tokenizer.json` and `model.safetensors` (`scripts/fetch-model.sh` makes one). A batch of up
//! to 64 inputs is padded to its longest input and run as one forward pass.
//!
//! Everything here sits behind the `model` cargo feature, so that a default build of the
//! workspace never compiles candle. With the feature off this crate is empty.
//!
//! Layout:
//! - [`error`]: [`ModelError`], what can go wrong loading or running the model.
//! - [`embed`]: [`EmbeddingModel`], the model directory → tokenizer + encoder, and
//!   [`EmbeddingModel::embed`], a batch of texts → unit vectors.
//! - [`tiny`]: a tiny random BERT in the same format, for tests that run the model path.
//! - [`worker`]: [`ModelWorker`], the [`batchgate_worker::Worker`] that runs it off the async
//!   runtime, and [`worker::format_embedding`], the output's text form.

#[cfg(feature = "model")]
pub mod embed;
#[cfg(feature = "model")]
pub mod error;
#[cfg(feature = "model")]
pub mod tiny;
#[cfg(feature = "model")]
pub mod worker;

#[cfg(feature = "model")]
pub use candle_core::Device;
#[cfg(feature = "model")]
pub use embed::{check_dir, EmbeddingModel, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
#[cfg(feature = "model")]
pub use error::ModelError;
#[cfg(feature = "model")]
pub use worker::{ModelWorker, DEFAULT_MAX_BATCH_SIZE};
