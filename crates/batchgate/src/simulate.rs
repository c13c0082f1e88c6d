//! `batchgate simulate` and `batchgate plan`: print what `batchgate_simulate` computes.

use std::io::Write;

use anyhow::Context;
use batchgate_simulate::{PlanArgs, SimulateArgs};

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Runs a simulation; prints the report (JSON with `--json`) on stdout, its cost on stderr,
/// and writes the chart report if asked.
pub fn simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    let done = args.run()?;
    let secs = done.wall.as_secs_f64();
    eprintln!(
        "simulated {} requests ({} events) in {:.2} s of wall time: {:.0} events/s",
        done.outcome.requests,
        done.outcome.events,
        secs,
        done.outcome.events as f64 / secs.max(1e-9)
    );
    if let Some(path) = &args.report {
        let charts = batchgate_simulate::report::charts(&done, "batchgate simulate");
        batchgate_bench::chart::write(path, &charts)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    print(&format!("{}\n", done.report.render(args.json)))
}

/// Searches deployments and prints the cheapest (JSON with `--json`).
pub fn plan(args: &PlanArgs) -> anyhow::Result<()> {
    let plan = args.run()?;
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&plan)?))
    } else {
        print(&plan.to_string())
    }
}
