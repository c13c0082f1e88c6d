//! The model's own throughput, measured directly through [`ModelWorker::infer`] (the call the
//! batcher makes: tokenize, forward pass, pooling, JSON outputs), without batchgate around it.
//!
//! ```sh
//! scripts/fetch-model.sh /tmp/minilm
//! cargo run --release -p batchgate-model --features model --example model_bench -- \
//!     --model-dir /tmp/minilm --batch 64 --batch 1 --input-bytes 64 --seconds 10 --runs 3
//! ```
//!
//! Inputs are made like `batchgate bench` makes them (`--input-bytes N`: a 16-digit hex
//! sequence number, then random `[A-Za-z0-9_-]`), so that the rate here and the rate through
//! batchgate are for the same work; `--sentences` uses short English sentences instead. Every
//! call gets inputs it has not seen. Prints one line per run, then the median and the spread
//! (min–max) per batch size.

use std::time::{Duration, Instant};

/// The allocator of the `batchgate` binary, so that the rate here is the one the binary can
/// reach: candle allocates a fresh buffer per operation, and glibc's malloc maps and unmaps
/// the large ones each time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context};
use batchgate_model::{EmbeddingModel, ModelWorker};
use batchgate_worker::Worker;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const WORDS: &[&str] = &[
    "the", "a", "man", "woman", "child", "dog", "cat", "is", "was", "eating", "riding", "playing",
    "reading", "food", "bread", "horse", "guitar", "book", "in", "on", "the", "park", "street",
    "kitchen", "quickly", "slowly", "today", "new", "old", "movie", "awesome", "boring",
];

struct Options {
    model_dir: String,
    batches: Vec<usize>,
    input_bytes: usize,
    sentences: bool,
    seconds: f64,
    runs: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        model_dir: String::new(),
        batches: Vec::new(),
        input_bytes: 64,
        sentences: false,
        seconds: 10.0,
        runs: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--sentences" {
            o.sentences = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model-dir" => o.model_dir = value,
            "--batch" => o.batches.push(value.parse().context("--batch")?),
            "--input-bytes" => o.input_bytes = value.parse().context("--input-bytes")?,
            "--seconds" => o.seconds = value.parse().context("--seconds")?,
            "--runs" => o.runs = value.parse().context("--runs")?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if o.model_dir.is_empty() {
        bail!("--model-dir DIR is required (make one with scripts/fetch-model.sh DIR)");
    }
    if o.batches.is_empty() {
        o.batches = vec![64, 1];
    }
    if o.batches.iter().any(|&b| b == 0 || b > 64) || o.input_bytes < 16 || o.runs == 0 {
        bail!("--batch must be in 1..=64, --input-bytes at least 16, --runs at least 1");
    }
    Ok(o)
}

/// Fresh inputs, distinct by their sequence number.
struct Inputs {
    rng: StdRng,
    seq: u64,
    bytes: usize,
    sentences: bool,
}

impl Inputs {
    fn next(&mut self) -> String {
        self.seq += 1;
        if self.sentences {
            let n = self.rng.random_range(6..16);
            let words: Vec<&str> = (0..n)
                .map(|_| WORDS[self.rng.random_range(0..WORDS.len())])
                .collect();
            return format!("{} number {}.", words.join(" "), self.seq);
        }
        let mut s = format!("{:016x}", self.seq);
        s.extend((16..self.bytes).map(|_| char::from(ALPHABET[self.rng.random_range(0..64)])));
        s
    }

    fn batch(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Items per second over one run of about `seconds`.
async fn run(
    worker: &ModelWorker,
    inputs: &mut Inputs,
    batch: usize,
    seconds: f64,
) -> anyhow::Result<(f64, Duration)> {
    let budget = Duration::from_secs_f64(seconds);
    let (mut items, mut calls) = (0usize, 0u32);
    let start = Instant::now();
    while start.elapsed() < budget {
        let call = inputs.batch(batch);
        let outputs = worker.infer(&call).await?;
        if outputs.len() != call.len() {
            bail!("{} outputs for {} inputs", outputs.len(), call.len());
        }
        items += outputs.len();
        calls += 1;
    }
    let elapsed = start.elapsed();
    Ok((items as f64 / elapsed.as_secs_f64(), elapsed / calls))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    let started = Instant::now();
    let model = EmbeddingModel::load(&o.model_dir)?;
    println!(
        "loaded {} in {:.2?}: dim {}, max_tokens {}, device {:?}, {} threads",
        o.model_dir,
        started.elapsed(),
        model.dim(),
        model.max_tokens(),
        model.device(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let worker = ModelWorker::new(model);
    let mut inputs = Inputs {
        rng: StdRng::seed_from_u64(7),
        seq: 0,
        bytes: o.input_bytes,
        sentences: o.sentences,
    };
    let sample = inputs.next();
    println!(
        "inputs: {}, e.g. {:?}… = {} tokens",
        if o.sentences {
            "short English sentences".to_string()
        } else {
            format!(
                "{} random ASCII bytes (as batchgate bench makes them)",
                o.input_bytes
            )
        },
        sample.chars().take(40).collect::<String>(),
        worker.model().count_tokens(&sample)?,
    );
    for &batch in &o.batches {
        // Warm-up: first calls allocate and fault in the weights.
        worker.infer(&inputs.batch(batch)).await?;
        let mut rates = Vec::new();
        for run_no in 1..=o.runs {
            let (rate, per_call) = run(&worker, &mut inputs, batch, o.seconds).await?;
            println!("batch {batch:2} run {run_no}: {rate:8.1} items/s, {per_call:.2?} per call");
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "batch {batch:2}: median {:.1} items/s, spread {:.1}–{:.1} over {} runs of {} s",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
            o.runs,
            o.seconds
        );
    }
    Ok(())
}
