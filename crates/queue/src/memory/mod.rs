//! In-process implementations for the embedded deployment: everything lives in one process and
//! dies with it, so acknowledgements have nothing to protect against and are no-ops.

mod build;
mod dead_letters;
mod queue;

pub use build::{build, MemoryConfig, DEFAULT_PARTITIONS, MEMORY_DEDUPE_CAPACITY};
pub use dead_letters::MemoryDeadLetters;
pub use queue::MemoryQueue;

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

/// Spreads task ids over `n` partitions.
fn bucket(hasher: &RandomState, key: &str, n: usize) -> usize {
    // The modulo of a 64-bit hash by a small n: the truncation is the point.
    (hasher.hash_one(key) % n as u64) as usize
}
