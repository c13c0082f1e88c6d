//! The real all-MiniLM-L6-v2, if it has been fetched (`scripts/fetch-model.sh DIR`, then
//! `BATCHGATE_MODEL_DIR=DIR cargo test --release -p batchgate-model --features model -- --ignored`).
//! Ignored by default: tests never download anything.

use batchgate_model::EmbeddingModel;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    // Both are unit vectors.
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
#[ignore = "needs the real model: scripts/fetch-model.sh DIR and BATCHGATE_MODEL_DIR=DIR"]
fn similar_sentences_are_close_and_unrelated_ones_are_not() {
    let dir = std::env::var("BATCHGATE_MODEL_DIR")
        .expect("set BATCHGATE_MODEL_DIR to a directory made by scripts/fetch-model.sh");
    let model = EmbeddingModel::load(&dir).expect("load the real model");
    assert_eq!(model.dim(), 384);
    assert_eq!(model.max_tokens(), 256);
    let e = model
        .embed(&[
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome.",
            "A man is riding a horse.",
        ])
        .expect("embed");
    let related = cosine(&e[0], &e[1]);
    let unrelated = cosine(&e[0], &e[2]);
    let half = cosine(&e[0], &e[3]);
    println!("related {related:.4}, same subject {half:.4}, unrelated {unrelated:.4}");
    assert!(related > 0.6, "related {related}");
    assert!(unrelated < 0.1, "unrelated {unrelated}");
    assert!(related > half && half > unrelated);
}
