//! What a simulation prints: its report in the bench's shape, and its charts.

use batchgate_bench::report::{RunConfig, ServerReport};
use batchgate_bench::{Report, ServerDelta, Totals, WorkerBusy};

use crate::args::Simulated;
use crate::engine::Outcome;
use crate::model::{Arrivals, Deployment, Load};

/// The bench-shaped report of a simulation.
pub fn report(deployment: &Deployment, load: &Load, outcome: &Outcome) -> Report {
    let (rate, kind, burst) = match &load.arrivals {
        Arrivals::Schedule { rate, kind, burst } => (Some(*rate), Some(*kind), *burst),
        Arrivals::Trace(_) => (None, None, None),
    };
    let config = RunConfig {
        url: "simulated".to_owned(),
        mode: "open",
        rate,
        burst_rate: burst.map(|b| b.rate),
        burst_secs: burst.map(|b| b.length.as_secs_f64()),
        burst_every_secs: burst.map(|b| b.period.as_secs_f64()),
        burst_mean_rate: burst.zip(rate).map(|(b, r)| b.mean_rate(r)),
        arrivals: kind,
        concurrency: None,
        duration_secs: load.duration.as_secs_f64(),
        warmup_secs: load.warmup.as_secs_f64(),
        input_bytes: 0,
        unique_ratio: 1.0,
        wait_ms: 30_000,
        timeout_ms: 60_000,
        max_connections: load
            .max_in_flight
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        seed: load.seed,
        check: false,
        worker_slots: outcome.total_slots,
        api: batchgate_bench::args::Api::Inference,
        inputs_per_request: 1,
        model: None,
    };
    let window = load.duration.as_secs_f64();
    let busy_slots = outcome.worker_call_seconds / window;
    let server = ServerReport {
        delta: ServerDelta {
            batches: Some(outcome.batches),
            mean_batch_size: (outcome.batches > 0)
                .then(|| outcome.batched_items as f64 / outcome.batches as f64),
            flushes: outcome
                .flushes
                .iter()
                .map(|(reason, n)| ((*reason).to_owned(), *n))
                .collect(),
            resident_memory_bytes: None,
        },
        worker_busy: Some(WorkerBusy {
            worker_busy_window_secs: window,
            worker_call_seconds: outcome.worker_call_seconds,
            worker_busy_slots: busy_slots,
            worker_busy_fraction: busy_slots
                / deployment.worker.slots.max(1) as f64
                / deployment.batchers.max(1) as f64,
        }),
        scrape_error: None,
    };
    Report::new(
        config,
        Totals {
            sent: outcome.sent,
            outcomes: outcome.outcomes.clone(),
            latency_us: outcome.latency_us.clone(),
        },
        server,
    )
}

/// The charts of a simulation (`--report`).
pub fn charts(done: &Simulated, title: &str) -> batchgate_bench::chart::Charts {
    let out = &done.outcome;
    let step = out.point_secs as f64;
    let measured = out.measured.as_secs_f64();
    let points = out
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64 * step, p))
        .filter(|(t, _)| *t < measured);
    let latency = points
        .clone()
        .filter(|(_, p)| !p.latency_us.is_empty())
        .map(|(t, p)| {
            (
                t,
                p.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
                p.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            )
        })
        .collect();
    let throughput = points
        .map(|(t, p)| (t, p.ok as f64 / step, p.shed as f64 / step))
        .collect();
    let batch_sizes = out
        .batch_sizes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(size, n)| {
            let size = u32::try_from(size).unwrap_or(u32::MAX);
            (size, size, *n)
        })
        .collect();
    let r = &done.report;
    let summary = match &r.latency_ms {
        Some(l) => format!(
            "{:.0} ok/s, {} errors ({} shed), p50 {:.1} ms, p99 {:.1} ms, mean batch {:.1}",
            r.achieved_rate,
            r.errors,
            r.outcomes.get("http_503:overloaded").copied().unwrap_or(0),
            l.p50,
            l.p99,
            r.server.delta.mean_batch_size.unwrap_or(0.0)
        ),
        None => format!("{} sent, none ok", r.sent),
    };
    batchgate_bench::chart::Charts {
        title: title.to_owned(),
        summary,
        latency,
        cdf: batchgate_bench::chart::cdf_of(&out.latency_us),
        batch_sizes,
        throughput,
    }
}
