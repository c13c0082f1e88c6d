use super::*;
use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn parse(flags: &[&str]) -> Result<BenchArgs, clap::Error> {
    let argv = std::iter::once("bench").chain(flags.iter().copied());
    Cli::try_parse_from(argv).map(|cli| cli.args)
}

#[test]
fn defaults_apply() {
    let args = parse(&["--rate", "100"]).expect("valid flags");
    assert_eq!(args.url, DEFAULT_URL);
    assert_eq!(args.duration, Duration::from_secs(30));
    assert_eq!(args.warmup, Duration::ZERO);
    assert_eq!(args.input_bytes, DEFAULT_INPUT_BYTES);
    assert_eq!(args.arrivals, ArrivalKind::Fixed);
    assert_eq!(args.seed, DEFAULT_SEED);
    let config = args.validate().expect("valid config");
    assert_eq!(
        config.mode,
        Mode::Open {
            rate: 100.0,
            arrivals: ArrivalKind::Fixed,
            burst: None,
        }
    );
    assert!(config.check);
    assert_eq!(config.worker_slots, DEFAULT_WORKER_SLOTS);
}

#[test]
fn exactly_one_of_rate_and_concurrency() {
    assert!(parse(&[]).is_err());
    assert!(parse(&["--rate", "10", "--concurrency", "2"]).is_err());
    let args = parse(&["--concurrency", "8", "--duration", "2m"]).expect("valid flags");
    assert_eq!(args.duration, Duration::from_secs(120));
    let config = args.validate().expect("valid config");
    assert_eq!(config.mode, Mode::Closed { concurrency: 8 });
}

#[test]
fn arrivals_only_with_rate() {
    assert!(parse(&["--concurrency", "2", "--arrivals", "poisson"]).is_err());
    let args = parse(&["--rate", "5", "--arrivals", "poisson"]).expect("valid flags");
    assert_eq!(args.arrivals, ArrivalKind::Poisson);
}

#[test]
fn validation_rejects_nonsense() {
    for flags in [
        &["--rate", "0"][..],
        &["--rate=-3"],
        &["--rate", "10", "--unique-ratio", "1.5"],
        &["--rate", "10", "--input-bytes", "3"],
        &["--rate", "10", "--duration", "0s"],
        &["--rate", "10", "--url", "ftp://x"],
        &["--concurrency", "10", "--max-connections", "4"],
        &["--rate", "10", "--worker-slots", "0"],
    ] {
        let args = parse(flags).expect("clap accepts each flag alone");
        assert!(
            matches!(args.validate(), Err(BenchError::InvalidArgs(_))),
            "{flags:?}"
        );
    }
    assert!(parse(&["--rate", "10", "--duration", "soon"]).is_err());
}
