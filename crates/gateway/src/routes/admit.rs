//! Admitting one input as a task, and waiting for its result: what every front door does
//! for each input it is given (`/v1/inference` once, `/v1/embeddings` and the KServe V2
//! `infer` once per input), so tasks of every front door share batches.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::task::{unix_ms, Task};
use batchgate_protocol::{owner_input_sha256_hex, sha256_hex, Output};
use batchgate_queue::{AdmittedOwned, QuietAnswer};
use batchgate_store::{Expectation, TaskRecord};
use futures_util::future::join_all;
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::config::{DedupeScope, MAX_WAIT_MS};
use crate::error::ApiError;
use crate::shed::Shed;
use crate::state::AppState;

/// One input to admit.
pub(crate) struct Submission {
    /// The text for the worker.
    pub(crate) input: String,
    /// The client's deadline, from acceptance.
    pub(crate) timeout: Option<Duration>,
    /// Whose identical inputs it may share a task with (see [`dedupe_scope`] of the
    /// inference route); the caller when `None`.
    pub(crate) dedupe_scope: Option<String>,
    /// Whether the caller will wait for the result (then it is registered before the task
    /// can complete).
    pub(crate) waits: bool,
    /// Which model (its position in the served models): its queue takes the task.
    pub(crate) model: usize,
}

/// A task admitted for an input.
pub(crate) struct Admission {
    /// The task's id.
    pub(crate) task_id: String,
    /// When it was accepted, ms since the Unix epoch.
    pub(crate) created_at: u64,
    /// Its model, whose store holds its result.
    pub(crate) model: usize,
    /// What is known of it.
    pub(crate) known: Known,
}

/// What is known of an admitted task.
pub(crate) enum Known {
    /// Just admitted here, so pending; with a wait, its expectation was registered before
    /// the admission.
    Fresh(Option<Box<dyn Expectation>>),
    /// Another submission's task (a dedupe hit): it may be done already, so it is read.
    Existing,
    /// Handed to an intake that answers later ([`Intake::answers_quietly`]): the result and
    /// the admission's answer are awaited together, and only a refusal or a duplicate wakes
    /// the wait before the result does.
    Handed(Box<Handed>),
}

/// A task handed to an intake that answers later, and what its answer may still need.
pub(crate) struct Handed {
    /// Registered before the hand-over.
    expected: Box<dyn Expectation>,
    /// The admission's answer.
    answer: Arc<QuietAnswer>,
    /// Who submitted it: whether a duplicate's task may be shared depends on it.
    caller: String,
    /// The enqueue span, for a second admission.
    span: Span,
}

/// Checks an input's size; the same rule on every front door.
pub(crate) fn check_input(state: &AppState, input: &str) -> Result<(), ApiError> {
    let max = state.config.max_input_bytes;
    if input.len() > max {
        return Err(ApiError::InputTooLarge {
            got: input.len(),
            max,
        });
    }
    if input.is_empty() {
        return Err(ApiError::InvalidRequest("`input` must not be empty".into()));
    }
    Ok(())
}

