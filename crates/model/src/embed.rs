//! The model directory → tokenizer + encoder; a batch of texts → unit vectors.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::ModelError;

/// The encoder's hyper-parameters (Hugging Face `BertConfig` JSON).
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer (Hugging Face `tokenizers` JSON, e.g. WordPiece).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The weights, f32, with Hugging Face's BERT tensor names (`embeddings.*`, `encoder.layer.N.*`,
/// optionally under `bert.`).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Optional: sentence-transformers' settings, whose `max_seq_length` (256 for all-MiniLM-L6-v2)
/// is the number of tokens the model was trained to look at.
pub const SENTENCE_CONFIG_FILE: &str = "sentence_bert_config.json";

/// A sentence-embedding model: tokenizer and BERT encoder, ready to run.
///
/// Immutable once loaded: share it (`Arc`) between threads rather than loading it twice.
pub struct EmbeddingModel {
    /// The encoder.
    bert: BertModel,
    /// The model's tokenizer, set to pad a batch to its longest input (not to a fixed length,
    /// which the shipped all-MiniLM-L6-v2 tokenizer asks for and which costs ~10× on short
    /// texts) and to truncate at `max_tokens`.
    tokenizer: Tokenizer,
    /// Where the weights live and the forward pass runs.
    device: Device,
    /// Length of an embedding: the encoder's hidden size.
    dim: usize,
    /// Most tokens an input is cut to, special tokens included. Inputs reach 64 KiB; without a
    /// cut, one long input would make the whole batch that long (and past the position table).
    max_tokens: usize,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("device", &self.device)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

/// The device [`EmbeddingModel::load`] uses: the first CUDA GPU when built with the `cuda`
/// feature, else the CPU.
pub fn default_device() -> Result<Device, ModelError> {
    #[cfg(feature = "cuda")]
    {
        return Device::new_cuda(0).map_err(ModelError::Device);
    }
    #[allow(unreachable_code)]
    Ok(Device::Cpu)
}

impl EmbeddingModel {
    /// Loads the model in `dir` onto [`default_device`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::load_on(dir, &default_device()?)
    }

    /// Loads the model in `dir` (`config.json`, `tokenizer.json`, `model.safetensors`) onto
    /// `device`. Reads only local files.
    pub fn load_on(dir: impl AsRef<Path>, device: &Device) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        check_dir(dir)?;
        let config_path = required(dir, CONFIG_FILE)?;
        let tokenizer_path = required(dir, TOKENIZER_FILE)?;
        let weights_path = required(dir, WEIGHTS_FILE)?;

        let config: Config = read_json(&config_path)?;
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(bad(
                &config_path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| bad(&tokenizer_path, e.to_string()))?;
        // A token id past the embedding table would fail every batch it is in: refuse the pair
        // now rather than at the first unlucky input.
        let tokenizer_vocab = tokenizer.get_vocab_size(true);
        if tokenizer_vocab > config.vocab_size {
            return Err(bad(
                &tokenizer_path,
                format!(
                    "vocabulary of {tokenizer_vocab} tokens exceeds the model's vocab_size {}",
                    config.vocab_size
                ),
            ));
        }
        let max_tokens = max_tokens(dir, &tokenizer, &config)?;
        let padding = PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_to_multiple_of: None,
            ..tokenizer.get_padding().cloned().unwrap_or_default()
        };
        let truncation = TruncationParams {
            max_length: max_tokens,
            ..tokenizer.get_truncation().cloned().unwrap_or_default()
        };
        tokenizer
            .with_padding(Some(padding))
            .with_truncation(Some(truncation))
            .map_err(|e| bad(&tokenizer_path, e.to_string()))?;

