//! `weft`: Weft's command line. `weft init` installs a pod's iptables
//! interception rules (the injected init container runs it); `weft inject`
//! adds the proxy to Kubernetes YAML.
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

// Later subcommands (`weft check`, `weft inject`) become variants here, each
// with its args struct and one library call.
#[derive(Debug, Subcommand)]
enum Command {
    Init(mesh_init::InitArgs),
    Inject(mesh_kube::inject::cli::InjectArgs),
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
    }
}

fn inject(args: &mesh_kube::inject::cli::InjectArgs) -> ExitCode {
    match mesh_kube::inject::cli::run(args, std::io::stdin().lock()) {
        Ok(injected) => {
            for report in &injected.reports {
                eprintln!("weft inject: {report}");
            }
            match std::io::stdout().lock().write_all(injected.yaml.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("weft inject: writing to stdout: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("weft inject: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
