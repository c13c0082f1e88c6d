//! The state every route shares.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::collections::HashMap;

use batchgate_queue::{DeadLetters, Intake, LoadBoard, Queue, Rate, RateLimiter};
use batchgate_store::ResultStore;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::auth::Authenticator;
use crate::config::{DedupeScope, GatewayConfig};
use crate::fair_share::CallerSlots;
use crate::metrics::GatewayMetrics;
use crate::ops::Ops;
use crate::readiness::WorkersHealthy;
use crate::shed::Shedder;

/// The gate new tasks pass through. Shutdown closes it, and closing waits for every
/// submission already past the gate to finish enqueueing — so once [`Admission::close`]
/// returns, nothing more enters the queue and the batcher can drain it to the end.
#[derive(Debug)]
pub struct Admission {
    /// `true` while accepting. Submissions hold a read guard from the check to the enqueue
    /// (owned, so that an intake answering later can hold it until it answers).
    open: Arc<RwLock<bool>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            open: Arc::new(RwLock::new(true)),
        }
    }
}

impl Admission {
    /// Enters the gate: `Some` while open; keep the guard until the task is enqueued.
    pub async fn enter(&self) -> Option<OwnedRwLockReadGuard<bool>> {
        let guard = self.open.clone().read_owned().await;
        if *guard {
            Some(guard)
        } else {
            None
        }
    }

    /// Closes the gate; returns once every submission that got in has finished.
    pub async fn close(&self) {
        *self.open.write().await = false;
    }

    /// Whether new tasks are accepted.
    pub async fn is_open(&self) -> bool {
        *self.open.read().await
    }
}

/// What the gateway uses of a further model's backends.
#[derive(Clone)]
pub struct ModelBackends {
    /// Admits its tasks into its own queue.
    pub intake: Arc<dyn Intake>,
    /// Its own queue: its depth on `/metrics` and `/readyz`, its backlog for its shedder.
    pub queue: Arc<dyn Queue>,
    /// Where its results are (the same store as the first model's in memory).
    pub results: Arc<dyn ResultStore>,
    /// Its own dead letters, which a replay sends back to its own queue.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Its batchers' reports of their workers' load, which its own shedder samples.
    pub load_board: Arc<dyn LoadBoard>,
    /// Whether any of its workers is healthy, in a process that runs its batcher.
    pub workers_healthy: Option<WorkersHealthy>,
    /// The gateway's name on its notifications (Redis gateways only).
    pub gateway_id: Option<String>,
}

/// Cheap-to-clone handle to everything the routes need: one `Arc`, cloned by every extractor
/// and middleware of every request, so a clone is one atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

struct StateInner {
    shared: Shared,
    /// `/v1/…` requests being served now (see [`AppState::enter_request`]).
    requests_in_flight: AtomicUsize,
    /// Each authenticated caller's requests in flight (its fair share).
    caller_slots: Arc<CallerSlots>,
}

