//! The two load loops: open (a schedule of send times) and closed (clients in a send-wait loop).
//!
//! Both spawn their requests on a [`TaskTracker`] and return it closed: the caller waits on it
//! to drain what is still in flight. Both stop issuing at the end of the window, and every
//! request is bounded by its own timeout, so the drain is bounded too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::args::Config;
use crate::arrivals::Schedule;
use crate::client::Client;
use crate::inputs::Inputs;
use crate::outcome::Outcome;
use crate::record::Recorder;

/// While catching up (the scheduler behind its schedule), yield to the runtime after this
/// many requests without a sleep, so the requests it spawned get to run on a busy machine.
const CATCH_UP_BEFORE_YIELD: u32 = 64;

/// What both loops share. Cloning is shallow.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) client: Arc<Client>,
    pub(crate) recorder: Arc<Recorder>,
    /// When the run began: time zero of the schedule.
    pub(crate) start: Instant,
    /// Requests due (open) or sent (closed) before this are warmup and are not recorded.
    pub(crate) measure_from: Instant,
    /// Nothing is issued at or after this.
    pub(crate) end: Instant,
}

impl Load {
    pub(crate) fn new(client: Client, recorder: Arc<Recorder>, config: &Config) -> Load {
        let start = Instant::now();
        let measure_from = start + config.warmup;
        Load {
            client: Arc::new(client),
            recorder,
            start,
            measure_from,
            end: measure_from + config.duration,
        }
    }
}

/// Open loop: sends each request at its intended time from the schedule, whatever the server
/// does. Latency counts from the intended time, so a stall (of the server or of this process)
/// shows in the latency instead of hiding as a lower send rate (coordinated omission). If the
/// loop falls behind it sends what is due at once; it never skips a request. At most
/// `max_connections` are in flight: a request due when none is free is `client_overloaded`.
/// The schedule carries the warmup ramp and any bursts of the rate.
///
/// Tokio's timer ticks in milliseconds, so above ~1,000/s requests leave in small bursts, each
/// up to a millisecond after its intended time; that lateness is in the latency, as it should.
pub(crate) async fn open_loop(
    load: &Load,
    config: &Config,
    mut schedule: Schedule,
    mut inputs: Inputs,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let mut catching_up = 0;
    loop {
        let intended = load.start + schedule.next_offset();
        if intended >= load.end {
            break;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
            catching_up = 0;
        } else {
            catching_up += 1;
            if catching_up % CATCH_UP_BEFORE_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
        let measured = intended >= load.measure_from;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            load.recorder
                .record(Outcome::ClientOverloaded, Duration::ZERO, measured);
            continue;
        };
        let request = inputs.next_request(config.inputs_per_request);
        let client = Arc::clone(&load.client);
        let recorder = Arc::clone(&load.recorder);
        recorder.sent(measured);
        tracker.spawn(async move {
            let outcome = client.call(&request).await;
            recorder.record(outcome, intended.elapsed(), measured);
            drop(permit);
        });
    }
    tracker.close();
    tracker
}

/// Closed loop: `concurrency` clients, each sending its next request as soon as its last one
/// ended, until the end of the window. Latency counts from the actual send.
pub(crate) fn closed_loop(
    load: &Load,
    concurrency: usize,
    inputs_per_request: usize,
    inputs: Inputs,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    // Shared by the clients; the lock is held only to make one input (about a microsecond).
    let inputs = Arc::new(Mutex::new(inputs));
    for _ in 0..concurrency {
        let load = load.clone();
        let inputs = Arc::clone(&inputs);
        tracker.spawn(async move {
            loop {
                let sent_at = Instant::now();
                if sent_at >= load.end {
                    break;
                }
                let measured = sent_at >= load.measure_from;
                let request = inputs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .next_request(inputs_per_request);
                load.recorder.sent(measured);
                let outcome = load.client.call(&request).await;
                load.recorder.record(outcome, sent_at.elapsed(), measured);
            }
        });
    }
    tracker.close();
    tracker
}
