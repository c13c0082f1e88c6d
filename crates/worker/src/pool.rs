//! Several workers behind one [`Worker`]: each batch goes to the worker with the fewest calls
//! under way; a batch larger than that worker takes is split into calls it can take; a worker
//! that cannot be reached is dropped at once (its batch goes to another), and a periodic
//! health check — each protocol's own endpoint — drops failing workers and takes them back
//! when they pass again.
//!
//! Choosing a worker:
//! 1. Among the healthy workers, the one with the fewest calls under way (counting calls that
//!    wait for one of its in-flight places); ties go round-robin.
//! 2. If none is healthy, the same among all of them: with no worker known to be up, a call is
//!    the cheapest probe, and a pool of one behaves exactly like its one worker.
//!
//! With zones (the pool's own, `--zone`, and a `zone=` on worker URLs), step 1 looks first at
//! the healthy workers of the pool's zone that have a free in-flight place (below their
//! `max_inflight_batches`; a worker without that limit always has one), then at healthy
//! workers of other zones with a free place, then at healthy workers of the pool's zone
//! (the call waits there for a place), then at any healthy worker: a batch leaves its zone
//! only when the zone's workers are saturated or down, so no capacity is stranded. A worker
//! without a zone counts as the pool's. Each worker counts the calls placed on it, read as
//! the per-zone metrics.
//!
//! A call that fails because the worker is unreachable (connection refused or broken) marks
//! the worker down and is sent again, at once, to another healthy worker it has not tried.
//! Every other failure — an error status, a malformed answer, a timeout — is the answer: a
//! caller such as [`crate::Retrying`] decides what to do with it, and its next try is placed
//! afresh.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::zone::Zone;
use futures_util::future::{join_all, BoxFuture};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::spec::{Protocol, WorkerSpec};
use crate::{
    GrpcWorker, HttpJsonWorker, KserveV2Worker, OpenAiWorker, Output, Worker, WorkerError,
};

/// Default time between two health checks of every worker.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Longest one health check may take, whatever the worker's call timeout.
pub const MAX_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// What a worker URL leaves unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bound on one call, unless the URL sets `timeout_ms`.
    pub timeout: Duration,
    /// Most inputs per call, unless the URL sets `max_batch_size`.
    pub max_batch_size: usize,
    /// Time between health checks.
    pub health_interval: Duration,
    /// The zone the pool's batcher runs in (`--zone`): its workers come first.
    pub zone: Option<Zone>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            timeout: crate::http_json::DEFAULT_TIMEOUT,
            max_batch_size: 64,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            zone: None,
        }
    }
}

/// One worker to put in a [`Pool`], with its limits.
pub struct Member {
    /// What logs call it.
    pub name: String,
    /// The adapter that calls it.
    pub worker: Arc<dyn Worker>,
    /// Most inputs in one call to it (at least 1).
    pub max_batch_size: usize,
    /// Most calls under way to it at once; `None`: no limit of its own.
    pub max_inflight_batches: Option<usize>,
    /// Bound on waiting for one of its in-flight places, and on its health check.
    pub timeout: Duration,
    /// The zone it runs in (`zone=` on its URL); `None`: the pool's.
    pub zone: Option<Zone>,
}

impl Member {
    /// The adapter for `spec`, with the limits it sets or `config`'s.
    ///
    /// `tls` is what a worker URL over TLS (`https://`, `…+https://`) is reached with; such a
    /// URL without it is an error.
    pub fn connect(
        spec: &WorkerSpec,
        config: &PoolConfig,
        tls: Option<&rustls::ClientConfig>,
    ) -> Result<Member, WorkerError> {
        let timeout = spec.limits.timeout.unwrap_or(config.timeout);
        let tls = match (spec.uses_tls(), tls) {
            (true, Some(tls)) => Some(tls.clone()),
            (true, None) => {
                return Err(WorkerError::Unreachable(format!(
                "{spec} is reached over TLS: give the CA that signed its certificate (--worker-ca)"
            )))
            }
            (false, _) => None,
        };
        let token = spec
            .token
            .as_ref()
            .map(|source| {
                source
                    .read()
                    .map_err(|e| WorkerError::Unreachable(format!("{spec}: {e}")))
            })
            .transpose()?;
        let token = token.as_ref();
        let worker: Arc<dyn Worker> = match &spec.protocol {
            Protocol::HttpJson { base } => {
                Arc::new(HttpJsonWorker::with_tls(base, timeout, tls)?.with_token(token)?)
            }
            Protocol::Grpc { authority, .. } => {
                Arc::new(GrpcWorker::with_tls(authority, timeout, tls)?.with_token(token)?)
            }
            Protocol::KserveV2 {
                model_url,
                input,
                output,
            } => Arc::new(
                KserveV2Worker::new(model_url, input, output, timeout)?
                    .with_tls(tls)?
                    .with_token(token)?,
            ),
            Protocol::OpenAi { base, model } => Arc::new(
                OpenAiWorker::new(base, model, timeout)?
                    .with_tls(tls)?
                    .with_token(token)?,
            ),
        };
        Ok(Member {
            name: spec.name.clone(),
            worker,
            max_batch_size: spec.limits.max_batch_size.unwrap_or(config.max_batch_size),
            max_inflight_batches: spec.limits.max_inflight_batches,
            timeout,
            zone: spec.zone.clone(),
        })
    }
}

