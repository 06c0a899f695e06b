//! `bench`: run a benchmark suite, re-render a report, gate a record, show a
//! plan, or clean up after a crashed run.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use suites::commands;

#[derive(Parser)]
#[command(
    name = "bench",
    version,
    about = "Weft benchmark runner: measures Weft against no mesh, nginx and HAProxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a suite and write report.json/md/html + latency.png (the default command)
    Run(RunArgs),
    /// Re-read DIR/report.json and re-render report.md, report.html and latency.png
    Report {
        /// A results directory (or a report.json)
        dir: PathBuf,
    },
    /// Check a record against a gate policy (--policy), or measure two builds alternately in
    /// one run and fail on a regression beyond their noise (--base DIR --candidate DIR):
    /// exit 0 pass, 1 a rule failed or a regression, 2 bad input
    Gate {
        /// A results directory or a report.json (without --policy: a same-run gate's
        /// record, judged again)
        #[arg(long, value_name = "DIR|FILE", required_unless_present_any = ["results_arg", "base"], conflicts_with = "base")]
        results: Option<PathBuf>,
        /// The same as --results, given positionally
        #[arg(value_name = "RESULTS", conflicts_with_all = ["results", "base"])]
        results_arg: Option<PathBuf>,
        /// Policy file, e.g. ci/gates.toml
        #[arg(long, value_name = "FILE", conflicts_with = "base")]
        policy: Option<PathBuf>,
        /// A stored record to compare against (regression rules)
        #[arg(long, value_name = "FILE", requires = "policy")]
        baseline: Option<PathBuf>,
        /// Same-run gate: the base build's binaries (mesh-proxy, mesh-control, weft, loadgen)
        #[arg(long, value_name = "DIR", requires = "candidate")]
        base: Option<PathBuf>,
        /// Same-run gate: the candidate build's binaries
        #[arg(long, value_name = "DIR", requires = "base")]
        candidate: Option<PathBuf>,
        /// Same-run gate: the suite measured (gate, or ./suites/NAME.toml)
        #[arg(long, default_value = "gate", value_name = "NAME|PATH")]
        suite: String,
        /// Same-run gate: where the record and gate.txt go [default: reports/out/<UTC timestamp>-gate]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Compare two records cell by cell (p50, p99, proxy CPU, RSS, rps) with a noise-aware
    /// verdict per metric: exit 0, or 1 with --fail-on-regression when one is worse; 2 bad input
    Compare {
        /// The base record: a results directory or a report.json
        #[arg(value_name = "A")]
        base: PathBuf,
        /// The candidate record
        #[arg(value_name = "B")]
        candidate: PathBuf,
        /// Print the comparison as JSON
        #[arg(long)]
        json: bool,
        /// Exit 1 when any metric of any cell is worse beyond the noise
        #[arg(long)]
        fail_on_regression: bool,
    },
    /// Write a record's Service Mesh Performance (SMP) JSON and HdrHistogram interval logs,
    /// one file per load cell [default: both beside the record, in smp/ and hdr/]
    Export {
        /// A results directory or a report.json
        results: PathBuf,
        /// Write the SMP documents into DIR
        #[arg(long, value_name = "DIR")]
        smp: Option<PathBuf>,
        /// Write the HdrHistogram interval logs into DIR
        #[arg(long, value_name = "DIR")]
        hdr: Option<PathBuf>,
    },
    /// Print the matrix a suite would run and its estimated duration, without running it
    Plan {
        /// Suite name (quick, ci, full, or ./suites/NAME.toml) or a path to a suite file
        #[arg(long, default_value = "quick", value_name = "NAME|PATH")]
        suite: String,
    },
    /// Check mesh behaviour (Gateway API mesh routing, ...): each test deploys its own
    /// topology and asserts on real requests; exit 0 all pass or not-applicable, 1 a test failed
    Conformance(ConformanceArgs),
    /// Attack a Weft deployment's listeners (smuggling, floods, slow clients, handshakes,
    /// idle connections, many Hosts) and record each outcome, the proxy's memory and a
    /// well-behaved client's p99; exit 0 every verdict passed, 1 a finding
    Hostile(HostileArgs),
    /// Remove what crashed or killed runs left: their processes, temp dirs and
    /// network namespaces (a new run does this too; live runs are left alone);
    /// with --substrate kind|kube, the namespaces and mesh installs killed cluster runs left
    Clean(CleanArgs),
    /// Internal: cleans up after a bench that was killed (started by bench itself)
    #[command(name = "__watchdog", hide = true)]
    Watchdog,
    /// Internal: one discovery propagation measurement (started by bench itself)
    #[command(name = "__propagation", hide = true)]
    Propagation(PropagationArgs),
}

