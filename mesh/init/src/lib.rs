//! `weft init`: installs the iptables rules that make a pod's TCP go through
//! its Weft sidecar without the app knowing (like Linkerd's proxy-init). Run
//! as root inside the pod's network namespace: by the injected init container
//! in a cluster, by the netns substrate in benchmarks.
//!
//! ```text
//!  nat PREROUTING -p tcp ─> WEFT_INBOUND   -i lo                  RETURN
//!                                          skip-inbound-ports     RETURN
//!                                          -p tcp                 REDIRECT :4143 (inbound)
//!  nat OUTPUT     -p tcp ─> WEFT_OUTBOUND  -s 127.0.0.6 -o lo     RETURN (inbound proxy -> app)
//!                                          -o lo ! -d 127.0.0.1
//!                                            --uid-owner <proxy>  WEFT_INBOUND (hairpin)
//!                                          --uid-owner <proxy>    RETURN
//!                                          (--gid-owner <proxy>: the same two)
//!                                          -o lo, -d 127.0.0.0/8  RETURN
//!                                          skip-outbound-ports    RETURN
//!                                          skip-outbound-cidrs    RETURN
//!                                          -p tcp                 REDIRECT :4140 (outbound;
//!                                                  the proxy reads SO_ORIGINAL_DST)
//! ```
//!
//! The same rules go into ip6tables when the namespace has IPv6 (`--ipv6
//! auto`, the default): a dual-stack pod's IPv6 TCP must not bypass the
//! proxy and its authorization.
//!
//! [`Rules::render`] is the `iptables-restore` input; [`apply`] installs it
//! atomically and idempotently, [`cleanup`] removes it.
#![forbid(unsafe_code)]

mod iptables;
mod rules;

use std::fmt;
use std::path::PathBuf;

pub use crate::iptables::{apply, cleanup, CleanupSummary, InitError, Iptables, Summary};
pub use mesh_kube::lists::{parse_cidr, CidrList, ListError, PortList, PortRange};
pub use crate::rules::{Family, Rules, INBOUND_CHAIN, INBOUND_SOURCE_V4, OUTBOUND_CHAIN};
pub use ipnet::IpNet;

/// Whether the IPv6 rules are installed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Mode {
    /// When IPv6 is enabled in the namespace (net.ipv6.conf.all.disable_ipv6 = 0).
    Auto,
    /// Always (ip6tables must work).
    On,
    /// Never: IPv6 TCP is not intercepted.
    Off,
}

/// Whether the current network namespace has IPv6 enabled: a kernel without
/// IPv6 has no `/proc/sys/net/ipv6`.
pub fn ipv6_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6").is_ok_and(|v| v.trim() == "0")
}