impl AppState {
    /// The position of the model named `name` in `config.models`, if it is served.
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.config.models.iter().position(|m| m == name)
    }

    /// The intake of model `index` (see [`AppState::model_index`]); the first model's for
    /// an index past the end.
    pub fn intake_of(&self, index: usize) -> &Arc<dyn Intake> {
        self.further(index).map_or(&self.intake, |m| &m.intake)
    }

    /// The result store of model `index`'s tasks.
    pub fn results_of(&self, index: usize) -> &Arc<dyn ResultStore> {
        self.further(index).map_or(&self.results, |m| &m.results)
    }

    /// The gateway's name on model `index`'s notifications (Redis), for its tasks' `reply_to`.
    pub fn gateway_id_of(&self, index: usize) -> &Option<String> {
        self.further(index)
            .map_or(&self.gateway_id, |m| &m.gateway_id)
    }

    /// Every result store a task may be in: the first model's, then the further models'
    /// that are not the same store.
    pub fn all_results(&self) -> Vec<&Arc<dyn ResultStore>> {
        let mut stores = vec![&self.results];
        for m in &self.further_models {
            if !stores.iter().any(|s| Arc::ptr_eq(s, &m.results)) {
                stores.push(&m.results);
            }
        }
        stores
    }

    /// The shedder of model `index`: each model sheds by its own queue and workers.
    pub fn shedder_of(&self, index: usize) -> &Arc<Shedder> {
        index
            .checked_sub(1)
            .and_then(|i| self.model_shedders.get(i))
            .unwrap_or(&self.shedder)
    }

    /// The dead letters of model `index`.
    pub fn dead_letters_of(&self, index: usize) -> &Arc<dyn DeadLetters> {
        self.further(index)
            .map_or(&self.dead_letters, |m| &m.dead_letters)
    }

    fn further(&self, index: usize) -> Option<&ModelBackends> {
        index
            .checked_sub(1)
            .and_then(|i| self.further_models.get(i))
    }

    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        let caller_slots = Arc::new(CallerSlots::new(shared.config.max_requests_per_caller));
        AppState(Arc::new(StateInner {
            shared,
            requests_in_flight: AtomicUsize::new(0),
            caller_slots,
        }))
    }

    /// Counts one more API request in flight, unless `max_concurrent_requests` are already:
    /// then `None`. The request counts until the guard drops (also when the client goes away
    /// and the request's future is dropped).
    pub fn enter_request(&self) -> Option<RequestSlot> {
        let previous = self.0.requests_in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = RequestSlot(self.0.clone());
        (previous < self.config.max_concurrent_requests).then_some(slot)
    }

    /// Whether a task without an owner may be read by any caller holding its id: without
    /// authentication (everyone is the same caller), and with global dedupe, whose tasks
    /// belong to no one.
    pub fn unowned_is_public(&self) -> bool {
        !self.auth.enabled() || self.config.dedupe_scope == DedupeScope::Global
    }

    /// Each authenticated caller's requests in flight.
    pub fn caller_slots(&self) -> &Arc<CallerSlots> {
        &self.0.caller_slots
    }

    /// API requests being served now.
    pub fn requests_in_flight(&self) -> usize {
        self.0.requests_in_flight.load(Ordering::Acquire)
    }
}

/// One API request's place under the concurrency limit; dropping it frees the place.
pub struct RequestSlot(Arc<StateInner>);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.requests_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The operator routes take [`Ops`]: the API's router hands them its part of the state.
impl axum::extract::FromRef<AppState> for Ops {
    fn from_ref(state: &AppState) -> Ops {
        state.ops.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0.shared
    }
}

/// Per-user rate limits: a default rate, exceptions by user, and where the counts live.
pub struct RateLimits {
    /// The rate of every user without an override.
    pub default: Rate,
    /// Users with their own limit per the same period.
    pub overrides: HashMap<String, u64>,
    /// Counts requests (in memory, or in Redis across gateways).
    pub limiter: Arc<dyn RateLimiter>,
}

impl RateLimits {
    /// The rate that applies to `user`.
    pub fn rate_of(&self, user: &str) -> Rate {
        match self.overrides.get(user) {
            Some(&limit) => Rate {
                limit: limit.max(1),
                ..self.default
            },
            None => self.default,
        }
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    /// The queue, for readiness and depth (tasks enter through `intake`).
    pub queue: Arc<dyn Queue>,
    /// Where results are read from and waited on.
    pub results: Arc<dyn ResultStore>,
    /// Admits tasks: pending record, dedupe claim, enqueue, as one operation.
    pub intake: Arc<dyn Intake>,
    /// The backends of the models after the first (`config.models[1..]`, in order), each
    /// with that model's own queue: batches never mix models.
    pub further_models: Vec<ModelBackends>,
    /// Whether identical inputs share one task (the intake's dedupe cache is on).
    pub dedupe: bool,
    /// This gateway's name on the notification bus, put in each task's `reply_to` so the
    /// batcher can wake its long polls; `None` where everything runs in one process.
    pub gateway_id: Option<String>,
    /// Closed by shutdown.
    pub admission: Arc<Admission>,
    /// Sheds the first model's new tasks its workers could not serve in time.
    pub shedder: Arc<Shedder>,
    /// The shedders of the models after the first, in order, each watching its own
    /// model's queue and load board.
    pub model_shedders: Vec<Arc<Shedder>>,
    /// The first model's batchers' reports of their workers' load, which the shedder samples.
    pub load_board: Arc<dyn LoadBoard>,
    /// Per-user rate limits of authenticated callers, if on.
    pub rate_limits: Option<RateLimits>,
    /// The first model's failed tasks, for the admin API.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// Who is calling (JWT), or everyone is anonymous (`--insecure-no-auth`).
    pub auth: Arc<Authenticator>,
    /// Limits.
    pub config: GatewayConfig,
    /// The gateway's own metrics.
    pub metrics: GatewayMetrics,
    /// What the operator routes read (`/healthz`, `/readyz`, `/metrics`, the status page):
    /// the same queue, stores and admission as above, the registry and readiness.
    pub ops: Ops,
}
