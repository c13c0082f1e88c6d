//! The faults, driven on the model directly in paused time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};

use super::*;
use crate::{SimConfig, SimError, SimWorker};

/// `slots` slots, 100 ms a call whatever its size.
fn worker(slots: usize, faults: Faults) -> Arc<SimWorker> {
    let config = SimConfig {
        slots,
        base: Duration::from_millis(100),
        per_item: Duration::ZERO,
        max_batch_size: 64,
    };
    Arc::new(SimWorker::new(config).with_faults(faults))
}

fn one() -> Vec<String> {
    vec!["x".into()]
}

/// Starts a call in the background and lets it reach its first wait.
async fn spawn_call(w: &Arc<SimWorker>) -> tokio::task::JoinHandle<Result<Vec<String>, SimError>> {
    let w = w.clone();
    let call = tokio::spawn(async move { w.run_batch(&one()).await });
    tokio::task::yield_now().await;
    call
}

#[test]
fn a_seed_fixes_the_fates_and_rates_hold_roughly() {
    let faults = Faults {
        slow_rate: 0.5,
        hang_rate: 0.1,
        error_rate: 1.0,
        seed: Some(7),
        ..Faults::default()
    };
    let a: Vec<Fate> = (0..1000)
        .map({
            let dice = Dice::new(&faults);
            move |_| dice.roll()
        })
        .collect();
    let b: Vec<Fate> = (0..1000)
        .map({
            let dice = Dice::new(&faults);
            move |_| dice.roll()
        })
        .collect();
    assert_eq!(a, b);
    let slow = a.iter().filter(|f| f.slow).count();
    let hung = a.iter().filter(|f| f.hang).count();
    assert!((400..600).contains(&slow), "{slow} slow of 1000");
    assert!((50..150).contains(&hung), "{hung} hung of 1000");
    assert!(a.iter().all(|f| f.fail), "rate 1 always fails");
    assert!(
        (0..1000).all(|_| Dice::new(&Faults::default()).roll() == Fate::default()),
        "rate 0 never fires"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_take_slow_factor_times_their_cost_and_are_counted() {
    let w = worker(
        1,
        Faults {
            slow_rate: 1.0,
            slow_factor: 10.0,
            ..Faults::default()
        },
    );
    let start = Instant::now();
    w.run_batch(&one()).await.expect("runs");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let stats = w.stats();
    assert_eq!((stats.calls, stats.calls_slow), (1, 1));
    assert_eq!(stats.busy_seconds, 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_is_cut_by_the_callers_timeout_and_holds_no_slot() {
    let w = worker(
        1,
        Faults {
            hang_rate: 1.0,
            ..Faults::default()
        },
    );
    let cut = timeout(Duration::from_secs(30), w.run_batch(&one())).await;
    assert!(cut.is_err(), "a hung call never answers: {cut:?}");

    // Hung calls take no slot: many of them leave the worker idle.
    let hung: Vec<_> = spawn_calls(&w, 5).await;
    let stats = w.stats();
    assert_eq!((stats.calls_hung, stats.in_flight, stats.calls), (6, 0, 0));
    assert_eq!(stats.busy_seconds, 0.0);

    // At shutdown they end, so the drain does not wait for them forever.
    w.stop_hanging();
    for call in hung {
        assert_eq!(call.await.expect("join"), Err(SimError::Stopping));
    }
    assert_eq!(w.run_batch(&one()).await, Err(SimError::Stopping));
}

async fn spawn_calls(
    w: &Arc<SimWorker>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<Vec<String>, SimError>>> {
    let mut calls = Vec::new();
    for _ in 0..n {
        calls.push(spawn_call(w).await);
    }
    calls
}

#[tokio::test(start_paused = true)]
async fn a_full_wait_queue_refuses_at_once_and_a_gone_waiter_frees_its_place() {
    let w = worker(
        1,
        Faults {
            max_queued_calls: Some(1),
            ..Faults::default()
        },
    );
    let running = spawn_call(&w).await;
    let waiting = spawn_call(&w).await;
    assert_eq!(w.stats().in_flight, 1);
    let start = Instant::now();
    assert_eq!(
        w.run_batch(&one()).await,
        Err(SimError::Overloaded {
            slots: 1,
            queued: 1
        })
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
    assert_eq!(
        SimError::Overloaded {
            slots: 1,
            queued: 1
        }
        .status(),
        429
    );

    // The waiter gives up: its place is free again.
    waiting.abort();
    let _ = waiting.await;
    let queued = spawn_call(&w).await;
    running.await.expect("join").expect("runs");
    queued.await.expect("join").expect("runs");
    let stats = w.stats();
    assert_eq!((stats.calls, stats.calls_rejected_overload), (2, 1));
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn no_queue_limit_means_calls_wait_and_zero_means_never_wait() {
    let unbounded = worker(1, Faults::default());
    let calls = spawn_calls(&unbounded, 10).await;
    for call in calls {
        call.await.expect("join").expect("waits its turn");
    }
    assert_eq!(unbounded.stats().calls_rejected_overload, 0);

    let no_queue = worker(
        1,
        Faults {
            max_queued_calls: Some(0),
            ..Faults::default()
        },
    );
    let running = spawn_call(&no_queue).await;
    assert!(matches!(
        no_queue.run_batch(&one()).await,
        Err(SimError::Overloaded { .. })
    ));
    running.await.expect("join").expect("runs");
    no_queue
        .run_batch(&one())
        .await
        .expect("a slot is free again");
}

#[tokio::test(start_paused = true)]
async fn injected_failures_spend_their_time_and_are_counted() {
    let w = worker(
        2,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    assert_eq!(w.run_batch(&one()).await, Err(SimError::Injected));
    let stats = w.stats();
    assert_eq!((stats.calls, stats.calls_failed_injected), (0, 1));
    assert_eq!(stats.busy_seconds, 0.1);
}

#[tokio::test(start_paused = true)]
async fn busy_seconds_add_up_over_slots_including_cancelled_calls() {
    let w = worker(2, Faults::default());
    let whole = spawn_call(&w).await;
    // A call whose caller gives up half-way frees its slot and counts the time it held.
    let cut = timeout(Duration::from_millis(50), w.run_batch(&one())).await;
    assert!(cut.is_err());
    assert_eq!(w.stats().in_flight, 1);
    whole.await.expect("join").expect("runs");
    let stats = w.stats();
    assert_eq!((stats.in_flight, stats.calls), (0, 1));
    assert!(
        (stats.busy_seconds - 0.15).abs() < 1e-9,
        "100 ms of one slot and 50 ms of the other: {stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn after_crash_after_calls_the_worker_crashes_and_answers_nothing_more() {
    let config = SimConfig {
        slots: 2,
        base: Duration::from_millis(100),
        per_item: Duration::from_millis(10),
        max_batch_size: 64,
    };
    let w = Arc::new(SimWorker::new(config).with_faults(Faults {
        crash_after: Some(2),
        ..Faults::default()
    }));
    w.run_batch(&one()).await.expect("first answers");
    let crashed = {
        let w = w.clone();
        tokio::spawn(async move { w.crashed().await })
    };
    // Two at once: the shorter finishes first, is call 2 and answers; the other is past the
    // crash.
    let (short, long) = (one(), vec!["y".to_owned(), "z".to_owned()]);
    let (second, third) = tokio::join!(
        w.run_batch(&short),
        timeout(Duration::from_secs(30), w.run_batch(&long))
    );
    second.expect("the crash_after-th call answers");
    assert!(third.is_err(), "a call running at the crash never answers");
    crashed.await.expect("crashed() resolved");
    assert!(timeout(Duration::from_secs(30), w.run_batch(&one()))
        .await
        .is_err());
}
