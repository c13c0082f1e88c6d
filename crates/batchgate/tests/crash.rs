//! A minute of open-loop load on the distributed deployment (separate processes on a real
//! redis-server: one simulated worker, two gateways, three batchers) while a batcher is
//! SIGKILLed every 5 s and a fresh one started in its place: no accepted task is lost, none
//! fails, every output is right, and the streams are empty at the end.
//!
//! `distributed.rs` kills one batcher once in 3 s of load; this is the long version.
//!
//! The rate follows the build. An optimized build (`cargo test --release`) sends the full
//! 1,500 requests/s, 90,000 in all. A debug build costs ~5 ms of CPU per request across the
//! processes (measured on 2 cores), so at 1,500/s it needs ~7 cores: the gateways' Redis
//! commands time out (redis-server itself idle), every client retries after its 503, and
//! goodput collapses into a retry storm. A debug build therefore sends 200/s, 12,000 in all,
//! on the same schedule and with the same kills.

mod common;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use batchgate_protocol::api::{ErrorBody, TaskStatus, TaskView};
use batchgate_protocol::sim_output;
use batchgate_testkit::RedisServer;
use common::{client, Proc};
use tokio::task::JoinSet;

/// Requests per second the load generator sends, whatever the answers (open loop); see the
/// module documentation for the debug build's.
const RATE: u64 = if cfg!(debug_assertions) { 200 } else { 1_500 };
/// How long the load runs.
const LOAD_SECS: u64 = 60;
/// Requests in all, each with its own input.
const TOTAL: u64 = RATE * LOAD_SECS;
/// A batcher is killed (and a fresh one started) this often while the load runs.
const KILL_EVERY: Duration = Duration::from_secs(5);
/// Batchers alive at once (but for the moment between a kill and its replacement).
const BATCHERS: usize = 3;
/// Bound on requests in flight (tasks in the `JoinSet`, each drained as it finishes), to keep
/// the test's memory and sockets bounded. At 1,500/s and ~0.2 s per task about 300 are open;
/// after a kill, the dead batcher's tasks wait out the 1.5 s visibility timeout, a few
/// thousand at most. Only past 4,000 would the generator wait for one to finish (and stop
/// being open-loop); the summary says how often it did.
const MAX_IN_FLIGHT: usize = 4_000;
/// Submissions of one request refused with 503 before the test counts it as refused.
const SUBMIT_ATTEMPTS: u32 = 10;
/// `wait_ms` of the synchronous submissions.
const SYNC_WAIT_MS: u64 = 2_000;
/// How long an accepted task may take to finish (a few seconds when all is well).
const TASK_DEADLINE: Duration = Duration::from_secs(60);
/// The whole scenario, start to end.
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// What became of one request.
enum Outcome {
    /// Accepted, then SUCCESS with the right output.
    Success {
        task_id: String,
        /// 503s before the submission was accepted.
        submit_refusals: u32,
        /// Answered 200 on an asynchronous retry: a submission answered 503 was admitted.
        admitted_despite_503: bool,
    },
    /// Refused (503) [`SUBMIT_ATTEMPTS`] times: never accepted, so not lost.
    Refused(String),
    /// Anything else: a lost, failed, wrong or stuck task, or an unexpected answer.
    Problem(String),
}

/// 503s seen, by where (`submit`/`poll`) and error code: refusals, retried.
#[derive(Default)]
struct Refusals(Mutex<BTreeMap<String, u64>>);

impl Refusals {
    /// Counts the 503 `response` and sleeps the pause it asks for; its body.
    async fn wait_out(&self, place: &str, response: reqwest::Response) -> String {
        let pause = retry_after(&response);
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<ErrorBody>(&body)
            .map(|b| b.error.code)
            .unwrap_or_else(|_| "(no error body)".into());
        *self
            .0
            .lock()
            .unwrap()
            .entry(format!("{place} {code}"))
            .or_default() += 1;
        tokio::time::sleep(pause).await;
        body
    }

    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}