/// A worker of the pool and what the pool knows of it.
struct Slot {
    /// The worker and its limits.
    member: Member,
    /// Its in-flight places, when it has a limit.
    places: Option<Semaphore>,
    /// Calls placed on it and not finished (including those waiting for a place).
    in_flight: AtomicUsize,
    /// False after a failed health check or an unreachable call, until a check passes.
    healthy: AtomicBool,
    /// Whether it runs in the pool's zone (or either has none).
    local: bool,
    /// Calls placed on it so far.
    calls: AtomicU64,
}

/// What the pool knows of one worker, for tests and status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its name.
    pub name: String,
    /// Whether it takes calls.
    pub healthy: bool,
    /// Calls under way (or waiting for a place) on it.
    pub in_flight: usize,
    /// Its zone, if it has one.
    pub zone: Option<Zone>,
    /// Whether it is outside the pool's zone: its calls are cross-zone.
    pub remote: bool,
    /// Calls placed on it so far.
    pub calls: u64,
}

/// Several workers behind one. Cloning is shallow: clones share the workers and their state.
#[derive(Clone)]
pub struct Pool {
    /// Shared with the health-check task, which holds it weakly and stops once it is gone.
    inner: Arc<Inner>,
}

struct Inner {
    /// The workers, at least one.
    slots: Vec<Slot>,
    /// Whether some worker is outside the pool's zone (then placement prefers the zone's).
    zoned: bool,
    /// Where the round-robin among equally loaded workers starts next.
    next: AtomicUsize,
}

/// A call counted on its worker until it is dropped.
struct Placed<'a> {
    slot: &'a Slot,
    index: usize,
}

