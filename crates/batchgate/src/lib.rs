//! The `batchgate` binary's library half: flag parsing and the composition of the parts.
//!
//! Layout:
//! - [`certs`]: `batchgate certs`, throwaway TLS certificates for tests and local runs.
//! - [`cli`]: the subcommands and their flags (clap), and `main`.
//! - [`config_file`]: `--config FILE` (TOML) layered under flags and environment variables.
//! - [`backend`]: the queue, stores and dedupe a process runs on (in-process or Redis).
//! - [`models`]: the models after the first of `serve --model`, each with its own queue and
//!   batcher.
//! - [`serve`]: runs a process's parts (gateway, batcher or both) and its shutdown order.
//! - [`pool_metrics`]: each pooled worker's health and load on `/metrics`.
//! - [`store_metrics`]: the in-process stores' evictions on `/metrics`.
//! - [`managed`]: settings for managed services (TLS to Redis), read from files.
//! - [`dlq`]: `batchgate dlq list|replay|purge`, through a gateway's admin API.
//! - [`probe`]: `batchgate probe`, one health check over HTTP (a container's HEALTHCHECK).
//! - [`worker`]: `batchgate worker --sim`, the reference worker server (and, with the `model`
//!   feature, `worker --model-dir DIR`, a real model behind the same protocols).
//! - [`shutdown`]: the one owner of SIGINT/SIGTERM.
//! - [`telemetry`]: logging setup.
//! - [`token`]: `batchgate token`, a development JWT.

pub mod backend;
pub mod certs;
pub mod cli;
pub mod config_file;
pub mod dlq;
pub mod managed;
pub mod models;
pub mod pool_metrics;
pub mod probe;
pub mod serve;
pub mod shutdown;
pub mod simulate;
pub mod store_metrics;
pub mod telemetry;
pub mod token;
pub mod worker;
