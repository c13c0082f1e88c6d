//! The subcommands and their flags. Every flag has a `BATCHGATE_*` environment variable and
//! may be set in the `--config` TOML file; precedence is flag > environment > file > default.
//! Flags are checked and turned into a part's plain config before any port is bound; a bad
//! value is refused with a [`ConfigError`] naming the flag, never silently corrected.
//!
//! Layout — one module per subcommand, one per group of flags several share:
//! - [`serve`], [`gateway`], [`batcher`], [`worker`]: the server subcommands' flags and their
//!   `into_config`.
//! - [`server`]: shutdown and readiness flags of every server process.
//! - [`http`]: the HTTP API's flags (`serve`, `gateway`): TLS, connection bounds, API limits.
//! - [`auth`]: authentication and the edge's protections (shedding, rate limits, admin API).
//! - [`backends`]: the queue and stores, in-process or on Redis.
//! - [`batching`]: the batching policy and the workers (`serve`, `batcher`).
//! - [`error`]: [`ConfigError`] and the checks that raise it.
//!
//! The client tools (`bench`, `simulate`, `plan`, `dlq`, `token`, `certs`, `probe`) keep their
//! flags beside their code.

pub mod auth;
pub mod backends;
pub mod batcher;
pub mod batching;
pub mod error;
pub mod gateway;
pub mod http;
mod models;
pub mod serve;
pub mod server;
pub mod worker;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::process::ExitCode;

use batchgate_bench::BenchArgs;
use batchgate_telemetry::OtlpConfig;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use self::batcher::BatcherArgs;
pub use self::error::ConfigError;
pub use self::gateway::GatewayArgs;
pub use self::serve::ServeArgs;
pub use self::worker::WorkerArgs;
use crate::config_file;
use crate::serve::ServeConfig;
use crate::telemetry::{self, LogFormat};

/// Dynamic batching in front of a fixed GPU inference API.
#[derive(Debug, Parser)]
#[command(name = "batchgate", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with flag values (keys are flag names, at the top level or under a table
    /// named after the subcommand, e.g. `[serve]`); flags and environment variables win over it.
    #[arg(long, global = true, env = "BATCHGATE_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "BATCHGATE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing's EnvFilter syntax); `RUST_LOG` overrides it.
    #[arg(
        long,
        global = true,
        env = "BATCHGATE_LOG_FILTER",
        default_value = "info"
    )]
    pub log_filter: String,

    /// OTLP/gRPC endpoint to export traces to (e.g. `http://127.0.0.1:4317`). Off by default;
    /// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (and the other `OTEL_*` variables) work too.
    #[arg(
        long,
        global = true,
        env = "BATCHGATE_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,

    /// CA certificate (PEM) trusted for an `https://` OTLP endpoint besides the system's
    /// roots. Headers a collector needs (an auth token) go in the standard
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`authorization=Bearer%20TOKEN`).
    #[arg(long, global = true, env = "BATCHGATE_OTLP_CA", value_name = "FILE")]
    pub otlp_ca: Option<std::path::PathBuf>,

    /// Threads of the async runtime; by default one per CPU. Where several batchgate
    /// processes share a few cores, fewer threads each cost less CPU per request (less parking
    /// and waking), but a process with one thread holds up all its requests whenever it waits
    /// for a core: keep the default where the cores run near full.
    #[arg(
        long,
        global = true,
        env = "BATCHGATE_WORKER_THREADS",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub worker_threads: Option<u16>,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at start and consumed at once: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system in one process: gateway, queue, batcher, result store, and
    /// (unless --worker-url) a built-in simulated worker. In-process backends unless --redis.
    Serve(ServeArgs),
    /// Run only the HTTP gateway, on Redis: any number of them share the work.
    Gateway(GatewayArgs),
    /// Run only a batcher, on Redis: reads the queue, calls the worker, stores results.
    Batcher(BatcherArgs),
    /// Run the reference worker: the fixed batch API (`POST /v1/batch`), KServe V2, OpenAI
    /// embeddings and gRPC, all on one port.
    Worker(WorkerArgs),
    /// Load-test a running gateway over HTTP and report rate, errors and latency.
    Bench(BenchArgs),
    /// Run the batching policy and the batcher's slot logic in virtual time against modelled
    /// load and a worker cost model; reports as `bench` does.
    Simulate(batchgate_simulate::SimulateArgs),
    /// Find the cheapest deployment (workers, batchers, gateways, Redis masters) that serves
    /// --rate requests/s at --p99-ms, by simulation.
    Plan(batchgate_simulate::PlanArgs),
    /// Inspect, replay or purge the dead-letter queue through a gateway's admin API.
    Dlq(crate::dlq::DlqArgs),
    /// Mint a development token (HS256, signed with the gateway's --jwt-secret); prints it alone.
    Token(crate::token::TokenArgs),
    /// Write a throwaway CA, server and client certificate for TLS and mTLS (tests, local runs).
    Certs(crate::certs::CertsArgs),
    /// GET a health endpoint once: exit 0 on 2xx (a container HEALTHCHECK without curl).
    Probe(crate::probe::ProbeArgs),
}

