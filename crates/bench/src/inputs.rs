//! Request inputs: fresh ones distinct by construction, or reused ones drawn from a pool.

use std::io::Write as _;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// How many already-sent inputs are kept for reuse. Bounded so memory stays flat over a long
/// run; when full, a fresh input replaces a random one (so the pool keeps recent inputs too).
pub(crate) const POOL_CAPACITY: usize = 1024;

/// Length of the sequence-number prefix (16 hex digits hold any `u64`).
const PREFIX_LEN: usize = 16;

/// The 64 characters of the random fill: one per 6 bits of a random byte.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Mixed into the seed so the inputs do not replay the arrival schedule's random stream.
const SEED_SALT: u64 = 0x696e_7075_7473; // "inputs"

/// Makes the input of every request, in order. One per run, shared by the senders.
#[derive(Debug)]
pub(crate) struct Inputs {
    /// Length of every input in bytes; at least [`PREFIX_LEN`] (checked by `validate`).
    len: usize,
    /// Probability that a request gets a fresh input.
    unique_ratio: f64,
    /// Draws the fill, the fresh-or-reused choice and the pool slot; seeded so runs repeat.
    rng: StdRng,
    /// Sequence number of the next fresh input; makes fresh inputs distinct.
    next_seq: u64,
    /// Inputs already handed out, for reuse; at most [`POOL_CAPACITY`].
    pool: Vec<Arc<str>>,
    /// Scratch for the random bytes of the fill, reused to avoid an allocation per input.
    scratch: Vec<u8>,
}

impl Inputs {
    /// Inputs of `len` ASCII bytes, a `unique_ratio` fraction of them fresh.
    pub(crate) fn new(len: usize, unique_ratio: f64, seed: u64) -> Self {
        Inputs {
            len,
            unique_ratio,
            rng: StdRng::seed_from_u64(seed ^ SEED_SALT),
            next_seq: 0,
            pool: Vec::new(),
            scratch: vec![0; len.saturating_sub(PREFIX_LEN)],
        }
    }

    /// The `count` inputs of the next request.
    pub(crate) fn next_request(&mut self, count: usize) -> Vec<Arc<str>> {
        (0..count).map(|_| self.next_input()).collect()
    }

    /// The input of the next request.
    pub(crate) fn next_input(&mut self) -> Arc<str> {
        let fresh = self.pool.is_empty() || self.rng.random::<f64>() < self.unique_ratio;
        if !fresh {
            let slot = self.rng.random_range(0..self.pool.len());
            return Arc::clone(&self.pool[slot]);
        }
        let input = self.fresh();
        if self.pool.len() < POOL_CAPACITY {
            self.pool.push(Arc::clone(&input));
        } else {
            let slot = self.rng.random_range(0..POOL_CAPACITY);
            self.pool[slot] = Arc::clone(&input);
        }
        input
    }

    /// A never-seen input: the sequence number in hex, then random characters.
    fn fresh(&mut self) -> Arc<str> {
        let mut bytes = Vec::with_capacity(self.len.max(PREFIX_LEN));
        write!(bytes, "{:016x}", self.next_seq).expect("writing to a Vec cannot fail");
        self.next_seq += 1;
        self.rng.fill_bytes(&mut self.scratch);
        bytes.extend(
            self.scratch
                .iter()
                .map(|byte| ALPHABET[usize::from(byte & 63)]),
        );
        let text =
            String::from_utf8(bytes).expect("hex digits and ALPHABET are ASCII. This is a bug.");
        Arc::from(text)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn inputs_have_the_length_and_are_ascii() {
        for len in [16, 17, 100, 2048] {
            let mut inputs = Inputs::new(len, 1.0, 1);
            for _ in 0..10 {
                let input = inputs.next_input();
                assert_eq!(input.len(), len);
                assert!(input.is_ascii());
            }
        }
    }

    #[test]
    fn fresh_inputs_are_distinct() {
        let mut inputs = Inputs::new(16, 1.0, 1);
        let seen: HashSet<_> = (0..10_000).map(|_| inputs.next_input()).collect();
        assert_eq!(seen.len(), 10_000);
    }

    #[test]
    fn unique_ratio_zero_resends_the_first_input() {
        let mut inputs = Inputs::new(64, 0.0, 1);
        let first = inputs.next_input();
        assert!((0..1000).all(|_| inputs.next_input() == first));
    }

    #[test]
    fn unique_ratio_sets_the_fraction_of_fresh_inputs() {
        // Seeded, so deterministic; ~1% sd at 10,000 draws, tolerance 3%.
        let mut inputs = Inputs::new(32, 0.25, 3);
        let mut seen = HashSet::new();
        let mut fresh = 0;
        for _ in 0..10_000 {
            if seen.insert(inputs.next_input()) {
                fresh += 1;
            }
        }
        assert!(
            (fresh as f64 / 10_000.0 - 0.25).abs() < 0.03,
            "fresh {fresh}"
        );
        // Reused inputs come from the bounded pool, and the pool keeps taking new ones.
        assert!(inputs.pool.len() <= POOL_CAPACITY);
    }

    #[test]
    fn same_seed_same_inputs() {
        let mut a = Inputs::new(40, 0.5, 11);
        let mut b = Inputs::new(40, 0.5, 11);
        for _ in 0..200 {
            assert_eq!(a.next_input(), b.next_input());
        }
    }
}
