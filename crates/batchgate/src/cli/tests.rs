use std::time::Duration;

use clap::Parser;

use super::*;
use crate::serve::WorkerChoice;

/// Why flags were refused: by clap (unknown flag, bad value), or by the checks after it.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Flags(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn parse(argv: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(argv).map(|cli| cli.command)
}

fn serve_config(flags: &[&str]) -> Result<ServeConfig, Refused> {
    let argv: Vec<&str> = ["batchgate", "serve", "--insecure-no-auth"]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
    let Command::Serve(args) = parse(&argv)? else {
        panic!("serve expected")
    };
    Ok(args.into_config()?)
}

#[test]
fn debug_output_shows_no_secret() {
    let cli = Cli::try_parse_from([
        "batchgate",
        "gateway",
        "--redis",
        "redis://:secretpw-redis@127.0.0.1:6379",
        "--jwt-secret",
        "jwt-secret-value-of-32-bytes-or-more",
        "--admin-token",
        "admin-token-value-16+",
    ])
    .expect("parse");
    let shown = format!("{cli:?}");
    for secret in ["secretpw-redis", "jwt-secret-value", "admin-token-value"] {
        assert!(!shown.contains(secret), "Debug shows {secret}: {shown}");
    }
    assert!(shown.contains("redis://:***@127.0.0.1:6379"), "{shown}");
}

#[test]
fn repeated_worker_urls_make_one_pool_whose_limits_add_up() {
    let config = serve_config(&[
        "--worker-url",
        "grpc://127.0.0.1:1?max_inflight_batches=2",
        "--worker-url=openai+http://127.0.0.1:2/v1?max_inflight_batches=3,http://127.0.0.1:3?max_inflight_batches=4",
    ])
    .expect("valid");
    let part = config.batcher.expect("a batcher");
    let WorkerChoice::Remote { workers, pool, .. } = part.worker else {
        panic!("remote workers expected")
    };
    let names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "grpc://127.0.0.1:1",
            "openai+http://127.0.0.1:2/v1",
            "http://127.0.0.1:3"
        ]
    );
    assert_eq!(part.config.max_inflight_batches, 9);
    assert_eq!(pool.max_batch_size, 64);

    // One worker without a limit: the batcher's default.
    let part = serve_config(&["--worker-url", "grpc://127.0.0.1:1"])
        .expect("valid")
        .batcher
        .expect("a batcher");
    assert_eq!(
        part.config.max_inflight_batches,
        batchgate_batcher::driver::DEFAULT_MAX_INFLIGHT_BATCHES
    );
}

/// The flags' defaults are the parts' own: a process started without flags behaves as the
/// libraries do with their defaults, and `--help` shows those numbers.
#[test]
fn defaults_are_the_crates_constants() {
    let config = serve_config(&[]).expect("valid");
    let part = config.batcher.expect("a batcher");
    assert_eq!(
        part.config.limits,
        batchgate_policy::Limits {
            max_batch_size: batchgate_policy::DEFAULT_MAX_BATCH_SIZE,
            max_wait: batchgate_policy::DEFAULT_MAX_WAIT,
        }
    );
    assert_eq!(
        part.config.max_queue_age,
        batchgate_batcher::driver::DEFAULT_MAX_QUEUE_AGE
    );
    assert_eq!(part.config.rule, batchgate_policy::Rule::Fixed);
    assert_eq!(
        part.worker,
        WorkerChoice::Simulated(batchgate_sim::SimConfig::default())
    );
    assert_eq!(
        part.config.retry.retries,
        batchgate_worker::retry::DEFAULT_RETRIES
    );
    assert_eq!(
        config.store.queue_capacity,
        batchgate_queue::DEFAULT_QUEUE_CAPACITY
    );
    assert_eq!(
        config.store.max_results,
        batchgate_store::DEFAULT_MAX_RESULTS
    );
    assert_eq!(config.store.result_ttl, batchgate_store::DEFAULT_RESULT_TTL);
    assert_eq!(
        config.store.dedupe_ttl,
        Some(batchgate_store::DEFAULT_DEDUPE_TTL)
    );
    let gateway = config.gateway.expect("a gateway");
    let library = batchgate_gateway::GatewayConfig::default();
    assert_eq!(gateway.max_input_bytes, library.max_input_bytes);
    assert_eq!(
        gateway.max_concurrent_requests,
        library.max_concurrent_requests
    );
    assert_eq!(
        gateway.max_requests_per_caller,
        library.max_requests_per_caller
    );
    assert_eq!(gateway.body_read_timeout, library.body_read_timeout);
    assert_eq!(gateway.dedupe_scope, library.dedupe_scope);
    assert_eq!(
        config.connections,
        batchgate_net::ConnectionLimits::default()
    );
    assert_eq!(
        config.edge.rate_limit.expect("on by default").default,
        batchgate_gateway::config::DEFAULT_RATE_LIMIT
    );
    assert_eq!(
        config.edge.shed,
        batchgate_gateway::ShedBound::Objective(batchgate_gateway::shed::DEFAULT_OBJECTIVE)
    );
    assert_eq!(
        config.queue_error_tolerance,
        batchgate_gateway::readiness::DEFAULT_QUEUE_ERROR_TOLERANCE
    );

    let Command::Batcher(args) =
        parse(&["batchgate", "batcher", "--redis", "redis://127.0.0.1:1"]).expect("parse")
    else {
        panic!("batcher expected")
    };
    let redis = args.redis.backend().expect("valid").expect("redis");
    assert_eq!(
        redis.redis.op_timeout,
        batchgate_redis::conn::DEFAULT_OP_TIMEOUT
    );
    assert_eq!(
        redis.visibility_timeout,
        batchgate_redis::queue::DEFAULT_VISIBILITY_TIMEOUT
    );
    assert_eq!(
        redis.max_deliveries,
        batchgate_redis::queue::DEFAULT_MAX_DELIVERIES
    );
}