impl Command {
    /// The `service.name` of this subcommand's traces; `None` for the client tools.
    fn service_name(&self) -> Option<&'static str> {
        match self {
            Command::Serve(_) => Some("batchgate"),
            Command::Gateway(_) => Some("batchgate-gateway"),
            Command::Batcher(_) => Some("batchgate-batcher"),
            Command::Worker(_) => Some("batchgate-worker"),
            Command::Bench(_)
            | Command::Simulate(_)
            | Command::Plan(_)
            | Command::Dlq(_)
            | Command::Token(_)
            | Command::Certs(_)
            | Command::Probe(_) => None,
        }
    }
}

/// How a subcommand that ran to its end wants the process to exit.
enum Exit {
    /// Normally: drain what is left, exit 0.
    Done,
    /// At once with this code, cutting whatever is still open (the worker's simulated crash).
    Abrupt(u8),
}

/// Parses everything (file, environment, flags), then runs the subcommand.
pub fn main() -> ExitCode {
    batchgate_net::install_crypto_provider();
    let argv = match config_file::merge_into_args(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(error) => {
            eprintln!("batchgate: {error}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = cli.worker_threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("batchgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Only the servers export traces; the exporter's channel lives on the runtime.
    let otlp = cli.command.service_name().map(|name| OtlpConfig {
        endpoint: cli.otlp_endpoint.clone(),
        service_name: name.to_owned(),
        ca: cli.otlp_ca.clone(),
    });
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init(cli.log_format, &cli.log_filter, otlp.as_ref())
    };
    let code = match runtime.block_on(dispatch(cli.command)) {
        Ok(Exit::Done) => ExitCode::SUCCESS,
        Ok(Exit::Abrupt(code)) => {
            // Connections still open are cut, nothing is drained: as a host that went down.
            runtime.shutdown_background();
            return ExitCode::from(code);
        }
        Err(error) => {
            eprintln!("batchgate: {error:#}");
            ExitCode::FAILURE
        }
    };
    let _runtime = runtime.enter();
    telemetry.shutdown();
    code
}

/// Pending connections the kernel may hold for us. Thousands of clients connecting at once
/// (a load balancer's pool warming up, or `bench` at 10,000 requests/s) overflow the usual
/// 1,024 and wait out SYN retransmits of 1 s and more; the kernel caps this at `somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// The flags' config, or the reason it is refused.
fn checked<T>(parsed: Result<T, ConfigError>) -> anyhow::Result<T> {
    parsed.map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

async fn dispatch(command: Command) -> anyhow::Result<Exit> {
    match command {
        // Configuration is validated before any port is bound.
        Command::Serve(args) => {
            let listen = args.listen;
            run_parts(checked(args.into_config())?, listen).await
        }
        Command::Gateway(args) => {
            let listen = args.listen;
            run_parts(checked(args.into_config())?, listen).await
        }
        Command::Batcher(args) => {
            let listen = args.listen;
            run_parts(checked(args.into_config())?, listen).await
        }
        Command::Worker(args) => {
            let listen = args.listen;
            let config = checked(args.into_config())?;
            let listener = bind(listen)?;
            let shutdown = CancellationToken::new();
            let signals = tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
            let stopped = crate::worker::run(config, listener, shutdown).await;
            signals.abort();
            Ok(match stopped? {
                crate::worker::Stopped::Shutdown => Exit::Done,
                crate::worker::Stopped::Crashed => Exit::Abrupt(crate::worker::CRASH_EXIT_CODE),
            })
        }
        Command::Dlq(args) => crate::dlq::run(args).await.map(|()| Exit::Done),
        Command::Probe(args) => crate::probe::run(&args).await.map(|()| Exit::Done),
        Command::Certs(args) => {
            println!("{}", crate::certs::run(&args)?);
            Ok(Exit::Done)
        }
        Command::Token(args) => {
            println!("{}", crate::token::mint(&args)?);
            Ok(Exit::Done)
        }
        Command::Simulate(args) => crate::simulate::simulate(&args).map(|()| Exit::Done),
        Command::Plan(args) => crate::simulate::plan(&args).map(|()| Exit::Done),
        Command::Bench(args) => {
            let json = args.json;
            let report = batchgate_bench::run(args).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(Exit::Done)
        }
    }
}

async fn run_parts(config: ServeConfig, listen: SocketAddr) -> anyhow::Result<Exit> {
    let listener = bind(listen)?;
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    let outcome = crate::serve::run(config, listener, shutdown).await;
    signals.abort();
    if outcome?.drained {
        Ok(Exit::Done)
    } else {
        anyhow::bail!("shutdown did not drain within the grace period")
    }
}
