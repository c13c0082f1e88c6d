//! `batchgate`: parse flags, set up logging, hand over to a part's `run`.

use std::process::ExitCode;

/// glibc's allocator took a fifth of the server's CPU at 8,000 requests/s (perf, see
/// BENCHMARKS.md); mimalloc's thread-local free lists suit many small short-lived buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    batchgate::cli::main()
}
