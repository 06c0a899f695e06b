//! `loadgen run` (open/closed-loop load with HDR statistics) and `loadgen serve` (the
//! calibrated target server).
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Parser, Subcommand};
use loadgen::serve::ServeConfig;
use loadgen::{LoadConfig, LoadError, Mode, Progress};

/// Exit status for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Open-loop HTTP, gRPC, TCP and WebSocket load generator and calibrated target server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send load and print corrected latency, service time, rate and errors.
    Run(RunArgs),
    /// Serve HTTP/1.1 and h2c with a fixed delay, body size and error share.
    Serve(ServeArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("load").required(true).args(["rate", "concurrency"])))]
struct RunArgs {
    /// URL to load: http://HOST:PORT/path
    #[arg(long, env = "LOADGEN_TARGET")]
    target: String,
    /// Host header / :authority override (explicit-mode proxies route on it).
    #[arg(long)]
    host: Option<String>,
    /// Open loop: requests per second, latency corrected for coordinated omission.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: requests kept in flight, back to back (maximum throughput).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measured window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Run at the same rate first, excluded from all statistics.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// TCP connections [default: HTTP/2 and gRPC: 1; otherwise --concurrency in closed loop, 16 in open loop].
    #[arg(long)]
    connections: Option<usize>,
    /// h2c with prior knowledge, many streams per connection.
    #[arg(long)]
    http2: bool,
    /// Another protocol than HTTP requests: grpc (unary calls, h2c), grpc-stream
    /// (server streaming, one sample per stream), tcp (echo of --body-size bytes over
    /// long-lived connections), tcp-churn (a new connection per echo), websocket (upgrade,
    /// then echoed messages of --body-size bytes). http1 / http2 are the HTTP defaults.
    #[arg(long, value_name = "PROTOCOL")]
    protocol: Option<String>,
    /// grpc-stream: messages the server sends per stream.
    #[arg(long, default_value_t = loadgen::proto::DEFAULT_STREAM_MESSAGES)]
    stream_messages: u32,
    /// Request body bytes: 0 sends GET, more sends POST.
    #[arg(long, default_value_t = 0)]
    body_size: usize,
    /// Per request; expiry counts as error class "timeout".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Also write the run's record (`record::Load`, histograms included; the fields of a
    /// report.json run) as JSON to this file; `-`: as one `loadgen-record: {json}` line on
    /// stdout after the table (how the kind substrate reads it from the pod's log).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime worker threads [default: min(cores, 2)]; 1 runs everything on one thread
    /// (the open loop's sequencer keeps its own).
    #[arg(long)]
    threads: Option<usize>,
    /// Wait this long after printing the record before exiting: a pod's
    /// sidecar stops with its load generator, and a harness that reads the
    /// sidecar's counters after the run (the kube substrate's cross-check)
    /// needs it up a little longer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    linger: Duration,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks one (printed as the first stdout line).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Delay added to every response (not /healthz).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    delay: Duration,
    /// Response body bytes.
    #[arg(long, default_value_t = 0)]
    body_size: usize,
    /// Fraction of responses answered 503, evenly spread (0.1 = every 10th).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Echo mode: answer every request with JSON of what arrived (method, path, query,
    /// headers, protocol, body length, this replica); see loadgen::echo for the knobs.
    #[arg(long, requires = "name")]
    echo: bool,
    /// Echo mode: the workload this replica belongs to.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Echo mode: its namespace.
    #[arg(long, value_name = "NS", default_value = "")]
    namespace: String,
    /// Echo mode: its pod name [default: NAME].
    #[arg(long, value_name = "POD")]
    pod: Option<String>,
    /// Also accept WebSocket upgrades (any path) and echo their messages.
    #[arg(long)]
    websocket: bool,
    /// Serve opaque TCP instead of HTTP: echo every byte back (`loadgen run --protocol tcp`).
    #[arg(long)]
    tcp_echo: bool,
}

/// A problem with what the user asked for: exit 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigError(String);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            let config = e.downcast_ref::<ConfigError>().is_some()
                || matches!(e.downcast_ref::<LoadError>(), Some(LoadError::Config(_)));
            ExitCode::from(if config { EXIT_CONFIG } else { 1 })
        }
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    if threads == 0 {
        return Err(ConfigError("threads 0: must be at least 1".into()).into());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let target: http::Uri = args.target.parse().map_err(|e| {
        ConfigError(format!(
            "target {:?}: not a URL ({e}); use http://HOST:PORT/path",
            args.target
        ))
    })?;
    let mode = match (args.rate, args.concurrency) {
        (Some(rate), None) => Mode::Open { rate },
        (None, Some(concurrency)) => Mode::Closed { concurrency },
        _ => unreachable!("clap enforces exactly one of --rate and --concurrency"),
    };
    let (http2, proto) = match args.protocol.as_deref() {
        None | Some("http1") => (args.http2, None),
        Some("http2") => (true, None),
        Some(other) => {
            let p = other
                .parse::<loadgen::proto::Proto>()
                .map_err(|e| ConfigError(e.to_string()))?;
            let p = match p {
                loadgen::proto::Proto::GrpcStream { .. } => loadgen::proto::Proto::GrpcStream {
                    messages: args.stream_messages,
                },
                p => p,
            };
            (args.http2, Some(p))
        }
    };
    let multiplexed = http2
        || matches!(
            proto,
            Some(loadgen::proto::Proto::Grpc | loadgen::proto::Proto::GrpcStream { .. })
        );
    let connections = args.connections.unwrap_or(match (multiplexed, mode) {
        (true, _) => 1,
        (false, Mode::Closed { concurrency }) => concurrency.max(1),
        (false, Mode::Open { .. }) => 16,
    });
    let cfg = LoadConfig {
        target,
        host: args.host,
        mode,
        duration: args.duration,
        warmup: args.warmup,
        connections,
        http2,
        proto,
        body_size: args.body_size,
        timeout: args.timeout,
    };
    cfg.validate()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores.min(2));
    let rt = if threads == 1 {
        // Every task on the thread that blocks on the run: nothing is handed between a
        // parked main thread and one worker, and no work-stealing bookkeeping.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
    } else {
        runtime(threads)?
    };
    let load = rt.block_on(loadgen::run(cfg, Arc::new(Progress::default())))?;
    print!("{}", loadgen::table(&load));
    match &args.json {
        Some(path) if path.as_os_str() == "-" => println!("{}", loadgen::record_line(&load)),
        Some(path) => record::io::write_json(&load, path)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {}
    }
    std::io::stdout().flush()?;
    std::thread::sleep(args.linger);
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = ServeConfig {
        delay: args.delay,
        body_size: args.body_size,
        error_rate: args.error_rate,
        threads: args.threads,
        echo: args.echo.then(|| loadgen::echo::Replica {
            pod: args.pod.clone().or(args.name.clone()).unwrap_or_default(),
            name: args.name.clone().unwrap_or_default(),
            namespace: args.namespace.clone(),
        }),
        websocket: args.websocket,
        tcp_echo: args.tcp_echo,
    };
    cfg.validate()
        .map_err(|problems| ConfigError(problems.join("; ")))?;
    runtime(cfg.threads)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        // The first stdout line is the contract with tools that start us on port 0.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        drop(out);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        loadgen::serve::serve(listener, cfg, shutdown).await?;
        Ok(())
    })
}