/// Sheds, dedupes and enqueues one input of `caller`.
pub(crate) async fn admit(
    state: &AppState,
    caller: &str,
    submission: Submission,
) -> Result<Admission, ApiError> {
    let Submission {
        input,
        timeout,
        dedupe_scope,
        waits,
        model,
    } = submission;
    let retry_after_secs = state.config.retry_after_secs;
    // The caller's rate limit and share were checked when the headers arrived
    // (`guard.rs`), before the body was read; a request's further inputs in `run_all`.
    let shedder = state.shedder_of(model);
    shedder.check(timeout).map_err(|shed| match shed {
        Shed::Overloaded => ApiError::Overloaded { retry_after_secs },
        Shed::DeadlineUnmeetable { estimate_ms } => ApiError::DeadlineUnmeetable {
            estimate_ms,
            retry_after_secs,
        },
    })?;
    let now = SystemTime::now();
    let created_at = unix_ms(now);
    // Dedupe is per owner unless configured global: by default one user's input never
    // answers with another user's task. Globally shared tasks belong to no one.
    let global = state.config.dedupe_scope == DedupeScope::Global;
    let input_sha256 = state.dedupe.then(|| match (global, model) {
        (true, 0) => sha256_hex(&input),
        (false, 0) => owner_input_sha256_hex(dedupe_scope.as_deref().unwrap_or(caller), &input),
        // Another model's output for the same input is another result: its scope names it.
        (global, _) => {
            let scope = if global {
                ""
            } else {
                dedupe_scope.as_deref().unwrap_or(caller)
            };
            let name = state.config.models.get(model).map_or("", String::as_str);
            owner_input_sha256_hex(&format!("{scope}@{name}"), &input)
        }
    });
    let task_id = new_task_id(input_sha256.as_deref());
    super::span::record_task_id(&task_id);
    // The task carries this span's context through the queue: the batcher's spans for the
    // task are its children, and the batch span links to it. Only exported traces have it:
    // log lines inside the admission carry the request's span either way.
    let enqueue_span = if batchgate_telemetry::enabled() {
        tracing::info_span!("enqueue", otel.kind = "producer")
    } else {
        Span::none()
    };
    let task = Task {
        task_id: task_id.clone(),
        input,
        enqueued_at: now,
        reply_to: state.gateway_id_of(model).clone(),
        deadline: timeout.map(|t| now + t),
        owner: (!global).then(|| caller.to_owned()),
        trace_parent: batchgate_telemetry::traceparent_of(&enqueue_span),
        zone: state.config.zone.clone(),
    };
    // Hold the gate until the task is in the queue: shutdown waits for us.
    let Some(gate) = state.admission.enter().await else {
        return Err(ApiError::ShuttingDown { retry_after_secs });
    };
    // A caller who waits is registered for the result before the task can complete, so the
    // wait needs no read of the store: the completion's notice brings the result.
    let expect = || {
        state
            .results_of(model)
            .clone()
            .expect(&task_id, created_at, task.owner.as_deref())
    };
    let intake = state.intake_of(model);
    if waits && intake.answers_quietly() {
        // The answer is not awaited here: the wait for the result learns it (and is woken
        // early only by a refusal or a duplicate), so this request is woken once, by its
        // result. The intake holds the gate until it answers.
        let expected = expect();
        let (answer, reply) = QuietAnswer::new(Box::new(gate));
        intake
            .admit_quietly(task, created_at, input_sha256.as_deref(), reply)
            .instrument(enqueue_span.clone())
            .await;
        // Counted as it is handed over: a refusal or a duplicate stays counted until the
        // shedder's next sample, which errs on the side of shedding.
        shedder.admitted();
        return Ok(Admission {
            task_id,
            created_at,
            model,
            known: Known::Handed(Box::new(Handed {
                expected,
                answer,
                caller: caller.to_owned(),
                span: enqueue_span,
            })),
        });
    }
    let expected = waits.then(expect);
    let admitted = intake
        .admit_owned(task, created_at, input_sha256.as_deref())
        .instrument(enqueue_span.clone())
        .await
        .map_err(|e| ApiError::from_admit(&e, retry_after_secs))?;
    let shared = resolve(state, caller, model, admitted, created_at, &enqueue_span).await?;
    drop(gate);
    if let Some(existing) = shared {
        return Ok(Admission {
            task_id: existing,
            created_at,
            model,
            known: Known::Existing,
        });
    }
    shedder.admitted();
    state.metrics.tasks_accepted.inc();
    Ok(Admission {
        task_id,
        created_at,
        model,
        known: Known::Fresh(expected),
    })
}