#[derive(clap::Args)]
struct PropagationArgs {
    /// The mesh-control binary to measure
    #[arg(long, value_name = "PATH")]
    mesh_control: PathBuf,
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 2)]
    endpoints_per_service: usize,
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// mesh-control's --manifests-poll
    #[arg(long, default_value = "250ms")]
    poll: String,
    /// Where mesh-control reads the Services: a manifests directory, or the
    /// Kubernetes API (a fake API server in this process, edits as watch events)
    #[arg(long, default_value = "manifests", value_parser = ["manifests", "kubernetes"])]
    backend: String,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Suite name (quick, ci, full, or ./suites/NAME.toml) or a path to a suite file
    #[arg(long, default_value = "quick", value_name = "NAME|PATH")]
    suite: String,
    /// Where the variants run
    #[arg(long, value_enum, default_value_t = Substrate::Local)]
    substrate: Substrate,
    /// Output directory [default: reports/out/<UTC timestamp> under the workspace root, else the current dir]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// kind/kube: print every step, command and manifest of the run; touch nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Where the kind and kube substrates run (ignored by local and netns).
#[derive(clap::Args, Clone, Default)]
struct ClusterArgs {
    /// kind: the cluster to create or reuse [default: weft-bench]
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// kind: the cluster config [default: kind-configs/default.yaml]
    #[arg(long, value_name = "FILE")]
    kind_config: Option<PathBuf>,
    /// kube: the kubeconfig context [default: the current one]
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// kube: the registry images are pushed to and pulled from (e.g. ghcr.io/you)
    #[arg(long, value_name = "REG")]
    registry: Option<String>,
    /// Node label of the load generator's node [default: weft.dev/role=client]
    #[arg(long, value_name = "KEY=VALUE")]
    client_selector: Option<String>,
    /// Node label of the target server's node [default: weft.dev/role=server]
    #[arg(long, value_name = "KEY=VALUE")]
    server_selector: Option<String>,
    /// Use the images already built (<registry>/{mesh-proxy,mesh-control,loadgen,weft}:<tag>; no images/build)
    #[arg(long)]
    no_build: bool,
    /// kind: delete the cluster at the end, if bench created it
    #[arg(long)]
    delete_cluster: bool,
}

impl ClusterArgs {
    fn flags(&self, substrate: Substrate) -> Option<suites::substrate::kube::Flags> {
        let any_cluster = match substrate {
            Substrate::Kind => false,
            Substrate::Kube => true,
            Substrate::Local | Substrate::Netns => return None,
        };
        Some(suites::substrate::kube::Flags {
            any_cluster,
            cluster: self.cluster.clone(),
            kind_config: self.kind_config.clone(),
            context: self.context.clone(),
            registry: self.registry.clone(),
            client_selector: self.client_selector.clone(),
            server_selector: self.server_selector.clone(),
            no_build: self.no_build,
            delete_cluster: self.delete_cluster,
        })
    }
}

#[derive(clap::Args)]
struct CleanArgs {
    /// Whose leftovers: local and netns (processes, temp dirs, network namespaces) or a cluster's
    #[arg(long, value_enum, default_value_t = Substrate::Local)]
    substrate: Substrate,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(clap::Args)]
struct ConformanceArgs {
    /// Where the tests run
    #[arg(long, value_enum, default_value_t = Substrate::Local)]
    substrate: Substrate,
    /// Only tests whose name contains PATTERN (any case; `*` matches anything)
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// What is under test: the mesh, the mesh with one feature switched off, or no mesh
    /// at all (the tests of what is missing must fail there)
    #[arg(long, value_enum, default_value_t = ConformanceVariant::Weft)]
    variant: ConformanceVariant,
    /// Where report.json/md/html go [default: reports/out/<UTC timestamp>-conformance under the workspace root]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// List the selected tests and exit; deploys nothing
    #[arg(long)]
    dry_run: bool,
    /// Time one test may take, deployment and teardown included
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = humantime::parse_duration)]
    test_timeout: std::time::Duration,
    /// Time an expectation may take to come true (e.g. a new route to propagate)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    patience: std::time::Duration,
}

