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

/// The reason `validate` gives for `flags`, which clap accepts.
fn rejection(flags: &[&str]) -> String {
    let args = parse(flags).expect("clap accepts each flag alone");
    match args.validate() {
        Err(BenchError::InvalidArgs(reason)) => reason,
        other => panic!("{flags:?} gave {other:?}"),
    }
}

#[test]
fn the_issue_example_is_a_burst_profile() {
    let flags = [
        "--rate",
        "500",
        "--burst-rate",
        "15000",
        "--burst-secs",
        "2",
        "--burst-every",
        "10",
        "--arrivals",
        "poisson",
    ];
    let config = parse(&flags)
        .expect("valid flags")
        .validate()
        .expect("valid config");
    assert_eq!(
        config.mode,
        Mode::Open {
            rate: 500.0,
            arrivals: ArrivalKind::Poisson,
            burst: Some(Burst {
                rate: 15_000.0,
                length: Duration::from_secs(2),
                period: Duration::from_secs(10),
            }),
        }
    );
}

#[test]
fn burst_flags_come_together_and_only_with_rate() {
    let needs = "--burst-rate needs --burst-secs and --burst-every";
    assert_eq!(rejection(&["--rate", "5", "--burst-rate", "50"]), needs);
    let flags = ["--rate", "5", "--burst-rate", "50", "--burst-secs", "1"];
    assert_eq!(rejection(&flags), needs);
    let only = "--burst-secs and --burst-every apply only with --burst-rate";
    assert_eq!(rejection(&["--rate", "5", "--burst-every", "10"]), only);
    // clap refuses --burst-rate with --concurrency; `validate` too, without clap.
    assert!(parse(&["--concurrency", "2", "--burst-rate", "50"]).is_err());
    let mut args = parse(&["--concurrency", "2"]).expect("valid flags");
    args.burst_rate = Some(50.0);
    let only_open = "--burst-rate, --burst-secs and --burst-every apply only with --rate";
    assert!(matches!(
        args.validate(),
        Err(BenchError::InvalidArgs(reason)) if reason == only_open
    ));
    assert_eq!(
        rejection(&["--concurrency", "2", "--burst-secs", "1"]),
        only_open
    );
}

#[test]
fn burst_values_are_checked() {
    let with = |rate: &str, secs: &str, every: &str| {
        // `=` so that clap takes a negative value for a value, not a flag.
        let rate = format!("--burst-rate={rate}");
        let secs = format!("--burst-secs={secs}");
        let every = format!("--burst-every={every}");
        rejection(&["--rate", "5", &rate, &secs, &every])
    };
    for rate in ["0", "-1", "inf", "NaN"] {
        let reason = with(rate, "2", "10");
        assert!(
            reason.starts_with("--burst-rate must be a positive number"),
            "{reason}"
        );
    }
    for secs in ["0", "-2", "0.0001", "inf", "NaN"] {
        let reason = with("50", secs, "10");
        assert!(
            reason.starts_with("--burst-secs must be a number of seconds"),
            "{reason}"
        );
    }
    for every in ["0", "1e300", "inf"] {
        let reason = with("50", "2", every);
        assert!(
            reason.starts_with("--burst-every must be a number of seconds"),
            "{reason}"
        );
    }
    for (secs, every) in [("10", "10"), ("12", "10")] {
        let reason = with("50", secs, every);
        assert!(
            reason.starts_with("--burst-secs must be less than --burst-every"),
            "{reason}"
        );
    }
}