/// What an admission's answer leaves: `Some` task of an identical input to share, or `None`
/// once this task is queued (admitted again, without dedupe, when the identical input's
/// task may not be shared). Called within the admission gate.
async fn resolve(
    state: &AppState,
    caller: &str,
    model: usize,
    admitted: AdmittedOwned,
    created_at: u64,
    enqueue_span: &Span,
) -> Result<Option<String>, ApiError> {
    let retry_after_secs = state.config.retry_after_secs;
    match admitted {
        AdmittedOwned::Enqueued { dedupe_bypassed } => {
            if dedupe_bypassed {
                state.metrics.dedupe_bypassed.inc();
            }
            Ok(None)
        }
        AdmittedOwned::Duplicate { existing, task } => {
            let record = state
                .results_of(model)
                .get(&existing)
                .await
                .map_err(|e| ApiError::from_store(&e, retry_after_secs))?;
            let shareable = record.is_some_and(|r| {
                r.status != TaskStatus::Failed && r.readable_by(caller, state.unowned_is_public())
            });
            if shareable {
                // An identical input already has a task: answer with it, never run it twice.
                state.metrics.dedupe_hits.inc();
                return Ok(Some(existing));
            }
            // The first task ended between the admission (which takes over the entry of a
            // task that failed or expired) and this read, or belongs to someone this caller
            // may not see: run this one on its own.
            state
                .intake_of(model)
                .admit_owned(task, created_at, None)
                .instrument(enqueue_span.clone())
                .await
                .map_err(|e| ApiError::from_admit(&e, retry_after_secs))?;
            Ok(None)
        }
    }
}

/// The task's record once it finishes within `wait`, else as it stands (pending).
pub(crate) async fn outcome(
    state: &AppState,
    admission: Admission,
    wait: Duration,
) -> Result<(String, TaskRecord), ApiError> {
    let Admission {
        task_id,
        created_at,
        model,
        known,
    } = admission;
    let results = state.results_of(model);
    let store_error = |e| ApiError::from_store(&e, state.config.retry_after_secs);
    let record = match known {
        Known::Fresh(Some(expected)) => expected.wait(wait).await.map_err(store_error)?,
        Known::Fresh(None) => None,
        Known::Existing if !wait.is_zero() => {
            results.wait(&task_id, wait).await.map_err(store_error)?
        }
        Known::Existing => results.get(&task_id).await.map_err(store_error)?,
        Known::Handed(handed) => {
            return handed_outcome(state, task_id, created_at, model, *handed, wait).await
        }
    };
    let record = record.unwrap_or_else(|| TaskRecord::pending(created_at));
    Ok((task_id, record))
}

/// [`outcome`] of a task handed to an intake that answers later: its result, awaited
/// together with the admission's answer.
async fn handed_outcome(
    state: &AppState,
    task_id: String,
    created_at: u64,
    model: usize,
    handed: Handed,
    wait: Duration,
) -> Result<(String, TaskRecord), ApiError> {
    let Handed {
        expected,
        answer,
        caller,
        span,
    } = handed;
    let retry_after_secs = state.config.retry_after_secs;
    let store_error = |e| ApiError::from_store(&e, retry_after_secs);
    let started = Instant::now();
    let mut waiting = expected.wait(wait);
    let waited = tokio::select! {
        biased;
        record = &mut waiting => Some(record),
        () = answer.unusual() => None,
    };
    let answered = match answer.try_take() {
        Some(answered) => answered,
        // A final record of this very id: the task was admitted (its answer is late).
        None if matches!(&waited, Some(Ok(Some(r))) if r.status.is_terminal()) => {
            Ok(AdmittedOwned::Enqueued {
                dedupe_bypassed: false,
            })
        }
        None => answer.take().await,
    };
    let admitted = answered.map_err(|e| ApiError::from_admit(&e, retry_after_secs))?;
    // A duplicate may be admitted a second time, which passes the gate like the first.
    let gate = match admitted {
        AdmittedOwned::Duplicate { .. } => match state.admission.enter().await {
            Some(gate) => Some(gate),
            None => return Err(ApiError::ShuttingDown { retry_after_secs }),
        },
        AdmittedOwned::Enqueued { .. } => None,
    };
    let shared = resolve(state, &caller, model, admitted, created_at, &span).await?;
    drop(gate);
    let record = match shared {
        Some(existing) => {
            drop(waiting);
            let existing = Admission {
                task_id: existing,
                created_at,
                model,
                known: Known::Existing,
            };
            let remaining = wait.saturating_sub(started.elapsed());
            // Boxed: `outcome` calls this function.
            return Box::pin(outcome(state, existing, remaining)).await;
        }
        // Queued: the wait registered before the hand-over goes on (a second admission keeps
        // the task's id).
        None => match waited {
            Some(record) => record,
            None => waiting.await,
        },
    };
    state.metrics.tasks_accepted.inc();
    let record = record.map_err(store_error)?;
    let remaining = wait.saturating_sub(started.elapsed());
    let record = match record {
        // No record: the wait was woken to read the store (a subscription made anew) before
        // the admission had stored the task. It is stored now: wait on for the time left.
        None if !remaining.is_zero() => state
            .results_of(model)
            .wait(&task_id, remaining)
            .await
            .map_err(store_error)?,
        record => record,
    };
    let record = record.unwrap_or_else(|| TaskRecord::pending(created_at));
    Ok((task_id, record))
}