#[derive(clap::Args)]
struct HostileArgs {
    /// The ci/test form: 1,000 idle connections and 1,000 Hosts instead of 10,000 and
    /// 5,000, slow attacks watched 16 s instead of 40 s, floods 1 s instead of 5 s, the
    /// three listeners attacked at once
    #[arg(long)]
    short: bool,
    /// Only attacks whose name contains PATTERN (e.g. smuggle, h2-, slow)
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// Do not run the well-behaved client beside the attacks (no p99 figures)
    #[arg(long)]
    no_probe: bool,
    /// Where report.json/md/html go [default: reports/out/<UTC timestamp>-hostile under the workspace root]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConformanceVariant {
    /// Meshed workloads get Weft sidecars and a control plane
    Weft,
    /// Weft with routes ignored (sidecars started with the testing-only --disable routes)
    WeftNoRoutes,
    /// Weft without inbound authorization (--disable authz)
    WeftNoAuthz,
    /// Weft without retries (--disable retries)
    WeftNoRetries,
    /// Weft ignoring route timeouts (--disable timeouts)
    WeftNoTimeouts,
    /// Weft with sidecars that have no identity: plaintext between them
    WeftNoMtls,
    /// No mesh: clients reach the Services' endpoints directly
    Baseline,
}

/// `--substrate` (one value per `suites::SubstrateKind`).
#[derive(Clone, Copy, ValueEnum)]
enum Substrate {
    /// Processes on 127.0.0.1, proxies addressed explicitly
    Local,
    /// Pods as Linux network namespaces on a node bridge, with transparent
    /// interception (iptables + SO_ORIGINAL_DST); needs root
    Netns,
    /// A kind cluster from kind-configs/ (created or reused), images loaded with kind load
    Kind,
    /// An existing cluster from the kubeconfig (--context), images from --registry
    Kube,
}

impl From<Substrate> for suites::SubstrateKind {
    fn from(s: Substrate) -> Self {
        match s {
            Substrate::Local => suites::SubstrateKind::Local,
            Substrate::Netns => suites::SubstrateKind::Netns,
            Substrate::Kind => suites::SubstrateKind::Kind,
            Substrate::Kube => suites::SubstrateKind::Kube,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Watchdog)) {
        // Before anything else: no tracing, no runtime, just the pipe.
        return code(suites::substrate::cleanup::watchdog::watchdog_main());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One TLS provider for the whole process (aws-lc-rs), before any client exists.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command.unwrap_or(Command::Run(RunArgs {
        suite: "quick".into(),
        substrate: Substrate::Local,
        out: None,
        dry_run: false,
        cluster: ClusterArgs::default(),
    })) {
        Command::Run(args) => run(args),
        Command::Report { dir } => match commands::rerender(&dir) {
            Ok(md) => {
                stdout(&md);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench report: {e}");
                code(1)
            }
        },
        Command::Gate {
            base: Some(base),
            candidate: Some(candidate),
            suite,
            out,
            ..
        } => gate_same_run(suites::gate::Options {
            base,
            candidate,
            suite,
            out,
        }),
        Command::Gate {
            results,
            results_arg,
            policy: None,
            ..
        } => match commands::judge_same_run(&results.or(results_arg).expect("clap requires one")) {
            Ok(outcome) => {
                stdout(&outcome.text());
                code(if outcome.passed { 0 } else { 1 })
            }
            Err(e) => {
                eprintln!("bench gate: {e}");
                code(2)
            }
        },
        Command::Gate {
            results,
            results_arg,
            policy: Some(policy),
            baseline,
            ..
        } => match commands::gate(
            &results.or(results_arg).expect("clap requires one"),
            &policy,
            baseline.as_deref(),
        ) {
            Ok(outcome) => {
                stdout(&outcome.markdown());
                code(if outcome.passed { 0 } else { 1 })
            }
            Err(e) => {
                eprintln!("bench gate: {e}");
                code(2)
            }
        },
        Command::Compare {
            base,
            candidate,
            json,
            fail_on_regression,
        } => match commands::compare(&base, &candidate, json) {
            Ok((text, worse)) => {
                stdout(&text);
                code(if worse && fail_on_regression { 1 } else { 0 })
            }
            Err(e) => {
                eprintln!("bench compare: {e}");
                code(2)
            }
        },
        Command::Export { results, smp, hdr } => {
            match commands::export(&results, smp.as_deref(), hdr.as_deref()) {
                Ok(text) => {
                    stdout(&text);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench export: {e}");
                    code(1)
                }
            }
        }
        Command::Plan { suite } => match commands::plan_text(&suite) {
            Ok(text) => {
                stdout(&text);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                code(64)
            }
        },
        Command::Conformance(args) => conformance(args),
        Command::Hostile(args) => hostile(args),
        Command::Clean(args) => clean(args),
        Command::Watchdog => unreachable!("handled above"),
        Command::Propagation(args) => propagation(args),
    }
}

fn propagation(args: PropagationArgs) -> ExitCode {
    let poll = match humantime::parse_duration(&args.poll) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            eprintln!(
                "bench __propagation: --poll {:?} is not a duration above 0 like 250ms",
                args.poll
            );
            return code(64);
        }
    };
    let child = suites::propagation::ChildArgs {
        mesh_control: args.mesh_control,
        services: args.services,
        endpoints_per_service: args.endpoints_per_service,
        changes: args.changes,
        poll,
        kubernetes: args.backend == "kubernetes",
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench __propagation: cannot start the async runtime: {e}");
            return code(1);
        }
    };
    match runtime.block_on(suites::propagation::child_main(child)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench __propagation: {e}");
            code(1)
        }
    }
}

