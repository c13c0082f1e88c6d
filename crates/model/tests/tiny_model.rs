//! The model path end to end on a tiny BERT that each test builds itself
//! ([`batchgate_model::tiny`]): a WordPiece tokenizer with a 40-token vocabulary, 2 layers of
//! width 32, random weights. It goes through
//! the same `EmbeddingModel::load(dir)` as the real model, so what holds here — shapes, unit
//! length, padding not changing results, truncation, errors — holds for any model directory.

use std::path::Path;

use batchgate_model::tiny::{tiny_config, write_tiny_model, HIDDEN, MAX_POSITIONS};
use batchgate_model::{Device, EmbeddingModel, ModelError, ModelWorker};
use batchgate_worker::{Worker, WorkerError};

fn tiny_model() -> (tempfile::TempDir, EmbeddingModel) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path()).expect("write tiny model");
    let model = EmbeddingModel::load(dir.path()).expect("load tiny model");
    (dir, model)
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Inputs of very different lengths (3 to 24 tokens), so that a batch pads most of them.
const TEXTS: &[&str] = &[
    "hello",
    "the cat sat on the mat.",
    "the dog ran fast and the cat was not good , or bad ! red sky blue sea",
    "",
    "a model is good",
    "batch gate , batch gate , batch gate , batch gate , batch gate , batch gate",
    "unknown words become unk tokens",
    "walking eating running cats dogs",
];

#[test]
fn embeddings_have_the_hidden_size_and_unit_length() {
    let (_dir, model) = tiny_model();
    assert_eq!(model.dim(), HIDDEN);
    assert_eq!(model.max_tokens(), MAX_POSITIONS);
    let embeddings = model.embed(TEXTS).expect("embed");
    assert_eq!(embeddings.len(), TEXTS.len());
    for (text, e) in TEXTS.iter().zip(&embeddings) {
        assert_eq!(e.len(), HIDDEN, "{text:?}");
        assert!((norm(e) - 1.0).abs() < 1e-5, "{text:?}: norm {}", norm(e));
    }
    // Different texts, different vectors: the output depends on the input.
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            assert!(
                max_abs_diff(&embeddings[i], &embeddings[j]) > 1e-3,
                "{:?} and {:?} embed alike",
                TEXTS[i],
                TEXTS[j]
            );
        }
    }
    assert!(model.embed::<&str>(&[]).expect("empty batch").is_empty());
}

#[test]
fn a_padded_batch_gives_the_embeddings_of_inputs_run_alone() {
    let (_dir, model) = tiny_model();
    let batch = model.embed(TEXTS).expect("batch");
    let mut worst = 0f32;
    for (text, in_batch) in TEXTS.iter().zip(&batch) {
        let alone = model.embed(&[text]).expect("alone");
        worst = worst.max(max_abs_diff(in_batch, &alone[0]));
    }
    assert!(worst < 1e-5, "padding changed an embedding by {worst}");

    // The same input twice, and in another order, in one batch: the same vectors.
    let reordered = model
        .embed(&[TEXTS[2], TEXTS[0], TEXTS[2]])
        .expect("reordered");
    assert!(max_abs_diff(&reordered[0], &batch[2]) < 1e-5);
    assert!(max_abs_diff(&reordered[1], &batch[0]) < 1e-5);
    assert_eq!(reordered[0], reordered[2]);
}

#[test]
fn long_inputs_are_cut_to_the_position_table() {
    let (_dir, model) = tiny_model();
    // 400 words: far past the 24 positions. The model sees [CLS] + 22 words + [SEP].
    let long = ["the cat sat"; 134].join(" ");
    let first_22: Vec<&str> = long.split(' ').take(MAX_POSITIONS - 2).collect();
    let embeddings = model
        .embed(&[long.as_str(), &first_22.join(" "), "a dog"])
        .expect("embed a long input");
    assert!(max_abs_diff(&embeddings[0], &embeddings[1]) < 1e-5);
}

#[tokio::test]
async fn the_worker_answers_each_input_with_its_embedding_as_json() {
    let (_dir, model) = tiny_model();
    let expected = model.embed(TEXTS).expect("embed");
    let worker = ModelWorker::new(model);
    let inputs: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    let outputs = worker.infer(&inputs).await.expect("infer");
    assert_eq!(outputs.len(), inputs.len());
    for (output, expected) in outputs.iter().zip(&expected) {
        // Lossless: the text reads back as the very same f32 values.
        let parsed: Vec<f32> = serde_json::from_str(output).expect("a JSON array of numbers");
        assert_eq!(&parsed, expected);
    }
    assert!(worker.infer(&[]).await.expect("empty").is_empty());
}

