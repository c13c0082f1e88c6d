//! A short version of the comparison with measurements (BENCHMARKS.md, "Agreement of the
//! simulator with measurements"): the simulator, with the bench's flags of each scenario,
//! lands within 10% of the measured medians for throughput, mean batch and p50, and within 20%
//! for p99. The measured medians are the ones BENCHMARKS.md records for the same commands
//! (`scripts/bench-policies.sh`, `scripts/bench-overload.sh`); the simulated windows here are
//! shorter (10 s instead of 30 s or 60 s).

use std::time::Duration;

use batchgate_bench::ArrivalKind;
use batchgate_gateway::ShedBound;
use batchgate_policy::{Adaptive, Rule};
use batchgate_simulate::args::simulate;
use batchgate_simulate::{Arrivals, Deployment, Load, WorkerModel};

struct Measured {
    name: &'static str,
    rule: Rule,
    rate: f64,
    slots: usize,
    shed: ShedBound,
    ok_per_sec: f64,
    p50: f64,
    p99: f64,
    /// `None` where BENCHMARKS.md gives no measured mean batch.
    mean_batch: Option<f64>,
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

#[test]
fn steady_and_overload_scenarios_agree_with_the_measured_medians() {
    let adaptive = Rule::Adaptive(Adaptive::default());
    let cases = [
        Measured {
            name: "steady 200/s fixed",
            rule: Rule::Fixed,
            rate: 200.0,
            slots: 40,
            shed: ShedBound::Off,
            ok_per_sec: 200.0,
            p50: 188.0,
            p99: 214.0,
            mean_batch: Some(10.5),
        },
        Measured {
            name: "steady 200/s adaptive",
            rule: adaptive,
            rate: 200.0,
            slots: 40,
            shed: ShedBound::Off,
            ok_per_sec: 200.0,
            p50: 159.0,
            p99: 166.0,
            mean_batch: Some(1.8),
        },
        Measured {
            name: "steady 8,000/s fixed",
            rule: Rule::Fixed,
            rate: 8000.0,
            slots: 40,
            shed: ShedBound::Off,
            ok_per_sec: 8000.0,
            p50: 210.0,
            p99: 257.0,
            mean_batch: Some(63.9),
        },
        Measured {
            name: "steady 8,000/s adaptive",
            rule: adaptive,
            rate: 8000.0,
            slots: 40,
            shed: ShedBound::Off,
            ok_per_sec: 8000.0,
            p50: 210.0,
            p99: 261.0,
            mean_batch: Some(63.1),
        },
        Measured {
            name: "overload 3x, shedding on",
            rule: Rule::Fixed,
            rate: 1920.0,
            slots: 2,
            shed: ShedBound::default(),
            ok_per_sec: 626.0,
            p50: 253.0,
            p99: 301.0,
            mean_batch: Some(63.6),
        },
    ];
    for m in cases {
        let deployment = Deployment {
            rule: m.rule,
            max_inflight_batches: m.slots,
            worker: WorkerModel {
                slots: m.slots,
                ..WorkerModel::default()
            },
            shed: m.shed,
            ..Deployment::default()
        };
        let load = Load {
            arrivals: Arrivals::Schedule {
                rate: m.rate,
                kind: ArrivalKind::Fixed,
                burst: None,
            },
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            seed: 1,
            max_in_flight: None,
        };
        let r = simulate(&deployment, &load).report;
        let latency = r.latency_ms.expect("ok requests");
        within(m.name, "ok/s", r.achieved_rate, m.ok_per_sec, 0.10);
        within(m.name, "p50", latency.p50, m.p50, 0.10);
        within(m.name, "p99", latency.p99, m.p99, 0.20);
        if let Some(measured) = m.mean_batch {
            let batch = r.server.delta.mean_batch_size.expect("batches");
            within(m.name, "mean batch", batch, measured, 0.10);
        }
    }
}
