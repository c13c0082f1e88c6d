//! In-process implementations for the embedded deployment: everything lives in one process and
//! dies with it.

mod dedupe;
mod keys;
mod owners;
mod store;

pub use dedupe::MemoryDedupe;
pub use keys::TaskId;
pub use store::MemoryResultStore;

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

/// Spreads task ids over `n` shards.
fn bucket(hasher: &RandomState, key: &str, n: usize) -> usize {
    // The modulo of a 64-bit hash by a small n: the truncation is the point.
    (hasher.hash_one(key) % n as u64) as usize
}