/// A value the process cannot use is refused with the flag's name, never quietly raised to
/// the least usable one.
#[test]
fn values_below_their_minimum_are_refused_not_clamped() {
    for (flags, expected) in [
        (&["--sim-slots", "0"][..], "--sim-slots must be at least 1"),
        (
            &["--max-inflight-batches", "0"],
            "--max-inflight-batches must be at least 1",
        ),
        (
            &["--result-ttl-secs", "0"],
            "--result-ttl-secs must be at least 1",
        ),
        (
            &["--max-input-bytes", "0"],
            "--max-input-bytes must be at least 1",
        ),
        (
            &["--partitions", "0"],
            "--partitions must be between 1 and 1024",
        ),
        (
            &["--redis", "redis://127.0.0.1:1", "--redis-timeout-ms", "0"],
            "--redis-timeout-ms must be at least 1",
        ),
        (
            &[
                "--redis",
                "redis://127.0.0.1:1",
                "--visibility-timeout-ms",
                "99",
            ],
            "--visibility-timeout-ms must be at least 100",
        ),
        (
            &["--redis", "redis://127.0.0.1:1", "--max-deliveries", "0"],
            "--max-deliveries must be at least 1",
        ),
        (
            &["--max-concurrent-requests", "0"],
            "--max-concurrent-requests must be at least 1",
        ),
    ] {
        let err = serve_config(flags).expect_err(expected).to_string();
        assert_eq!(err, expected, "{flags:?}");
    }
    let Command::Worker(args) =
        parse(&["batchgate", "worker", "--sim", "--slots", "0"]).expect("parse")
    else {
        panic!("worker expected")
    };
    assert_eq!(
        args.into_config().expect_err("0 slots").to_string(),
        "--slots must be at least 1"
    );
}

/// `--policy` and `--dedupe-scope` are parsed once, by clap, into their types.
#[test]
fn enumerated_flags_take_only_their_names() {
    let config = serve_config(&[
        "--policy",
        "adaptive",
        "--max-hold-ms",
        "80",
        "--dedupe-scope",
        "global",
    ])
    .expect("valid");
    let rule = config.batcher.expect("a batcher").config.rule;
    let batchgate_policy::Rule::Adaptive(adaptive) = rule else {
        panic!("adaptive expected, got {rule:?}")
    };
    assert_eq!(adaptive.max_hold, Duration::from_millis(80));
    assert_eq!(
        config.gateway.expect("a gateway").dedupe_scope,
        batchgate_gateway::DedupeScope::Global
    );
    for bad in [&["--policy", "eager"][..], &["--dedupe-scope", "everyone"]] {
        let err = serve_config(bad).expect_err("refused").to_string();
        assert!(err.contains("possible values"), "{bad:?}: {err}");
    }
}

#[test]
fn further_models_have_their_own_workers_and_limits_and_bad_ones_are_refused() {
    let config = serve_config(&[
        "--model-name",
        "big",
        "--max-wait-ms",
        "50",
        "--model",
        "small:worker=http://127.0.0.1:9,max_batch_size=8,max_wait_ms=5,max_inflight_batches=3",
    ])
    .expect("valid");
    assert_eq!(
        config.gateway.as_ref().map(|g| g.models.clone()),
        Some(vec!["big".to_owned(), "small".to_owned()])
    );
    let [small] = config.models.as_slice() else {
        panic!("one further model expected")
    };
    assert_eq!(small.name, "small");
    let batcher = small.batcher.as_ref().expect("a batcher");
    let limits = batcher.config.limits;
    assert_eq!(
        (limits.max_batch_size, limits.max_wait),
        (8, Duration::from_millis(5))
    );
    assert_eq!(batcher.config.max_inflight_batches, 3);
    let WorkerChoice::Remote { workers, .. } = &batcher.worker else {
        panic!("remote workers expected")
    };
    assert_eq!(workers.len(), 1);
    for (bad, why) in [
        ("small", "NAME:"),
        ("small:max_batch_size=8", "worker"),
        ("big:worker=http://127.0.0.1:9", "already served"),
        (
            "small:worker=http://127.0.0.1:9,colour=red",
            "unknown setting",
        ),
        ("sm all:worker=http://127.0.0.1:9", "model name"),
    ] {
        let error = serve_config(&["--model-name", "big", "--model", bad]).expect_err(bad);
        assert!(error.to_string().contains(why), "{bad}: {error}");
    }
    // A gateway alone names further models; their batchers run elsewhere.
    let argv = [
        "batchgate",
        "gateway",
        "--insecure-no-auth",
        "--redis",
        "redis://127.0.0.1:1",
        "--model",
        "small",
    ];
    let Command::Gateway(args) = parse(&argv).expect("parses") else {
        panic!("gateway expected")
    };
    let config = args.into_config().expect("valid");
    assert_eq!(config.models.len(), 1);
    assert!(config.models[0].batcher.is_none());
}
