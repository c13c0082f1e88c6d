//! A short version of the comparison with measurements (BENCHMARKS.md, "The simulator",
//! "Agreement with the measured runs"): the simulator, with the bench's flags of each scenario
//! and the measuring machine's CPU (2 cores shared by `serve` and `bench`, 55 and 72 µs per
//! request, the bench's 10,000 requests in flight at most), lands within 10% of the measured
//! medians for throughput, mean batch and p50, and within 20% for p99. The measured medians are
//! the ones BENCHMARKS.md records for the same commands (`scripts/bench-policies.sh`,
//! `scripts/bench-overload.sh`, measured together on a quiet machine); the windows are the
//! measured ones (30 s after a 3 s ramp: the mean batch counts the ramp's batches, as the
//! bench's scrapes do), but 20 s instead of 60 s for the overload.

use std::time::Duration;

use batchgate_bench::arrivals::Burst;
use batchgate_bench::ArrivalKind;
use batchgate_gateway::ShedBound;
use batchgate_policy::{Adaptive, Rule};
use batchgate_simulate::args::simulate;
use batchgate_simulate::model::Host;
use batchgate_simulate::{Arrivals, Deployment, Load, WorkerModel};

/// The measuring machine: `serve` and `bench` on the same two cores (BENCHMARKS.md).
const MEASURING_HOST: Host = Host {
    cores: 2.0,
    gateway_cpu: Duration::from_micros(55),
    client_cpu: Duration::from_micros(72),
    other_threads: 0.0,
};
/// `bench --max-connections` by default.
const BENCH_MAX_IN_FLIGHT: u64 = 10_000;

struct Measured {
    name: &'static str,
    rule: Rule,
    rate: f64,
    burst: Option<Burst>,
    slots: usize,
    shed: ShedBound,
    warmup: Duration,
    window: Duration,
    ok_per_sec: f64,
    p50: f64,
    p99: f64,
    mean_batch: f64,
}

fn within(name: &str, what: &str, simulated: f64, measured: f64, share: f64) {
    let off = (simulated - measured).abs() / measured;
    assert!(
        off <= share,
        "{name}: {what} simulated {simulated:.1} against measured {measured:.1} ({:.0}% off, \
         allowed {:.0}%)",
        off * 100.0,
        share * 100.0
    );
}

/// "2 s at 15,000/s every 10 s" (`scripts/bench-policies.sh`).
const BURSTS: Burst = Burst {
    rate: 15_000.0,
    length: Duration::from_secs(2),
    period: Duration::from_secs(10),
};

fn cases() -> Vec<Measured> {
    let adaptive = Rule::Adaptive(Adaptive::default());
    let policies = |rule: Rule| Measured {
        name: "",
        rule,
        rate: 0.0,
        burst: None,
        slots: 40,
        shed: ShedBound::Off,
        warmup: Duration::from_secs(3),
        window: Duration::from_secs(30),
        ok_per_sec: 0.0,
        p50: 0.0,
        p99: 0.0,
        mean_batch: 0.0,
    };
    let overload = |rule: Rule| Measured {
        slots: 2,
        shed: ShedBound::default(),
        warmup: Duration::from_secs(2),
        window: Duration::from_secs(20),
        rate: 1920.0,
        ..policies(rule)
    };
    vec![
        Measured {
            name: "steady 200/s fixed",
            rate: 200.0,
            ok_per_sec: 200.0,
            p50: 187.6,
            p99: 214.1,
            mean_batch: 10.5,
            ..policies(Rule::Fixed)
        },
        Measured {
            name: "steady 200/s adaptive",
            rate: 200.0,
            ok_per_sec: 200.0,
            p50: 159.0,
            p99: 163.7,
            mean_batch: 1.8,
            ..policies(adaptive)
        },
        Measured {
            name: "steady 8,000/s fixed",
            rate: 8000.0,
            ok_per_sec: 8000.0,
            p50: 208.4,
            p99: 215.4,
            mean_batch: 63.9,
            ..policies(Rule::Fixed)
        },
        Measured {
            name: "steady 8,000/s adaptive",
            rate: 8000.0,
            ok_per_sec: 8000.0,
            p50: 208.4,
            p99: 216.7,
            mean_batch: 63.1,
            ..policies(adaptive)
        },
        Measured {
            name: "bursts fixed",
            rate: 500.0,
            burst: Some(BURSTS),
            ok_per_sec: 3400.0,
            p50: 354.3,
            p99: 604.2,
            mean_batch: 53.8,
            ..policies(Rule::Fixed)
        },
        Measured {
            name: "bursts adaptive",
            rate: 500.0,
            burst: Some(BURSTS),
            ok_per_sec: 3400.0,
            p50: 357.9,
            p99: 610.8,
            mean_batch: 26.4,
            ..policies(adaptive)
        },
        Measured {
            name: "overload 3x fixed, shedding on",
            ok_per_sec: 625.0,
            p50: 251.5,
            p99: 297.7,
            mean_batch: 63.6,
            ..overload(Rule::Fixed)
        },
        Measured {
            name: "overload 3x adaptive, shedding on",
            ok_per_sec: 620.0,
            p50: 252.5,
            p99: 297.7,
            mean_batch: 63.7,
            ..overload(adaptive)
        },
    ]
}

#[test]
fn the_bench_scenarios_agree_with_the_measured_medians() {
    for m in cases() {
        let deployment = Deployment {
            rule: m.rule,
            max_inflight_batches: m.slots,
            worker: WorkerModel {
                slots: m.slots,
                ..WorkerModel::default()
            },
            shed: m.shed,
            host: Some(MEASURING_HOST),
            ..Deployment::default()
        };
        let load = Load {
            arrivals: Arrivals::Schedule {
                rate: m.rate,
                kind: ArrivalKind::Fixed,
                burst: m.burst,
            },
            duration: m.window,
            warmup: m.warmup,
            seed: 1,
            max_in_flight: Some(BENCH_MAX_IN_FLIGHT),
        };
        let r = simulate(&deployment, &load).report;
        let latency = r.latency_ms.expect("ok requests");
        let batch = r.server.delta.mean_batch_size.expect("batches");
        eprintln!(
            "{}: {:.0} ok/s, p50 {:.1} ms, p99 {:.1} ms, mean batch {:.1}",
            m.name, r.achieved_rate, latency.p50, latency.p99, batch
        );
        within(m.name, "ok/s", r.achieved_rate, m.ok_per_sec, 0.10);
        within(m.name, "p50", latency.p50, m.p50, 0.10);
        within(m.name, "p99", latency.p99, m.p99, 0.20);
        within(m.name, "mean batch", batch, m.mean_batch, 0.10);
    }
}