/// Runs every input of one front-door request as a task of its own (batched with every
/// other caller's) and waits for all of them: their outputs in input order, or the first
/// failure. The inputs are admitted together, so they reach the queue within one admission
/// round rather than one after another.
pub(crate) async fn run_all(
    state: &AppState,
    caller: &str,
    model: usize,
    inputs: Vec<String>,
) -> Result<Vec<Output>, ApiError> {
    for input in &inputs {
        check_input(state, input)?;
    }
    // N inputs take N of the caller's rate, as N requests to `/v1/inference` would.
    super::guard::charge_inputs(state, caller, inputs.len()).await?;
    let admissions = join_all(inputs.into_iter().map(|input| {
        let submission = Submission {
            input,
            timeout: None,
            dedupe_scope: None,
            waits: true,
            model,
        };
        admit(state, caller, submission)
    }))
    .await;
    // An input refused here fails the request; those admitted before it still run, and
    // their results expire unread.
    let admissions = admissions.into_iter().collect::<Result<Vec<_>, _>>()?;
    let wait = front_door_wait(state);
    let records = join_all(admissions.into_iter().map(|a| outcome(state, a, wait))).await;
    let mut outputs = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        let (_, record) = record?;
        match record.status {
            TaskStatus::Success => {
                outputs.push(record.output.unwrap_or(Output::Text(String::new())))
            }
            TaskStatus::Failed => {
                return Err(ApiError::InferenceFailed {
                    index,
                    reason: record.error.unwrap_or_default(),
                })
            }
            TaskStatus::Pending => {
                return Err(ApiError::ResultTimeout {
                    wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }
    Ok(outputs)
}

/// How long a front-door request waits for its results: as long as a long poll may, within
/// the request's own bound (so the answer is ours, not the timeout layer's).
fn front_door_wait(state: &AppState) -> Duration {
    let longest = Duration::from_millis(MAX_WAIT_MS);
    let within = state
        .config
        .request_timeout
        .saturating_sub(Duration::from_millis(500));
    longest.min(within)
}

/// A fresh unguessable id (UUID v4). With an input hash, its first byte is the hash's, so
/// the task lands in the partition of its dedupe entry (one slot on a Redis Cluster); the
/// other 15 bytes stay random.
fn new_task_id(input_sha256: Option<&str>) -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Uuid::new_v4().hyphenated().encode_lower(&mut text);
    if let Some(byte) = input_sha256.and_then(|h| h.as_bytes().get(..2)) {
        text[..2].copy_from_slice(byte);
    }
    // Hex digits and hyphens only: always UTF-8 (checked, which is cheaper than the lossy
    // reader on valid text).
    std::str::from_utf8(&text).map_or_else(
        |_| String::from_utf8_lossy(&text).into_owned(),
        str::to_owned,
    )
}