/// `weft init`'s command line.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Redirect this network namespace's TCP into the Weft proxy (iptables nat rules)",
    long_about = "Installs iptables nat rules in the CURRENT network namespace (enter the pod's \
                  first, e.g. `ip netns exec NS weft init`): inbound TCP goes to the proxy's \
                  inbound port, outbound TCP to its outbound port, except the proxy's own \
                  traffic, loopback and the skip lists. Idempotent; --cleanup removes the rules.",
    after_help = "Exit status: 0 done, 64 bad flag value, 69 iptables not installed, \
                  77 not root / no CAP_NET_ADMIN, 1 iptables refused the rules."
)]
pub struct InitArgs {
    /// Port of the proxy's outbound listener; the pod's outgoing TCP is redirected there
    #[arg(long, env = "WEFT_INIT_OUTBOUND_PORT", default_value_t = 4140, value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub outbound_port: u16,
    /// Port of the proxy's inbound listener; TCP arriving at the pod is redirected there
    #[arg(long, env = "WEFT_INIT_INBOUND_PORT", default_value_t = 4143, value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub inbound_port: u16,
    /// The uid the proxy runs as: its own connections are not redirected
    #[arg(
        long,
        env = "WEFT_INIT_PROXY_UID",
        default_value_t = 2102,
        value_name = "UID"
    )]
    pub proxy_uid: u32,
    /// The gid the proxy runs as: connections of processes of that group are not redirected either (none by default)
    #[arg(long, env = "WEFT_INIT_PROXY_GID", value_name = "GID")]
    pub proxy_gid: Option<u32>,
    /// Inbound ports that reach the app directly: comma separated ports or ranges (4190-4191); "" for none
    #[arg(
        long,
        env = "WEFT_INIT_SKIP_INBOUND_PORTS",
        default_value = "4190,4191",
        value_name = "PORTS"
    )]
    pub skip_inbound_ports: PortList,
    /// Outbound destination ports that bypass the proxy: comma separated ports or ranges
    #[arg(long, env = "WEFT_INIT_SKIP_OUTBOUND_PORTS", value_name = "PORTS")]
    pub skip_outbound_ports: Option<PortList>,
    /// Outbound destinations that bypass the proxy: comma separated IPv4 or IPv6 CIDRs or addresses
    #[arg(long, env = "WEFT_INIT_SKIP_OUTBOUND_CIDRS", value_name = "CIDRS")]
    pub skip_outbound_cidrs: Option<CidrList>,
    /// The iptables to use, a name on PATH or a path (e.g. iptables-legacy); its -save and -restore siblings are run
    #[arg(
        long,
        env = "WEFT_INIT_IPTABLES",
        default_value = "iptables",
        value_name = "PATH_OR_NAME"
    )]
    pub iptables: PathBuf,
    /// Install the same rules for IPv6 (through ip6tables): auto = when IPv6 is enabled in the namespace
    #[arg(long, env = "WEFT_INIT_IPV6", value_enum, default_value_t = Ipv6Mode::Auto, value_name = "MODE")]
    pub ipv6: Ipv6Mode,
    /// Print the iptables-restore input (and the ip6tables-restore input after it) and change nothing
    #[arg(long, env = "WEFT_INIT_DRY_RUN")]
    pub dry_run: bool,
    /// Remove the Weft rules (the jumps and the WEFT_* chains) instead of installing them
    #[arg(long, env = "WEFT_INIT_CLEANUP")]
    pub cleanup: bool,
}

impl InitArgs {
    pub fn rules(&self) -> Rules {
        Rules {
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            skip_inbound_ports: self.skip_inbound_ports.0.clone(),
            skip_outbound_ports: self.skip_outbound_ports.clone().unwrap_or_default().0,
            skip_outbound_cidrs: self.skip_outbound_cidrs.clone().unwrap_or_default().0,
        }
    }

    /// The address families whose rules this run installs or removes.
    pub fn families(&self) -> Vec<Family> {
        let v6 = match self.ipv6 {
            Ipv6Mode::On => true,
            Ipv6Mode::Off => false,
            Ipv6Mode::Auto => ipv6_enabled(),
        };
        let mut families = vec![Family::V4];
        if v6 {
            families.push(Family::V6);
        }
        families
    }
}

/// What `weft init` did, printed on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `--dry-run`: the restore input that would be applied, per family.
    DryRun(String),
    Installed(Vec<Summary>),
    Removed(Vec<CleanupSummary>),
}

fn lines<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str("\n")?;
        }
        item.fmt(f)?;
    }
    Ok(())
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The script already ends with a newline; print it verbatim so
            // it can be piped into iptables-restore.
            Outcome::DryRun(script) => f.write_str(script.trim_end_matches('\n')),
            Outcome::Installed(summaries) => lines(f, summaries),
            Outcome::Removed(summaries) => lines(f, summaries),
        }
    }
}

/// Runs `weft init` as its command line says.
pub fn run(args: &InitArgs) -> Result<Outcome, InitError> {
    let rules = args.rules();
    let problems = rules.problems();
    if !problems.is_empty() {
        return Err(InitError::Config(problems));
    }
    let families = args.families();
    match (args.cleanup, args.dry_run) {
        (true, true) => Ok(Outcome::DryRun(families.iter().map(|_| Rules::cleanup_script()).collect())),
        (true, false) => families.iter().map(|&f| cleanup(&args.iptables, f)).collect::<Result<_, _>>().map(Outcome::Removed),
        (false, true) => Ok(Outcome::DryRun(families.iter().map(|&f| rules.render(f)).collect())),
        // IPv4 first: an IPv6 failure leaves IPv4 intercepted and says why.
        (false, false) => families.iter().map(|&f| apply(&args.iptables, f, &rules)).collect::<Result<_, _>>().map(Outcome::Installed),
    }
}