impl Drop for Placed<'_> {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool of `members` in `zone` (`None`: no zone); `None` when there are no members.
    pub fn new(members: Vec<Member>, zone: Option<&Zone>) -> Option<Pool> {
        if members.is_empty() {
            return None;
        }
        let slots: Vec<Slot> = members
            .into_iter()
            .map(|mut member| {
                member.max_batch_size = member.max_batch_size.max(1);
                Slot {
                    places: member
                        .max_inflight_batches
                        .map(|n| Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS))),
                    local: match (zone, &member.zone) {
                        (Some(mine), Some(theirs)) => mine == theirs,
                        _ => true,
                    },
                    member,
                    in_flight: AtomicUsize::new(0),
                    healthy: AtomicBool::new(true),
                    calls: AtomicU64::new(0),
                }
            })
            .collect();
        Some(Pool {
            inner: Arc::new(Inner {
                zoned: slots.iter().any(|s| !s.local),
                slots,
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// A pool of the workers `specs` name, with `config` for what they leave unset. Nothing is
    /// connected yet; an empty list is an error.
    pub fn connect(
        specs: &[WorkerSpec],
        config: &PoolConfig,
        tls: Option<&rustls::ClientConfig>,
    ) -> Result<Pool, WorkerError> {
        let members = specs
            .iter()
            .map(|spec| Member::connect(spec, config, tls))
            .collect::<Result<Vec<_>, _>>()?;
        Pool::new(members, config.zone.as_ref())
            .ok_or_else(|| WorkerError::Unreachable("no worker URL given".into()))
    }

    /// Checks every worker's health each `interval` until the pool (every clone of it) is
    /// dropped. Call it once, from inside a Tokio runtime.
    pub fn spawn_health_checks(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            // Ends when the pool is gone: each turn waits one interval, then needs the pool.
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.check_health().await;
            }
        })
    }

    /// Checks every worker's health once, now, and marks each up or down.
    pub async fn check_health(&self) {
        self.inner.check_health().await;
    }

    /// What the pool knows of each worker, in the order given.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.inner
            .slots
            .iter()
            .map(|s| MemberStatus {
                name: s.member.name.clone(),
                healthy: s.healthy.load(Ordering::Relaxed),
                in_flight: s.in_flight.load(Ordering::Relaxed),
                zone: s.member.zone.clone(),
                remote: !s.local,
                calls: s.calls.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The sum of the workers' in-flight limits, if every worker has one: how many calls the
    /// pool can have under way without any waiting.
    pub fn inflight_capacity(&self) -> Option<usize> {
        self.inner
            .slots
            .iter()
            .map(|s| s.member.max_inflight_batches)
            .sum()
    }
}

impl Inner {
    async fn check_health(&self) {
        let checks = self.slots.iter().map(|slot| async move {
            let limit = slot.member.timeout.min(MAX_HEALTH_TIMEOUT);
            let result = match tokio::time::timeout(limit, slot.member.worker.health()).await {
                Ok(result) => result,
                Err(_) => Err(WorkerError::Timeout),
            };
            match result {
                Ok(()) => {
                    if !slot.healthy.swap(true, Ordering::Relaxed) {
                        info!(worker = %slot.member.name, "worker passed its health check; sending to it again");
                    }
                }
                Err(error) => slot.mark_down(&error, "health check failed"),
            }
        });
        join_all(checks).await;
    }

    /// The worker for the next call, counted as busy with it: the least loaded healthy one
    /// not in `tried` (with zones: the pool's zone first, see the module's overview), or,
    /// when none is healthy and nothing was tried, the least loaded one.
    fn place(&self, tried: &[usize]) -> Option<Placed<'_>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let least = |fits: &dyn Fn(&Slot) -> bool| {
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|i| !tried.contains(i))
                .filter(|&i| fits(&self.slots[i]))
                .min_by_key(|&i| self.slots[i].in_flight.load(Ordering::Relaxed))
        };
        let healthy = |s: &Slot| s.healthy.load(Ordering::Relaxed);
        let healthy_index = if self.zoned {
            least(&|s| s.local && healthy(s) && s.has_room())
                .or_else(|| least(&|s| healthy(s) && s.has_room()))
                .or_else(|| least(&|s| s.local && healthy(s)))
                .or_else(|| least(&healthy))
        } else {
            least(&healthy)
        };
        let index = healthy_index.or_else(|| {
            if tried.is_empty() {
                least(&|_| true)
            } else {
                None
            }
        })?;
        let slot = &self.slots[index];
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Placed { slot, index })
    }

    /// Runs `inputs` on the pool, avoiding the workers in `tried` (they were unreachable for
    /// these inputs). Recursion is bounded: a split makes smaller batches, a retry grows
    /// `tried`.
    fn dispatch<'a>(
        &'a self,
        inputs: &'a [String],
        tried: Vec<usize>,
        last_error: Option<WorkerError>,
    ) -> BoxFuture<'a, Result<Vec<Output>, WorkerError>> {
        Box::pin(async move {
            let Some(placed) = self.place(&tried) else {
                return Err(last_error.unwrap_or_else(|| {
                    WorkerError::Unreachable("no worker in the pool can be reached".into())
                }));
            };
            let max = placed.slot.member.max_batch_size;
            if inputs.len() > max {
                drop(placed);
                let parts = inputs
                    .chunks(max)
                    .map(|chunk| self.dispatch(chunk, tried.clone(), None));
                let mut outputs = Vec::with_capacity(inputs.len());
                for part in join_all(parts).await {
                    outputs.extend(part?);
                }
                return Ok(outputs);
            }
            let index = placed.index;
            match self.call(placed, inputs).await {
                Err(error @ WorkerError::Unreachable(_)) => {
                    self.slots[index].mark_down(&error, "unreachable");
                    let mut tried = tried;
                    tried.push(index);
                    self.dispatch(inputs, tried, Some(error)).await
                }
                result => result,
            }
        })
    }

    /// One call on a placed worker, within its in-flight limit.
    async fn call(
        &self,
        placed: Placed<'_>,
        inputs: &[String],
    ) -> Result<Vec<Output>, WorkerError> {
        let slot = placed.slot;
        let _place = match &slot.places {
            Some(places) => Some(
                tokio::time::timeout(slot.member.timeout, places.acquire())
                    .await
                    .map_err(|_| WorkerError::Timeout)?
                    .expect("a pool's semaphores are never closed. This is a bug."),
            ),
            None => None,
        };
        slot.calls.fetch_add(1, Ordering::Relaxed);
        let result = slot.member.worker.infer(inputs).await;
        drop(placed);
        result
    }
}

impl Slot {
    /// Whether a call placed on it now would start at once: below its in-flight limit, if
    /// it has one.
    fn has_room(&self) -> bool {
        self.member
            .max_inflight_batches
            .is_none_or(|limit| self.in_flight.load(Ordering::Relaxed) < limit)
    }

    fn mark_down(&self, error: &WorkerError, why: &str) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            warn!(worker = %self.member.name, %error, why, "worker marked down; sending to the others until it passes a health check");
        }
    }
}

#[async_trait]
impl Worker for Pool {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.dispatch(inputs, Vec::new(), None).await
    }

    /// Healthy while at least one worker is.
    async fn health(&self) -> Result<(), WorkerError> {
        if self
            .inner
            .slots
            .iter()
            .any(|s| s.healthy.load(Ordering::Relaxed))
        {
            Ok(())
        } else {
            Err(WorkerError::Unreachable(
                "every worker of the pool is down".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