/// The pause a 503 asks for (`Retry-After`, in seconds), 1 s if it names none.
fn retry_after(response: &reqwest::Response) -> Duration {
    let secs = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs)
}

/// Submits `input` through `gateway` (synchronously, with `?wait_ms=`, or not) and follows
/// the task to its end through `poll_via`, the other gateway.
async fn run_task(
    http: reqwest::Client,
    refusals: Arc<Refusals>,
    gateway: String,
    poll_via: String,
    input: String,
    sync: bool,
) -> Outcome {
    let submit_url = if sync {
        format!("{gateway}/v1/inference?wait_ms={SYNC_WAIT_MS}")
    } else {
        format!("{gateway}/v1/inference")
    };
    // A 503 with Retry-After is the gateway refusing the task (Redis slow on a loaded
    // machine, say), not losing it: like a real client, try again after the pause. Inputs
    // are distinct and dedupe is on, so a retry of a submission that was admitted after all
    // answers with the same task.
    let mut submit_refusals = 0;
    let response = loop {
        let response = match http
            .post(&submit_url)
            .json(&serde_json::json!({ "input": input }))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Problem(format!("{input}: submission not answered: {e}")),
        };
        if response.status() != 503 {
            break response;
        }
        submit_refusals += 1;
        let body = refusals.wait_out("submit", response).await;
        if submit_refusals == SUBMIT_ATTEMPTS {
            return Outcome::Refused(format!("{input}: refused {submit_refusals} times: {body}"));
        }
    };
    let status = response.status();
    if status != 200 && status != 202 {
        let body = response.text().await.unwrap_or_default();
        return Outcome::Problem(format!("{input}: submission answered {status}: {body}"));
    }
    // Without `wait_ms` a fresh task is answered 202. A 200 is a dedupe hit: an earlier
    // attempt answered 503 was admitted after all (the admission reached Redis, its answer
    // did not come back in time), and this retry found its task done.
    let admitted_despite_503 = !sync && status == 200;
    if admitted_despite_503 && submit_refusals == 0 {
        return Outcome::Problem(format!(
            "{input}: asynchronous submission answered {status}"
        ));
    }
    let mut view: TaskView = match response.json().await {
        Ok(v) => v,
        Err(e) => return Outcome::Problem(format!("{input}: {status} without a task view: {e}")),
    };
    let task_id = view.task_id.clone();
    let deadline = Instant::now() + TASK_DEADLINE;
    while !view.status.is_terminal() {
        if Instant::now() > deadline {
            return Outcome::Problem(format!(
                "{input} (task {task_id}): still pending {TASK_DEADLINE:?} after acceptance"
            ));
        }
        let response = match http
            .get(format!("{poll_via}/v1/result/{task_id}?wait_ms=10000"))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Problem(format!(
                    "{input} (task {task_id}): poll not answered: {e}"
                ))
            }
        };
        match response.status().as_u16() {
            200 => match response.json().await {
                Ok(v) => view = v,
                Err(e) => {
                    return Outcome::Problem(format!(
                        "{input} (task {task_id}): poll without a task view: {e}"
                    ))
                }
            },
            503 => {
                refusals.wait_out("poll", response).await;
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                return Outcome::Problem(format!(
                    "{input} (task {task_id}): poll answered {status}: {body}"
                ));
            }
        }
    }
    if view.task_id != task_id
        || view.status != TaskStatus::Success
        || view.output.as_deref() != Some(sim_output(&input).as_str())
    {
        return Outcome::Problem(format!(
            "{input} (task {task_id}): ended {:?}, error {:?}, output {:?} (task id {})",
            view.status, view.error, view.output, view.task_id
        ));
    }
    Outcome::Success {
        task_id,
        submit_refusals,
        admitted_despite_503,
    }
}

