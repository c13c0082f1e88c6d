//! Wire types shared by every part of batchgate.
//!
//! Nothing here does I/O: these are the shapes that cross a boundary, so that the gateway, the
//! batcher, the workers and the load generator agree on them by construction.
//!
//! Layout:
//! - [`api`]: the public HTTP API's JSON (`POST /v1/inference`, `GET /v1/result/{id}`, errors).
//! - [`front`]: the OpenAI-compatible and KServe V2 front doors' JSON, as batchgate serves them.
//! - [`worker_api`]: the fixed worker batch API (`POST /v1/batch`).
//! - [`worker_grpc`]: the same call over gRPC (generated from `proto/worker.proto`).
//! - [`kserve_grpc`]: the KServe V2 protocol over gRPC, the gateway's front door (generated from
//!   `proto/grpc_predict_v2.proto`).
//! - [`kserve_v2`]: the KServe V2 / Open Inference Protocol's JSON, as batchgate uses it.
//! - [`openai`]: OpenAI-style embeddings, and the embedding the simulated worker derives.
//! - [`output`]: [`Output`], a worker's output (text, bytes or a vector) and its stored form.
//! - [`task`]: the task as it travels through the queue.
//! - [`zone`]: [`zone::Zone`], where a process runs and a task entered.
//! - [`sim_output`], [`sha256_hex`]: the simulated worker's output function, and input hashes.

pub mod api;
pub mod front;
pub mod kserve_grpc;
pub mod kserve_v2;
pub mod openai;
pub mod output;
pub mod task;
pub mod worker_api;
pub mod worker_grpc;
pub mod zone;

pub use output::Output;
use sha2::{Digest, Sha256};

/// The reference simulated worker's output for `input`: the lowercase hex SHA-256 of its UTF-8
/// bytes. Lives here so the worker, the tests and the load generator compute it the same way.
pub fn sim_output(input: &str) -> String {
    sha256_hex(input)
}

/// Lowercase hex SHA-256 of a string's UTF-8 bytes (the dedupe key of an input).
pub fn sha256_hex(input: &str) -> String {
    lower_hex(&Sha256::digest(input.as_bytes()))
}

/// The dedupe key of an input submitted by `owner`: the lowercase hex SHA-256 of the owner
/// and the input, unambiguously joined (the owner's length first), so that equal inputs of
/// different owners never share a task. Hashed in parts: the input is not copied.
pub fn owner_input_sha256_hex(owner: &str, input: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(decimal(owner.len(), &mut [0; 20]));
    hasher.update(b":");
    hasher.update(owner.as_bytes());
    hasher.update(b":");
    hasher.update(input.as_bytes());
    lower_hex(&hasher.finalize())
}

/// Lowercase hex of `bytes`, as `hex::encode` writes it, but into a buffer of the right size
/// at once: `hex::encode` collects `char`s one by one (≈ 2,000 instructions for a 32-byte
/// hash, and every request makes two).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = vec![0; bytes.len() * 2];
    for (pair, &byte) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    // Only ASCII digits and letters were written, so this never falls back.
    String::from_utf8(text).unwrap_or_default()
}

/// The decimal digits of `n`, as `format!("{n}")` writes them, in `buf` (no allocation).
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_scoped_hash_joins_owner_and_input_unambiguously() {
        assert_eq!(
            owner_input_sha256_hex("alice", "hi"),
            sha256_hex("5:alice:hi")
        );
        assert_ne!(
            owner_input_sha256_hex("a", "b:c"),
            owner_input_sha256_hex("a:b", "c")
        );
    }

    #[test]
    fn hashes_are_written_as_hex_and_format_write_them() {
        for input in ["", "abc", "5:alice:hi", &"x".repeat(2048)] {
            assert_eq!(
                sha256_hex(input),
                hex::encode(Sha256::digest(input.as_bytes()))
            );
        }
        for owner in ["", "a", "alice", &"o".repeat(12), &"p".repeat(1234)] {
            let joined = format!("{}:{owner}:in", owner.len());
            assert_eq!(owner_input_sha256_hex(owner, "in"), sha256_hex(&joined));
        }
        for n in [0, 7, 10, 99, 100, 12345, usize::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn sim_output_is_hex_sha256() {
        assert_eq!(
            sim_output("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
