//! The real all-MiniLM-L6-v2, fetched beforehand (`scripts/fetch-model.sh DIR`, then
//! `BATCHGATE_TEST_MODEL_DIR=DIR cargo test --release -p batchgate-model --features model
//! --test real_model`). Tests never download anything: without the directory these tests fail;
//! `scripts/test-model.sh` runs them only when it is given one.

use batchgate_model::EmbeddingModel;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    // Both are unit vectors.
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn real_model() -> EmbeddingModel {
    let dir = std::env::var("BATCHGATE_TEST_MODEL_DIR")
        .expect("set BATCHGATE_TEST_MODEL_DIR to a directory made by scripts/fetch-model.sh");
    EmbeddingModel::load(&dir).expect("load the real model")
}

/// The similarity matrix that sentence-transformers' documentation prints for this model
/// (sbert.net, "Semantic Textual Similarity", `SentenceTransformer("all-MiniLM-L6-v2")`), to
/// the 4 decimals it shows. Matching it checks tokenizer, encoder, mask, pooling and
/// normalisation together against the PyTorch reference.
#[test]
fn reproduces_the_published_similarities() {
    let model = real_model();
    assert_eq!(model.dim(), 384);
    assert_eq!(model.max_tokens(), 256);
    let left = [
        "The new movie is awesome",
        "The cat sits outside",
        "A man is playing guitar",
    ];
    let right = [
        "The dog plays in the garden",
        "The new movie is so great",
        "A woman watches TV",
    ];
    let published = [
        [0.0543, 0.8939, -0.0502],
        [0.2838, -0.0029, 0.1310],
        [0.2277, -0.0136, -0.0327],
    ];
    // One batch of six, padded together, as the worker runs them.
    let all: Vec<&str> = left.iter().chain(&right).copied().collect();
    let e = model.embed(&all).expect("embed");
    let mut worst = 0f32;
    for (i, row) in published.iter().enumerate() {
        for (j, &expected) in row.iter().enumerate() {
            let got = cosine(&e[i], &e[3 + j]);
            println!(
                "{:<26} {:<28} {got:.4} (published {expected:.4})",
                left[i], right[j]
            );
            worst = worst.max((got - expected).abs());
        }
    }
    // Half a unit of the 4th decimal from rounding, plus f32 noise.
    assert!(worst < 1e-3, "off the published similarities by {worst}");
}
