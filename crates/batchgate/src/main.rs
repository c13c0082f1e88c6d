//! `batchgate`: parse flags, set up logging, hand over to a part's `run`.

use std::process::ExitCode;

/// glibc's allocator took a fifth of the server's CPU at 8,000 requests/s (perf, see
/// BENCHMARKS.md); mimalloc's thread-local free lists suit many small short-lived buffers.
/// Built without asking for transparent huge pages (the workspace's `no_thp` feature): a huge
/// page is zeroed whole, 2 MiB at a time, each time mimalloc touches memory it gave back, which
/// cost ≈ 1 µs of kernel time a request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    batchgate::cli::main()
}
