//! `batchgate`: parse flags, set up logging, hand over to a part's `run`.

use std::process::ExitCode;

fn main() -> ExitCode {
    batchgate::cli::main()
}