/// The outcomes, counted as they come in.
#[derive(Default)]
struct Tally {
    accepted: u64,
    retried_then_accepted: u64,
    admitted_despite_503: u64,
    task_ids: HashSet<String>,
    refused: Vec<String>,
    problems: Vec<String>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success {
                task_id,
                submit_refusals,
                admitted_despite_503,
            } => {
                self.accepted += 1;
                self.retried_then_accepted += u64::from(submit_refusals > 0);
                self.admitted_despite_503 += u64::from(admitted_despite_503);
                if !self.task_ids.insert(task_id.clone()) {
                    self.problems
                        .push(format!("task {task_id} answered two distinct inputs"));
                }
            }
            Outcome::Refused(why) => self.refused.push(why),
            Outcome::Problem(why) => self.problems.push(why),
        }
    }
}

/// What the batchers' logs told: entries their claimers took over from a dead batcher
/// (redeliveries), and entries dead-lettered.
#[derive(Default)]
struct BatcherLogs {
    claimed: AtomicU64,
    dead_lettered: AtomicU64,
}

/// `batchgate batcher …` like [`Proc::start`], reading its log for [`BatcherLogs`] as well.
fn start_batcher(args: &[&str], logs: &Arc<BatcherLogs>) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn batchgate batcher");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = logs.clone();
    std::thread::spawn(move || {
        let echo = std::env::var_os("BATCHGATE_TEST_LOGS").is_some();
        // Keep reading to the end so the child never blocks on a full pipe.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("{line}");
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
            if line.contains("claimed entries left by a batcher that is gone") {
                let n = line
                    .split(" claimed=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0);
                logs.claimed.fetch_add(n, Ordering::Relaxed);
            }
            if line.contains("task dead-lettered") {
                logs.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("batcher did not report its address");
    Proc { child, url }
}

/// The batchers, and a thread that SIGKILLs the oldest every [`KILL_EVERY`] and starts a
/// fresh one in its place. Dropping it stops the thread; the batchers die with the last
/// reference to them.
struct Chaos {
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    batchers: Arc<Mutex<VecDeque<Proc>>>,
}

impl Chaos {
    fn start(batchers: VecDeque<Proc>, start: impl Fn() -> Proc + Send + 'static) -> Chaos {
        let stop = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicU64::new(0));
        let batchers = Arc::new(Mutex::new(batchers));
        let thread = {
            let (stop, kills, batchers) = (stop.clone(), kills.clone(), batchers.clone());
            std::thread::spawn(move || {
                let mut next = Instant::now() + KILL_EVERY;
                while !stop.load(Ordering::SeqCst) {
                    if Instant::now() >= next {
                        let victim = batchers.lock().unwrap().pop_front();
                        if let Some(mut victim) = victim {
                            // SIGKILL, mid-batch: no drain, no acknowledgement.
                            let _ = victim.child.kill();
                            let _ = victim.child.wait();
                            kills.fetch_add(1, Ordering::SeqCst);
                        }
                        let fresh = start();
                        batchers.lock().unwrap().push_back(fresh);
                        next += KILL_EVERY;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Chaos {
            stop,
            kills,
            thread: Some(thread),
            batchers,
        }
    }

    /// Stops the killing (the batchers stay up); how many were killed.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        self.kills.load(Ordering::SeqCst)
    }

    fn alive(&self) -> usize {
        self.batchers.lock().unwrap().len()
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        // Join before the batchers go, so none is started after they were killed.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Entries in the task streams (`XLEN` of every `batchgate:*:tasks`) and the dead-letter
/// stream.
fn stream_lengths(redis: &RedisServer) -> (usize, usize) {
    let xlen = |key: &str| {
        redis
            .cli(&["XLEN", key])
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let waiting = redis
        .cli(&["--scan", "--pattern", "batchgate:*:tasks"])
        .unwrap_or_default()
        .lines()
        .map(xlen)
        .sum();
    (waiting, xlen("batchgate:dlq"))
}

/// `batchgate_worker_items_total` of the worker: inputs it has run, re-runs included.
async fn worker_items(http: &reqwest::Client, worker: &str) -> Option<u64> {
    let text = http
        .get(format!("{worker}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("batchgate_worker_items_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batchers_killed_every_5s_under_a_minute_of_load_lose_no_accepted_task() {
    tokio::time::timeout(TEST_LIMIT, scenario())
        .await
        .unwrap_or_else(|_| panic!("the crash test did not finish within {TEST_LIMIT:?}"));
}

async fn scenario() {
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let worker = Proc::sim_worker(16, 100);
    // Shedding off: this test is about recovery; refusals are retried and counted.
    let gateways: Vec<Proc> = (0..2)
        .map(|_| {
            Proc::start(&[
                "gateway",
                "--insecure-no-auth",
                "--listen",
                "127.0.0.1:0",
                "--redis",
                &redis_url,
                "--visibility-timeout-ms",
                "1500",
                "--shed-wait-ms",
                "0",
            ])
        })
        .collect();
    let logs = Arc::new(BatcherLogs::default());
    let start = {
        let (redis_url, worker_url, logs) = (redis_url.clone(), worker.url.clone(), logs.clone());
        move || {
            start_batcher(
                &[
                    "batcher",
                    "--listen",
                    "127.0.0.1:0",
                    "--redis",
                    &redis_url,
                    "--worker-url",
                    &worker_url,
                    "--visibility-timeout-ms",
                    "1500",
                ],
                &logs,
            )
        }
    };
    let batchers: VecDeque<Proc> = (0..BATCHERS).map(|_| start()).collect();

    let http = client();
    let refusals = Arc::new(Refusals::default());
    let sent = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut tally = Tally::default();
    let mut throttled = 0u64;
    let mut most_behind = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut chaos = Chaos::start(batchers, start);
    let started = Instant::now();
    // Every 5 s, where the run is: a stall shows in the log before the time bound hits.
    let progress = tokio::spawn({
        let (sent, finished) = (sent.clone(), finished.clone());
        let (kills, logs, refusals) = (chaos.kills.clone(), logs.clone(), refusals.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            every.tick().await;
            loop {
                every.tick().await;
                let (sent, finished) = (
                    sent.load(Ordering::Relaxed),
                    finished.load(Ordering::Relaxed),
                );
                eprintln!(
                    "crash test at {:>5.1?}: sent {sent}, finished {finished}, in flight {}, \
                     kills {}, redelivered {}, 503s {}",
                    started.elapsed(),
                    sent - finished,
                    kills.load(Ordering::Relaxed),
                    logs.claimed.load(Ordering::Relaxed),
                    refusals.total(),
                );
            }
        }
    });
    // At the first problem the run stops: it has failed, and its first problem says why.
    let mut i = 0u64;
    'load: while i < TOTAL {
        tick.tick().await;
        // Open loop: what is due by now is sent now (a small group a tick), behind or not.
        let elapsed_us = started.elapsed().as_micros() as u64;
        let due = (elapsed_us * RATE / 1_000_000 + 1).min(TOTAL);
        most_behind = most_behind.max(due - i);
        while i < due {
            if tasks.len() >= MAX_IN_FLIGHT {
                throttled += 1;
                if let Some(done) = tasks.join_next().await {
                    tally.add(done.expect("task panicked"));
                }
                if !tally.problems.is_empty() {
                    break 'load;
                }
                continue;
            }
            // Alternate gateways, sync and async on each; poll through the other one.
            let (submit, poll) = (i as usize % 2, (i as usize + 1) % 2);
            let sync = (i / 2) % 2 == 0;
            let task = run_task(
                http.clone(),
                refusals.clone(),
                gateways[submit].url.clone(),
                gateways[poll].url.clone(),
                format!("crash test task {i}"),
                sync,
            );
            let finished = finished.clone();
            tasks.spawn(async move {
                let outcome = task.await;
                finished.fetch_add(1, Ordering::Relaxed);
                outcome
            });
            i += 1;
            sent.store(i, Ordering::Relaxed);
        }
        while let Some(done) = tasks.try_join_next() {
            tally.add(done.expect("task panicked"));
        }
        if !tally.problems.is_empty() {
            break;
        }
    }
    let load_took = started.elapsed();
    let kills = tokio::task::block_in_place(|| chaos.stop());
    let alive = chaos.alive();
    let mut abandoned = 0u64;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(outcome) => tally.add(outcome),
            Err(e) if e.is_cancelled() => abandoned += 1,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
        if !tally.problems.is_empty() {
            tasks.abort_all();
        }
    }
    let all_took = started.elapsed();
    progress.abort();

    // Redelivered entries may have run twice; that is allowed, losing one is not. A batcher
    // killed after storing a batch's results but before acknowledging it leaves entries that
    // are claimed and acknowledged 1.5 s later: give the streams a moment to drain.
    let drain_deadline = Instant::now() + Duration::from_secs(15);
    let (waiting, dead_letters) = loop {
        let (waiting, dead) = tokio::task::block_in_place(|| stream_lengths(&redis));
        if waiting == 0 || Instant::now() > drain_deadline {
            break (waiting, dead);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let executed = worker_items(&http, &worker.url).await;

    let Tally {
        accepted,
        retried_then_accepted,
        admitted_despite_503,
        task_ids,
        refused,
        problems,
    } = tally;
    eprintln!(
        "crash test: {i} of {TOTAL} requests at {RATE}/s sent in {load_took:.1?} (at most \
         {most_behind} behind; waited for one in flight to finish {throttled} times), all \
         finished after {all_took:.1?} ({abandoned} abandoned after a problem); {kills} batchers SIGKILLed and replaced ({alive} alive at the \
         end); accepted and SUCCESS {accepted}; refused then retried and accepted \
         {retried_then_accepted}; 503s by code {:?}; {admitted_despite_503} async retries found \
         their task admitted by the attempt answered 503; refused for good {}; problems {}; \
         entries redelivered (claimed from a dead batcher) {}; dead-lettered {} (log) / \
         {dead_letters} (stream); inputs run by the worker {} ({} runs beyond one per accepted \
         task); entries left in the task streams {waiting}",
        refusals.0.lock().unwrap(),
        refused.len(),
        problems.len(),
        logs.claimed.load(Ordering::Relaxed),
        logs.dead_lettered.load(Ordering::Relaxed),
        executed.map_or("?".into(), |n| n.to_string()),
        executed.map_or("?".into(), |n| n.saturating_sub(accepted).to_string()),
    );
    for why in problems.iter().chain(&refused).take(20) {
        eprintln!("  {why}");
    }

    assert!(
        problems.is_empty(),
        "{} accepted tasks lost, failed or stuck; first: {}",
        problems.len(),
        problems[0]
    );
    assert!(
        refused.is_empty(),
        "{} requests refused {SUBMIT_ATTEMPTS} times; first: {}",
        refused.len(),
        refused[0]
    );
    assert_eq!(accepted, TOTAL, "every request accepted and SUCCESS");
    assert_eq!(task_ids.len() as u64, TOTAL, "one task per distinct input");
    assert!(
        kills >= LOAD_SECS / KILL_EVERY.as_secs() - 1,
        "only {kills} batchers were killed"
    );
    assert_eq!(alive, BATCHERS, "a fresh batcher replaced each killed one");
    assert_eq!(dead_letters, 0, "nothing dead-lettered");
    assert_eq!(waiting, 0, "acknowledged entries leave the streams");
    // The load generator must have kept (roughly) to its schedule, or the test measured
    // something gentler than it says.
    assert!(
        load_took < Duration::from_secs(LOAD_SECS + 15),
        "load generation fell far behind: {load_took:?}"
    );
}
