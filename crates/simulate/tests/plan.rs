//! `batchgate plan` on the figures `docs/capacity.md` states.

use batchgate_simulate::PlanArgs;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: PlanArgs,
}

fn plan(flags: &[&str]) -> batchgate_simulate::plan::Plan {
    let argv = std::iter::once("plan").chain(flags.iter().copied());
    Cli::try_parse_from(argv)
        .expect("valid flags")
        .args
        .run()
        .expect("a plan")
}

#[test]
fn ten_thousand_a_second_at_500_ms_takes_32_workers() {
    let p = plan(&["--rate", "10000", "--p99-ms", "500"]);
    assert_eq!(
        (p.workers, p.batchers, p.gateways, p.redis_masters),
        (32, 2, 2, 3)
    );
    assert!(p.chosen.p99_ms < 500.0, "{:?}", p.chosen);
    // 32 slots of full batches carry 10,240/s: the floor, 2% above the rate.
    assert!(
        (p.capacity_headroom - 0.024).abs() < 0.001,
        "{}",
        p.capacity_headroom
    );
    // Every candidate met the objective at the slots it names.
    assert!(p.candidates.iter().all(|c| c.p99_ms < 500.0));
}

#[test]
fn cpu_bound_parts_scale_with_their_cost_and_small_plans_keep_two_pods_and_three_masters() {
    // 100,000/s at 70% of one core a pod: ⌈100,000 × 54 µs ÷ 0.7⌉ = 8 gateways,
    // ⌈1.9 ÷ 0.7⌉ = 3 batchers, ⌈3.0 ÷ 0.7⌉ = 5 masters.
    let p = plan(&["--rate", "100000", "--p99-ms", "500"]);
    assert_eq!((p.gateways, p.batchers, p.redis_masters), (8, 3, 5));
    // Twice the gateway's cost, twice the gateways; the others stay.
    let dear = plan(&["--rate", "100000", "--p99-ms", "500", "--gateway-us", "108"]);
    assert_eq!(
        (dear.gateways, dear.batchers, dear.redis_masters),
        (16, 3, 5)
    );
    // A rate one pod of each kind carries still gets two of each, so that one can die, and
    // the three masters a cluster needs to fail over.
    let small = plan(&["--rate", "1000", "--p99-ms", "500"]);
    assert_eq!(
        (small.gateways, small.batchers, small.redis_masters),
        (2, 2, 3)
    );
    assert_eq!(batchgate_simulate::plan::MIN_PODS, 2);
    assert_eq!(batchgate_simulate::plan::MIN_REDIS_MASTERS, 3);
}

#[test]
fn a_tighter_objective_never_takes_fewer_workers() {
    let loose = plan(&["--rate", "10000", "--p99-ms", "500"]);
    let tight = plan(&["--rate", "10000", "--p99-ms", "232"]);
    assert!(
        tight.workers > loose.workers,
        "{} vs {}",
        tight.workers,
        loose.workers
    );
    assert!(tight.chosen.p99_ms < 232.0, "{:?}", tight.chosen);
}
