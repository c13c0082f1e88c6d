//! A tiny BERT with random weights, written to a directory in the real model's format: for
//! tests (here and in the `batchgate` binary) that must run the whole model path without
//! the 90 MB real model and in well under a second. Its embeddings mean nothing; their shape,
//! unit length and independence from padding are real.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

use crate::embed::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::error::ModelError;

/// Special tokens first, at BERT's usual places relative to each other.
pub const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on", "mat",
    "ran", "fast", "hello", "world", "batch", "gate", "model", "is", "was", "good", "bad", "red",
    "blue", "sky", "sea", "and", "or", "not", "##s", "##ing", "##ed", ".", ",", "!", "?", "run",
    "walk", "eat",
];
/// Width of the tiny model, and so the length of its embeddings.
pub const HIDDEN: usize = 32;
/// Position table of the tiny model; inputs are truncated to this many tokens.
pub const MAX_POSITIONS: usize = 24;

/// The tiny model's `config.json`.
pub fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": VOCAB.len(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute"
    })
}

/// Writes into `dir` the `config.json`, `tokenizer.json` (WordPiece over [`VOCAB`]) and
/// `model.safetensors` (2 layers of width [`HIDDEN`], candle's random initialisation) of a tiny
/// BERT, loadable with [`crate::EmbeddingModel::load`]. Each call draws new weights.
pub fn write_tiny_model(dir: &Path) -> Result<(), ModelError> {
    let failed = |file: &str, reason: String| ModelError::BadFile {
        path: dir.join(file),
        reason,
    };
    let vocab_path = dir.join("vocab.txt");
    std::fs::write(&vocab_path, VOCAB.join("\n"))
        .map_err(|e| failed("vocab.txt", e.to_string()))?;
    let vocab_path = vocab_path
        .to_str()
        .ok_or_else(|| failed("vocab.txt", "path is not UTF-8".into()))?;
    let wordpiece = WordPiece::from_file(vocab_path)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| failed("vocab.txt", e.to_string()))?;
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer
        .with_normalizer(Some(BertNormalizer::default()))
        .map_err(|e| failed(TOKENIZER_FILE, e.to_string()))?
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), 3),
            ("[CLS]".into(), 2),
        )));
    tokenizer
        .save(dir.join(TOKENIZER_FILE), false)
        .map_err(|e| failed(TOKENIZER_FILE, e.to_string()))?;

    let config = tiny_config();
    std::fs::write(dir.join(CONFIG_FILE), config.to_string())
        .map_err(|e| failed(CONFIG_FILE, e.to_string()))?;
    // Loading through a VarMap creates every tensor the architecture asks for, under its real
    // name, with candle's random initialisation; saving it gives a complete safetensors file.
    let bert_config: Config =
        serde_json::from_value(config).map_err(|e| failed(CONFIG_FILE, e.to_string()))?;
    let vars = VarMap::new();
    BertModel::load(
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        &bert_config,
    )?;
    vars.save(dir.join(WEIGHTS_FILE))?;
    Ok(())
}
