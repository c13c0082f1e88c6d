//! Request collapsing: identical inputs of one batch go to the worker once.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// The distinct inputs, in first-seen order, and for each original input the index of its
/// distinct copy. Inputs are compared whole (a map keyed by the inputs themselves). The
/// hasher is foldhash, seeded per batch: every input of every batch is hashed here, and
/// SipHash (the standard map's) over 2 KB inputs was ≈ 1 µs of CPU per task; a batch is at
/// most `max_batch_size` inputs, so even crafted collisions cost only comparisons within it.
pub(super) fn collapse(inputs: Vec<String>) -> (Vec<String>, Vec<usize>) {
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
