//! `batchgate simulate` and `batchgate plan`: the production batching code in virtual time.
//!
//! The simulator runs the real policy ([`batchgate_policy::Policy`]), the batcher's gather
//! decision ([`batchgate_batcher::gather::step`]) and slot limit
//! ([`batchgate_batcher::slots::SlotState`]), the batcher's load report
//! ([`batchgate_batcher::load::LoadMeter`]) and the gateway's shedding
//! ([`batchgate_gateway::Shedder`]) against modelled arrivals (the bench's own schedule, or a
//! trace of send times) and a worker cost model, and reports in the shape of
//! `batchgate bench --json`, so a simulated run and a measured one compare field by field.
//!
//! Layout:
//! - [`model`]: what is simulated ([`Deployment`], [`WorkerModel`], [`Load`], the machine's
//!   CPU [`model::Host`]).
//! - [`engine`]: the event loop ([`engine::run`]) and what it measures ([`engine::Outcome`]).
//! - [`args`]: the flags of `batchgate simulate` ([`SimulateArgs`]), named as `bench`'s and
//!   `serve`'s.
//! - [`report`]: what a run prints: the bench-shaped report and the charts.
//! - [`plan`]: `batchgate plan` ([`PlanArgs`]): the cheapest deployment that meets a p99.

pub mod args;
pub mod engine;
pub mod model;
pub mod plan;
pub mod report;

pub use args::SimulateArgs;
pub use model::{Arrivals, Deployment, Load, WorkerModel};
pub use plan::PlanArgs;
