//! `weft`: Weft's command line. `weft init` installs a pod's iptables
//! interception rules (the injected init container runs it); `weft inject`
//! adds the proxy to Kubernetes YAML; `weft install` and `weft uninstall`
//! print the control plane's Kubernetes manifests; `weft check` checks a
//! cluster before install (`--pre`) and the installed mesh; `weft stat` and
//! `weft top` show proxies' golden figures from their admin metrics.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "weft", version, about = "Weft service mesh command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// One variant per subcommand: its args struct and one library call
// (mesh-init for `init`, mesh-kube for the Kubernetes ones, mesh-stat for stat/top).
#[derive(Debug, Subcommand)]
enum Command {
    Init(mesh_init::InitArgs),
    Inject(mesh_kube::inject::cli::InjectArgs),
    /// Check the installed mesh (or, with --pre, a cluster before install); exit 1 if a check fails.
    Check(mesh_kube::check::CheckArgs),
    /// Print the control plane's Kubernetes manifests, for `weft install | kubectl apply -f -`.
    Install(mesh_kube::install::InstallArgs),
    /// Print what `weft install` created, for `weft uninstall | kubectl delete -f -`.
    Uninstall(mesh_kube::install::UninstallArgs),
    /// Success rate, requests per second and latency per workload, route, peer or authority, over one window.
    Stat(mesh_stat::cli::StatArgs),
    /// `weft stat` refreshing every --interval (2s) until interrupted, busiest rows first.
    Top(mesh_stat::cli::TopArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(64);
        }
    };
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Init(args) => match mesh_init::run(&args) {
            Ok(outcome) => {
                // `weft init --dry-run | head` closing stdout early is not a failure.
                match writeln!(std::io::stdout().lock(), "{outcome}") {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        eprintln!("weft init: writing to stdout: {e}");
                        ExitCode::FAILURE
                    }
                    _ => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("weft: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Inject(args) => inject(&args),
        Command::Install(args) => print_manifests("install", args.render()),
        Command::Uninstall(args) => print_manifests("uninstall", args.render()),
        Command::Stat(args) => mesh_stat::cli::stat(&args),
        Command::Top(args) => mesh_stat::cli::top(&args),
    }
}

/// Prints rendered manifests; bad flags or certificates exit 64.
fn print_manifests(what: &str, rendered: Result<String, mesh_kube::install::InstallError>) -> ExitCode {
    match rendered {
        Ok(text) => write_stdout(what, &text),
        Err(e) => {
            eprintln!("weft {what}: {e}");
            ExitCode::from(if e.is_usage() { 64 } else { 1 })
        }
    }
}

fn inject(args: &mesh_kube::inject::cli::InjectArgs) -> ExitCode {
    match mesh_kube::inject::cli::run(args, std::io::stdin().lock()) {
        Ok(injected) => {
            for report in &injected.reports {
                eprintln!("weft inject: {report}");
            }
            write_stdout("inject", &injected.yaml)
        }
        Err(e) => {
            eprintln!("weft inject: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Exit 0: every check passed (warnings allowed); 1: a check failed; 2: the checks could not run.
fn check(args: &mesh_kube::check::CheckArgs) -> ExitCode {
    use mesh_kube::check::{Output, Style};
    // kube's rustls client needs a process-wide provider; a second install is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft check: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(mesh_kube::check::run(args)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("weft check: {e}");
            return ExitCode::from(2);
        }
    };
    let text = match args.output {
        Output::Json => report.to_json(),
        Output::Text if std::io::stdout().is_terminal() => report.to_text(Style::Terminal),
        Output::Text => report.to_text(Style::Plain),
    };
    // `weft check | head` closing stdout early is not a failure of the checks.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `weft <what> | head` closing stdout early is not a failure.
fn write_stdout(what: &str, text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("weft {what}: writing to stdout: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}
