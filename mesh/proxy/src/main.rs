//! The `mesh-proxy` binary: parse arguments, build the runtime, run the proxy.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use mesh_proxy::config::cli::Args;
use tracing_subscriber::EnvFilter;

/// sysexits.h EX_USAGE: the command line was wrong.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for people; logs piped to files and collectors stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
        // --help, --version
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mesh-proxy: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };

    // mesh-identity passes aws-lc-rs explicitly; installing it process-wide
    // too means no dependency can pick another provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mesh-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: mesh_proxy::Config) -> anyhow::Result<()> {
    // One thread (the default) avoids cross-thread wakeups entirely, which
    // is what a sidecar sharing a pod's CPU wants.
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    runtime.block_on(mesh_proxy::run(config))?;
    Ok(())
}
