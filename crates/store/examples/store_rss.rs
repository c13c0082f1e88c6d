//! Resident memory per stored result (and per dedupe entry) of the in-process stores.
//!
//! Fills a `MemoryResultStore` the way `serve` does — a pending record per task (36-character
//! UUID task id, an owner), then its result (a 64-byte output) in batches of 64 — and reports
//! how much the process's resident set grew per record, read from `/proc/self/statm`. With
//! `dedupe`, the same for dedupe entries (64-character SHA-256 hex → task id). It runs on the
//! `batchgate` binary's allocator (mimalloc).
//!
//! ```sh
//! cargo run --release -p batchgate-store --example store_rss -- 1000000 store
//! cargo run --release -p batchgate-store --example store_rss -- 1000000 dedupe
//! ```

use std::time::Duration;

use batchgate_store::memory::{MemoryDedupe, MemoryResultStore};
use batchgate_store::{Completion, Dedupe, Outcome, ResultStore};

/// The allocator of the `batchgate` binary: what a record costs depends on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm's second field is the resident page count");
    // Every Linux machine this runs on has 4 KiB pages (checked with `getconf PAGESIZE`).
    resident * 4096
}

/// A deterministic stream of random-looking 64-bit numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A UUID v4 in its 36-character text form, as the gateway makes task ids.
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    /// 64 lowercase hex characters, the size of the simulated worker's output and of a
    /// SHA-256 in hex.
    fn hex64(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next())).collect()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse().expect("the first argument is a record count"))
        .unwrap_or(1_000_000);
    let what = args.next().unwrap_or_else(|| "store".into());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ttl = Duration::from_secs(600);
    // Sized as `serve` sizes them by default (--max-results 8,000,000, and the dedupe cache's
    // 1,000,000), or with room for all records if more: the figure is the cost of holding
    // records, not of evicting them.
    let store = MemoryResultStore::new(n.max(8_000_000), ttl);
    let dedupe = MemoryDedupe::new(Duration::from_secs(300), n.max(1_000_000));
    let before = rss_bytes();
    let mut batch = Vec::with_capacity(64);
    for i in 0..n {
        let task_id = rng.uuid();
        match what.as_str() {
            "store" => {
                store
                    .create(&task_id, 1_764_000_000_000, Some("anonymous"))
                    .await
                    .expect("room for every record");
                batch.push(Completion {
                    task_id,
                    outcome: Outcome::Success(rng.hex64().into()),
                    completed_at: 1_764_000_000_210,
                    reply_to: None,
                });
                if batch.len() == 64 || i + 1 == n {
                    store
                        .complete(std::mem::take(&mut batch))
                        .await
                        .expect("complete");
                }
            }
            "dedupe" => {
                let hash = rng.hex64();
                let claimed = dedupe.claim(&hash, &task_id).await.expect("claim");
                assert!(claimed.is_none(), "inputs are distinct");
            }
            other => panic!("unknown mode {other:?}: `store` or `dedupe`"),
        }
    }
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    let held = match what.as_str() {
        "store" => store.count().await.expect("count"),
        _ => n,
    };
    println!(
        "{what}: {held} records, RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per record, {:.1} MiB per 100,000",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        grown as f64 / n as f64,
        grown as f64 / n as f64 * 100_000.0 / 1048576.0
    );
}