#[tokio::test]
async fn the_worker_refuses_batches_over_its_limit_with_413() {
    let (_dir, model) = tiny_model();
    let worker = ModelWorker::new(model).with_max_batch_size(4);
    let inputs = vec!["a cat".to_string(); 5];
    match worker.infer(&inputs).await {
        Err(WorkerError::Status { status, message }) => {
            assert_eq!(status, 413);
            assert_eq!(message, "batch of 5 inputs exceeds the limit of 4");
        }
        other => panic!("expected 413, got {other:?}"),
    }
    assert_eq!(worker.infer(&inputs[..4]).await.expect("4 fit").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_each_get_their_own_answers() {
    let (_dir, model) = tiny_model();
    let worker = std::sync::Arc::new(ModelWorker::new(model));
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let worker = worker.clone();
            // Call i: the texts rotated by i, so every call's answer is different.
            let inputs: Vec<String> = TEXTS
                .iter()
                .cycle()
                .skip(i)
                .take(TEXTS.len())
                .map(|t| t.to_string())
                .collect();
            tokio::spawn(async move { (inputs.clone(), worker.infer(&inputs).await) })
        })
        .collect();
    for call in calls {
        let (inputs, outputs) = call.await.expect("task");
        let outputs = outputs.expect("infer");
        for (input, output) in inputs.iter().zip(&outputs) {
            let alone = worker.model().embed(&[input]).expect("alone");
            let parsed: Vec<f32> = serde_json::from_str(output).expect("json");
            assert!(max_abs_diff(&parsed, &alone[0]) < 1e-5, "{input:?}");
        }
    }
}

fn load_error(dir: &Path) -> ModelError {
    EmbeddingModel::load(dir).expect_err("loading should fail")
}

#[test]
fn a_missing_directory_or_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = dir.path().join("no-such-model");
    let error = load_error(&nowhere);
    assert!(matches!(&error, ModelError::NoDirectory(p) if p == &nowhere));
    assert!(
        error.to_string().contains("scripts/fetch-model.sh"),
        "{error}"
    );

    // A file is not a directory either.
    std::fs::write(&nowhere, "x").expect("write");
    assert!(matches!(load_error(&nowhere), ModelError::NoDirectory(_)));

    write_tiny_model(dir.path()).expect("write tiny model");
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        std::fs::remove_file(dir.path().join(file)).expect("remove");
        let error = load_error(dir.path());
        assert!(
            matches!(&error, ModelError::MissingFile(p) if p.ends_with(file)),
            "{file}: {error}"
        );
    }
}

/// A fresh tiny model with one file replaced; the error names that file and says why.
fn error_with(file: &str, contents: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path()).expect("write tiny model");
    std::fs::write(dir.path().join(file), contents).expect("write");
    match load_error(dir.path()) {
        ModelError::BadFile { path, reason } => {
            assert!(path.ends_with(file), "{path:?}");
            reason
        }
        other => panic!("{file}: expected BadFile, got {other}"),
    }
}

#[test]
fn bad_files_are_refused_with_the_reason() {
    let reason = error_with("config.json", b"{\"hidden_size\": ");
    assert!(reason.contains("EOF"), "{reason}");

    let mut config = tiny_config();
    config["num_attention_heads"] = 5.into();
    let reason = error_with("config.json", config.to_string().as_bytes());
    assert_eq!(
        reason,
        "hidden_size 32 is not a multiple of num_attention_heads 5"
    );

    // A vocabulary the embedding table cannot hold.
    let mut config = tiny_config();
    config["vocab_size"] = 10.into();
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path()).expect("write tiny model");
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write");
    let error = load_error(dir.path()).to_string();
    assert!(
        error.contains("vocabulary of 40 tokens exceeds the model's vocab_size 10"),
        "{error}"
    );

    assert!(!error_with("tokenizer.json", b"not json").is_empty());
    let reason = error_with("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}");
    assert!(!reason.is_empty());

    // Weights of another architecture: a tensor the encoder needs is absent.
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path()).expect("write tiny model");
    let mut weights =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)
            .expect("load weights");
    weights.retain(|name, _| !name.starts_with("encoder.layer.1."));
    candle_core::safetensors::save(&weights, dir.path().join("model.safetensors"))
        .expect("save weights");
    let error = load_error(dir.path()).to_string();
    assert!(error.contains("encoder.layer.1"), "{error}");
}
