//! `batchgate simulate` and `batchgate plan`: print what `batchgate_simulate` computes.

use anyhow::Context;
use batchgate_simulate::{PlanArgs, SimulateArgs};

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
        let charts = batchgate_simulate::args::charts(&done, "batchgate simulate");
        batchgate_bench::chart::write(path, &charts)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    println!("{}", done.report.render(args.json));
    Ok(())
}

/// Searches deployments and prints the cheapest (JSON with `--json`).
pub fn plan(args: &PlanArgs) -> anyhow::Result<()> {
    let plan = args.run()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{plan}");
    }
    Ok(())
}