fn gate_same_run(opts: suites::gate::Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench gate: cannot start the async runtime: {e}");
            return code(2);
        }
    };
    let test = reports::gate::same_run::SameRunTest::default();
    match runtime.block_on(suites::gate::run(opts, &test)) {
        Ok(done) => {
            stdout(&format!("{}results: {}\n", done.outcome.text(), done.out.display()));
            code(if done.outcome.passed { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("bench gate: {e}");
            code(e.exit_code())
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let cluster = args.cluster.flags(args.substrate);
    if args.dry_run {
        return match suites::commands::cluster_dry_run(&args.suite, cluster.as_ref()) {
            Ok(text) => {
                stdout(&text);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench: {e}");
                code(64)
            }
        };
    }
    let opts = suites::RunOptions {
        suite: args.suite,
        substrate: args.substrate.into(),
        out: args.out,
        cluster,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            return code(1);
        }
    };
    match runtime.block_on(suites::run(opts)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            code(e.exit_code())
        }
    }
}

fn conformance(args: ConformanceArgs) -> ExitCode {
    use suites::conformance::command;
    use suites::substrate::cluster::{Feature, MeshMode};
    let opts = command::Options {
        substrate: args.substrate.into(),
        only: args.only,
        mode: match args.variant {
            ConformanceVariant::Weft => MeshMode::Weft,
            ConformanceVariant::WeftNoRoutes => MeshMode::WeftWithout(Feature::Routes),
            ConformanceVariant::WeftNoAuthz => MeshMode::WeftWithout(Feature::Authz),
            ConformanceVariant::WeftNoRetries => MeshMode::WeftWithout(Feature::Retries),
            ConformanceVariant::WeftNoTimeouts => MeshMode::WeftWithout(Feature::Timeouts),
            ConformanceVariant::WeftNoMtls => MeshMode::WeftNoMtls,
            ConformanceVariant::Baseline => MeshMode::Baseline,
        },
        out: args.out,
        dry_run: args.dry_run,
        test_timeout: args.test_timeout,
        patience: args.patience,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench conformance: cannot start the async runtime: {e}");
            return code(1);
        }
    };
    match runtime.block_on(command::run(opts)) {
        Ok(outcome) => {
            stdout(&outcome.text);
            code(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("bench conformance: {e}");
            code(e.exit_code())
        }
    }
}

fn hostile(args: HostileArgs) -> ExitCode {
    use suites::hostile::{command, Size};
    let opts = command::Options {
        size: if args.short { Size::Short } else { Size::Full },
        only: args.only,
        probe: !args.no_probe,
        out: args.out,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench hostile: cannot start the async runtime: {e}");
            return code(1);
        }
    };
    match runtime.block_on(command::run(opts)) {
        Ok(done) => {
            stdout(&done.text);
            code(done.exit_code())
        }
        Err(e) => {
            eprintln!("bench hostile: {e}");
            code(e.exit_code())
        }
    }
}

fn clean(args: CleanArgs) -> ExitCode {
    let Some(flags) = args.cluster.flags(args.substrate) else {
        return clean_local();
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench clean: cannot start the async runtime: {e}");
            return code(1);
        }
    };
    let say = |line: String| eprintln!("{line}");
    match runtime.block_on(suites::substrate::kube::clean(&flags, &say)) {
        Ok(removed) if removed.is_empty() => {
            stdout("bench clean: nothing left over in the cluster");
            ExitCode::SUCCESS
        }
        Ok(removed) => {
            stdout(&format!("bench clean: removed {}", removed.join(", ")));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench clean: {e}");
            code(if matches!(e, suites::substrate::kube::KubeError::Config(_)) { 64 } else { 1 })
        }
    }
}

fn clean_local() -> ExitCode {
    match suites::substrate::clean() {
        Ok(removed) if removed.is_empty() => {
            stdout("bench clean: nothing left over");
            ExitCode::SUCCESS
        }
        Ok(removed) => {
            stdout(&format!(
                "bench clean: removed {} leftover(s): {}",
                removed.len(),
                removed.join(", ")
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench clean: {e}");
            code(1)
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(c.clamp(0, 255) as u8)
}

/// Print a command's result; a closed pipe (`bench gate ... | head`) is not an error.
fn stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| {
        if text.ends_with('\n') {
            Ok(())
        } else {
            out.write_all(b"\n")
        }
    });
}
