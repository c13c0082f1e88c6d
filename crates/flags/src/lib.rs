//! Command-line value types that more than one subcommand takes, so that each is parsed (and
//! refused) the same way everywhere: the servers' flags, `bench`, `simulate` and `plan`.
//!
//! Layout:
//! - [`duration`]: `30s`, `500ms`, `1m30s` — [`parse_duration`], a clap value parser.
//! - [`policy`]: `--policy fixed|adaptive` as a clap `ValueEnum`, turned into the policy
//!   crate's [`batchgate_policy::Rule`].

pub mod duration;
pub mod policy;

pub use duration::{parse_duration, DurationError};
pub use policy::PolicyName;
