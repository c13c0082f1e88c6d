//! Request collapsing: identical inputs of one batch go to the worker once.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

/// The distinct inputs, in first-seen order, and for each original input the index of its
/// distinct copy. A batch whose inputs' sketches all differ is all distinct
/// ([`all_sketches_differ`]); any other is compared whole (a map keyed by the inputs). The
/// hasher is foldhash, seeded per batch: every input of every batch is hashed here, and
/// SipHash (the standard map's) over 2 KB inputs was ≈ 1 µs of CPU per task; a batch is at
/// most `max_batch_size` inputs, so even crafted collisions cost only comparisons within it.
pub(super) fn collapse(inputs: Vec<String>) -> (Vec<String>, Vec<usize>) {
    if all_sketches_differ(&inputs) {
        let slot_of = (0..inputs.len()).collect();
        return (inputs, slot_of);
    }
    let mut first: HashMap<&str, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(inputs.len(), Default::default());
    let mut slot_of = Vec::with_capacity(inputs.len());
    let mut keep = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let distinct = first.len();
        match first.entry(input.as_str()) {
            Entry::Occupied(seen) => {
                slot_of.push(*seen.get());
                keep.push(false);
            }
            Entry::Vacant(new) => {
                new.insert(distinct);
                slot_of.push(distinct);
                keep.push(true);
            }
        }
    }
    let all_distinct = first.len() == inputs.len();
    drop(first);
    if all_distinct {
        return (inputs, slot_of);
    }
    let unique = inputs
        .into_iter()
        .zip(keep)
        .filter_map(|(input, keep)| keep.then_some(input))
        .collect();
    (unique, slot_of)
}

/// Bytes of each end of an input in its sketch.
const SKETCH_END: usize = 32;

/// Whether no two inputs share a sketch (their length and the bytes at both ends), which
/// proves them all distinct: equal inputs have equal sketches. Hashing a sketch costs a few
/// dozen bytes where hashing the input costs all of it (≈ 900 instructions a 2 KB input, every
/// task of every batch), and a batch of distinct inputs, the usual one, is told apart here.
/// Inputs made to share sketches (the same length and ends) only send the batch on to the
/// whole comparison as well.
fn all_sketches_differ(inputs: &[String]) -> bool {
    if inputs.len() < 2 {
        return true;
    }
    let mut seen: HashSet<(usize, &[u8], &[u8]), foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(inputs.len(), Default::default());
    inputs.iter().all(|input| {
        let bytes = input.as_bytes();
        let end = bytes.len().min(SKETCH_END);
        seen.insert((bytes.len(), &bytes[..end], &bytes[bytes.len() - end..]))
    })
}