        // Read into memory rather than mmap: mmap needs `unsafe`, which the workspace forbids,
        // and the file is read once at start (90 MB for all-MiniLM-L6-v2).
        let weights =
            std::fs::read(&weights_path).map_err(|e| bad(&weights_path, e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device)
            .map_err(|e| bad(&weights_path, e.to_string()))?;
        let bert = BertModel::load(vb, &config).map_err(|e| bad(&weights_path, e.to_string()))?;

        Ok(EmbeddingModel {
            bert,
            tokenizer,
            device: device.clone(),
            dim: config.hidden_size,
            max_tokens,
        })
    }

    /// Length of every embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Most tokens of an input that the model sees; the rest is cut off.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Where the model runs.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How many tokens the model sees of `input`, special tokens included (at most
    /// [`Self::max_tokens`]).
    pub fn count_tokens(&self, input: &str) -> Result<usize, ModelError> {
        let encoding = self
            .tokenizer
            .encode(input, true)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        Ok(encoding.len())
    }

    /// Embeds `inputs` as one padded batch: one unit-length vector of [`Self::dim`] numbers per
    /// input, in order. Blocking and CPU-heavy: call it off the async runtime.
    pub fn embed<S: AsRef<str> + Sync>(&self, inputs: &[S]) -> Result<Vec<Vec<f32>>, ModelError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let texts: Vec<&str> = inputs.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let len = encodings.first().map_or(0, |e| e.len());
        let mut ids = Vec::with_capacity(encodings.len() * len);
        let mut mask = Vec::with_capacity(encodings.len() * len);
        for encoding in &encodings {
            if encoding.len() != len {
                return Err(ModelError::Tokenize(format!(
                    "padding gave inputs of {} and {len} tokens",
                    encoding.len()
                )));
            }
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let shape = (encodings.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let type_ids = ids.zeros_like()?;
        // (batch, tokens, dim); padded positions are masked out of attention.
        let hidden = self.bert.forward(&ids, &type_ids, Some(&mask))?;
        Ok(pool_and_normalize(&hidden, &mask)?.to_vec2::<f32>()?)
    }
}

/// Mean over each input's real tokens (the mask excludes padding), then L2 normalisation, as
/// sentence-transformers' `Pooling(mean)` + `Normalize` modules do.
fn pool_and_normalize(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?; // (batch, tokens, 1)
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (batch, dim)
                                                       // At least one token: a tokenizer without special tokens gives an empty input none.
    let counts = mask.sum(1)?.clamp(1f32, f32::MAX)?; // (batch, 1)
    let mean = summed.broadcast_div(&counts)?;
    // torch.nn.functional.normalize's eps: a zero vector stays zero instead of becoming NaN.
    let norms = mean
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    mean.broadcast_div(&norms)
}

/// Checks that `dir` holds the files of a model, without reading them: for a configuration
/// check before a server binds its port. [`EmbeddingModel::load`] does it too.
pub fn check_dir(dir: &Path) -> Result<(), ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::NoDirectory(dir.to_path_buf()));
    }
    for name in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        required(dir, name)?;
    }
    Ok(())
}

/// The path of a file the model cannot do without.
fn required(dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::MissingFile(path))
    }
}

fn bad(path: &Path, reason: String) -> ModelError {
    ModelError::BadFile {
        path: path.to_path_buf(),
        reason,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(path, e.to_string()))
}

/// sentence-transformers' `max_seq_length` if the directory has one, else the tokenizer's own
/// truncation, else the position table's size; never more than the position table.
fn max_tokens(dir: &Path, tokenizer: &Tokenizer, config: &Config) -> Result<usize, ModelError> {
    #[derive(serde::Deserialize)]
    struct SentenceConfig {
        max_seq_length: Option<usize>,
    }
    let path = dir.join(SENTENCE_CONFIG_FILE);
    let sentence = if path.is_file() {
        read_json::<SentenceConfig>(&path)?.max_seq_length
    } else {
        None
    };
    let max = sentence
        .or_else(|| tokenizer.get_truncation().map(|t| t.max_length))
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings);
    if max < 2 {
        return Err(bad(
            &path,
            format!("max_seq_length {max} leaves no room for text"),
        ));
    }
    Ok(max)
}
