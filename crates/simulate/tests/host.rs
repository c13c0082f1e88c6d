//! The machine's CPU and the client's limit on requests in flight, each against a bound that
//! follows from the model's own figures.

use std::time::Duration;

use batchgate_bench::ArrivalKind;
use batchgate_gateway::ShedBound;
use batchgate_simulate::args::simulate;
use batchgate_simulate::model::Host;
use batchgate_simulate::{Arrivals, Deployment, Load, WorkerModel};

fn deployment(host: Option<Host>) -> Deployment {
    Deployment {
        max_inflight_batches: 40,
        worker: WorkerModel {
            slots: 40,
            ..WorkerModel::default()
        },
        shed: ShedBound::Off,
        host,
        ..Deployment::default()
    }
}

fn load(rate: f64, secs: u64, max_in_flight: Option<u64>) -> Load {
    Load {
        arrivals: Arrivals::Schedule {
            rate,
            kind: ArrivalKind::Fixed,
            burst: None,
        },
        duration: Duration::from_secs(secs),
        warmup: Duration::ZERO,
        seed: 1,
        max_in_flight,
    }
}

#[test]
fn the_client_sends_no_more_than_its_limit_in_flight() {
    // 1,000/s for 5 s, each answered after at least a 150 ms call: about 200 would be in
    // flight, but the client holds at most 50, so it gets through at most 50 / 150 ms.
    let limit = 50;
    let r = simulate(&deployment(None), &load(1000.0, 5, Some(limit))).report;
    let refused = r.outcomes.get("client_overloaded").copied().unwrap_or(0);
    let ok = r.outcomes.get("ok").copied().unwrap_or(0);
    assert_eq!(r.sent + refused, 5000, "{:?}", r.outcomes);
    assert_eq!(
        ok, r.sent,
        "every request sent is answered: {:?}",
        r.outcomes
    );
    let most = limit as f64 / 0.150;
    assert!(
        r.achieved_rate > 0.0 && r.achieved_rate <= most,
        "{:.0} ok/s with {limit} in flight (at most {most:.0})",
        r.achieved_rate
    );
    // Without the limit, all are sent.
    let free = simulate(&deployment(None), &load(1000.0, 5, None)).report;
    assert_eq!(free.sent, 5000);
    assert!(!free.outcomes.contains_key("client_overloaded"));
}

#[test]
fn a_cpu_too_small_for_the_rate_makes_requests_wait_for_it() {
    // 1 core and 1 ms of CPU per request: 1,000 requests a second at most. At 2,000/s for 5 s
    // half of each second's requests are left over, so the last wait about 5 s for the CPU;
    // the worker (40 slots, 12,800/s) is not the limit.
    let host = Host {
        cores: 1.0,
        gateway_cpu: Duration::from_micros(500),
        client_cpu: Duration::from_micros(500),
        other_threads: 0.0,
    };
    let busy = simulate(&deployment(Some(host)), &load(2000.0, 5, None)).report;
    let idle = simulate(&deployment(None), &load(2000.0, 5, None)).report;
    let (busy_l, idle_l) = (
        busy.latency_ms.expect("answers"),
        idle.latency_ms.expect("answers"),
    );
    assert_eq!(
        busy.outcomes.get("ok"),
        Some(&10_000),
        "{:?}",
        busy.outcomes
    );
    assert!(idle_l.p99 < 300.0, "an idle CPU adds nothing: {idle_l:?}");
    assert!(
        busy_l.max > 4_500.0 && busy_l.p50 > 2_000.0,
        "the CPU's backlog shows in the latency: {busy_l:?}"
    );
}

#[test]
fn other_work_on_the_machine_takes_its_share_of_the_cores() {
    // 2 cores, 100 µs of CPU per request in each process: at 8,000/s each process needs 0.8
    // of a core, so alone on the machine neither waits. With 2 threads of other work as busy
    // as can be, the kernel gives each of the 6 runnable threads a third of a core: each
    // process gets 2/3 of a core for its 0.8, and falls behind by a sixth of a second every
    // second, so the last requests of 6 s wait about a second more than the first.
    let host = |other_threads| Host {
        cores: 2.0,
        gateway_cpu: Duration::from_micros(100),
        client_cpu: Duration::from_micros(100),
        other_threads,
    };
    let idle = simulate(&deployment(Some(host(0.0))), &load(8000.0, 6, None)).report;
    let shared = simulate(&deployment(Some(host(2.0))), &load(8000.0, 6, None)).report;
    let (idle_l, shared_l) = (
        idle.latency_ms.expect("answers"),
        shared.latency_ms.expect("answers"),
    );
    assert!(
        idle_l.p99 < 300.0,
        "alone on 2 cores nothing waits: {idle_l:?}"
    );
    assert!(
        shared_l.max > idle_l.max + 700.0 && shared_l.p50 > idle_l.p50 + 200.0,
        "a third of a core each is too little: {shared_l:?} against {idle_l:?}"
    );
    assert_eq!(
        shared.outcomes.get("ok"),
        Some(&48_000),
        "{:?}",
        shared.outcomes
    );
}
