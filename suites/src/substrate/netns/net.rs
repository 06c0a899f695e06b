//! Network namespaces, veths, addresses and the node's Service NAT, through
//! the `ip` and `iptables` tools (iproute2, iptables).
//!
//! ```text
//!  host namespace: only the named namespaces themselves (/run/netns/weft-<run>-*)
//!
//!  weft-<run>-<k>-node        weft-<run>-<k>-<pod> (one per pod; k: the network's number in its process)
//!  ┌──────────────────────┐   ┌───────────────────────────┐
//!  │ br0 198.18.0.1/16    │   │ eth0 198.18.0.N/16        │
//!  │  ├ vp2 ══════════════╪═══╡ default via 198.18.0.1    │
//!  │  ├ vp3 ...           │   │ lo                        │
//!  │ ip_forward = 1       │   └───────────────────────────┘
//!  │ nat: VIP:port -> pod IP:port (DNAT, random per replica, like
//!  │      kube-proxy), masquerade DNATed flows (hairpin on one bridge)
//!  └──────────────────────┘
//! ```
//!
//! Every name carries the run id (`<pid>-<start time>` of the `bench` that
//! made it), so a sweep can tell a live run's namespaces from a dead one's
//! and never touches anything else.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::io::Write as _;

use crate::substrate::cleanup::{self, Action};

/// Every namespace Weft's netns substrate creates starts with this.
pub const PREFIX: &str = "weft-";
/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The node's bridge address: every pod's default gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Pods and the gateway share this prefix length (198.18.0.0/16).
const POD_PREFIX_LEN: u8 = 16;
/// Service virtual IPs come from the other half of 198.18.0.0/15.
pub const SERVICE_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);

/// The `k`-th Service's ClusterIP (from 0): 198.19.0.1, 198.19.0.2, ...
/// `None` once 198.19.0.0/16 is used up.
pub fn service_ip(k: usize) -> Option<Ipv4Addr> {
    let host = u32::try_from(k).ok()?.checked_add(1)?;
    (host < 65_535).then(|| Ipv4Addr::from(u32::from(SERVICE_NET) + host))
}

/// Who owns a set of namespaces: a `bench` process, told apart from a later
/// process that reused its pid by its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunId {
    pub pid: u32,
    pub start: u64,
}

impl RunId {
    /// This process.
    pub fn current() -> RunId {
        let pid = std::process::id();
        RunId {
            pid,
            start: cleanup::start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the owning process is still running (a killed one that is
    /// not reaped yet is not).
    pub fn alive(&self) -> bool {
        cleanup::is_running(self.pid, self.start)
    }

    /// The namespace name of `what` (`node`, `server-0`, ...) in this run.
    pub fn ns_name(&self, what: &str) -> String {
        format!("{PREFIX}{self}-{what}")
    }

    /// The run a namespace name belongs to, if it is one of ours.
    pub fn of_ns_name(name: &str) -> Option<RunId> {
        let rest = name.strip_prefix(PREFIX)?;
        let mut it = rest.splitn(3, '-');
        let pid = it.next()?.parse().ok()?;
        let start = it.next()?.parse().ok()?;
        it.next().filter(|w| !w.is_empty())?;
        Some(RunId { pid, start })
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pid, self.start)
    }
}

/// A failed `ip` / `iptables` / `sysctl` command, with what it said.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {detail}")]
pub struct NetError {
    pub command: String,
    pub detail: String,
}

/// The file that names a namespace (what `setns` opens).
pub fn ns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Run a tool to completion; stdin is `input` when given.
pub fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| NetError {
        command: command.clone(),
        detail: match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("{program} not found (install iproute2 and iptables)")
            }
            _ => e.to_string(),
        },
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NetError {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = out.status.to_string();
        }
        return Err(NetError { command, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip <args>`.
pub fn ip(args: &[&str]) -> Result<(), NetError> {
    run("ip", args, None).map(|_| ())
}

/// Run `program args` inside namespace `ns` (`ip netns exec`), for short
/// tools (iptables, sysctl, `weft init`); long-lived processes go through
/// the spawner instead (see `Proc::spawn_in`).
pub fn exec_in(
    ns: &str,
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, NetError> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all, input)
}

/// Names of the existing namespaces that start with [`PREFIX`].
pub fn list_ours() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    names.sort();
    names
}

/// Pids of the processes whose network namespace is `name`.
pub fn pids_in(name: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(ns_path(name)) else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .collect()
}

/// SIGKILL everything running in `name`, then delete it (its interfaces go
/// with it). A namespace that is already gone is not an error.
pub fn destroy(name: &str) -> Result<(), NetError> {
    if !ns_path(name).exists() {
        return Ok(());
    }
    for pid in pids_in(name) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    match ip(&["netns", "del", name]) {
        Ok(()) => Ok(()),
        Err(_) if !ns_path(name).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Delete every Weft namespace whose run is over (its `bench` is gone);
/// returns the names removed. Live runs' namespaces and names that are not
/// ours are left alone.
pub fn sweep() -> (Vec<String>, Vec<NetError>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for name in list_ours() {
        let Some(run) = RunId::of_ns_name(&name) else {
            continue;
        };
        if run.alive() {
            continue;
        }
        match destroy(&name) {
            Ok(()) => removed.push(name),
            Err(e) => errors.push(e),
        }
    }
    (removed, errors)
}

/// Why this process cannot create namespaces, if it cannot.
pub fn require_root() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "the netns substrate needs root: it creates network namespaces, veths and iptables rules (running as uid {}); run bench as root, or use --substrate local",
            nix::unistd::geteuid()
        ));
    }
    for tool in ["ip", "iptables", "iptables-restore"] {
        if which(tool).is_none() {
            return Err(format!(
                "the netns substrate needs `{tool}` (Debian packages iproute2 and iptables); it is not in PATH"
            ));
        }
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// One pod: a namespace with `eth0` on the node's bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// Short name (`server-0`, `client-3`, `control`).
    pub name: String,
    /// Namespace name (`weft-<run>-<name>`).
    pub ns: String,
    pub ip: Ipv4Addr,
}

impl Pod {
    pub fn ns_path(&self) -> PathBuf {
        ns_path(&self.ns)
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

/// The run's node namespace and its pods. Dropping it deletes them all.
pub struct Network {
    run: RunId,
    /// Tells apart networks of one process (tests build several at once).
    instance: usize,
    node: String,
    pods: Vec<Pod>,
    /// Host part of the next pod address (198.18.0.0/16: 2..=65534).
    next_host: u32,
}

impl Network {
    /// Create the node namespace: bridge, forwarding, the hairpin masquerade.
    pub fn create(run: RunId) -> Result<Network, NetError> {
        static INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let instance = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let node = run.ns_name(&format!("{instance}-node"));
        let net = Network {
            run,
            instance,
            node: node.clone(),
            pods: Vec::new(),
            next_host: 2,
        };
        add_ns(&node)?;
        let gw = format!("{GATEWAY}/{POD_PREFIX_LEN}");
        ip(&["-n", &node, "link", "set", "lo", "up"])?;
        ip(&["-n", &node, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &node, "addr", "add", &gw, "dev", "br0"])?;
        ip(&["-n", &node, "link", "set", "br0", "up"])?;
        exec_in(
            &node,
            "sysctl",
            &["-q", "-w", "net.ipv4.ip_forward=1"],
            None,
        )?;
        // Client and server share the bridge: a DNATed reply would go straight
        // back over L2 without being un-NATed, so DNATed flows are masqueraded
        // (what kube-proxy does for hairpin traffic).
        exec_in(
            &node,
            "iptables-restore",
            &["--noflush"],
            Some(
                "*nat\n:WEFT-SERVICES - [0:0]\n\
                 -A PREROUTING -m comment --comment \"weft: Service VIPs\" -j WEFT-SERVICES\n\
                 -A POSTROUTING -m conntrack --ctstate DNAT -m comment --comment \"weft: hairpin\" -j MASQUERADE\n\
                 COMMIT\n",
            ),
        )?;
        Ok(net)
    }

    pub fn run(&self) -> RunId {
        self.run
    }

    /// The node namespace's name (where Service NAT lives).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Create a pod: a namespace with `eth0` (a veth into the node's bridge),
    /// the next free address, and a default route via the node.
    pub fn add_pod(&mut self, name: &str) -> Result<Pod, NetError> {
        if self.next_host > 65_534 {
            return Err(NetError {
                command: format!("add pod {name}"),
                detail: "198.18.0.0/16 is exhausted".into(),
            });
        }
        let host = self.next_host;
        self.next_host += 1;
        let addr = Ipv4Addr::from(u32::from(GATEWAY) - 1 + host);
        let pod = Pod {
            name: name.to_string(),
            ns: self.run.ns_name(&format!("{}-{name}", self.instance)),
            ip: addr,
        };
        add_ns(&pod.ns)?;
        // Registered before any interface exists, so a failure halfway is
        // still cleaned up on drop.
        self.pods.push(pod.clone());
        let peer = format!("vp{host}");
        let cidr = format!("{addr}/{POD_PREFIX_LEN}");
        let gw = GATEWAY.to_string();
        let n = self.node.as_str();
        let p = pod.ns.as_str();
        ip(&[
            "-n", n, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", p,
        ])?;
        ip(&["-n", n, "link", "set", &peer, "master", "br0", "up"])?;
        ip(&["-n", p, "link", "set", "lo", "up"])?;
        ip(&["-n", p, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", p, "link", "set", "eth0", "up"])?;
        ip(&["-n", p, "route", "add", "default", "via", &gw])?;
        Ok(pod)
    }

    /// Delete a pod (and whatever still runs in it).
    pub fn remove_pod(&mut self, name: &str) -> Result<(), NetError> {
        let Some(i) = self.pods.iter().position(|p| p.name == name) else {
            return Ok(());
        };
        let pod = self.pods.remove(i);
        let r = destroy(&pod.ns);
        cleanup::forget(&destroy_action(&pod.ns));
        r
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Point Service `vip:port` at `endpoints` in the node's NAT (replacing
    /// every earlier Service rule): each new connection picks one endpoint
    /// uniformly at random, as kube-proxy's iptables mode does.
    pub fn set_service(
        &self,
        vip: Ipv4Addr,
        port: u16,
        endpoints: &[SocketAddr],
    ) -> Result<(), NetError> {
        self.set_services(&[ServiceNat {
            vip,
            port,
            endpoints: endpoints.to_vec(),
        }])
    }

    /// [`Network::set_service`] for several Service ports at once, in one
    /// `iptables-restore` (replacing every earlier Service rule).
    pub fn set_services(&self, services: &[ServiceNat]) -> Result<(), NetError> {
        exec_in(
            &self.node,
            "iptables-restore",
            &["--noflush"],
            Some(&nat_rules(services)),
        )
        .map(|_| ())
    }
}

/// One Service port in the node's NAT: `vip:port` to one of `endpoints`
/// (pod IP and target port) per new connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNat {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<SocketAddr>,
}

/// The `iptables-restore` input for `services`: the WEFT-SERVICES chain
/// rebuilt, each port's endpoints picked uniformly (endpoint i of n with
/// probability 1/(n-i), the last one unconditionally). A port with no
/// endpoint gets no rule: the node has no route to the ClusterIP, so its
/// connections fail at once (host unreachable), as kube-proxy rejects them.
fn nat_rules(services: &[ServiceNat]) -> String {
    let mut rules = String::from("*nat\n:WEFT-SERVICES - [0:0]\n");
    for s in services {
        let (vip, port) = (s.vip, s.port);
        let n = s.endpoints.len();
        for (i, ep) in s.endpoints.iter().enumerate() {
            let pick = match n - i {
                1 => String::new(),
                left => format!(
                    "-m statistic --mode random --probability {:.6} ",
                    1.0 / left as f64
                ),
            };
            rules.push_str(&format!(
                "-A WEFT-SERVICES -d {vip}/32 -p tcp --dport {port} {pick}-m comment --comment \"weft: endpoint {i}\" -j DNAT --to-destination {ep}\n"
            ));
        }
    }
    rules.push_str("COMMIT\n");
    rules
}

impl Drop for Network {
    fn drop(&mut self) {
        for pod in self.pods.drain(..).rev() {
            if let Err(e) = destroy(&pod.ns) {
                eprintln!("bench: {e}");
            }
            cleanup::forget(&destroy_action(&pod.ns));
        }
        if let Err(e) = destroy(&self.node) {
            eprintln!("bench: {e}");
        }
        cleanup::forget(&destroy_action(&self.node));
    }
}

/// `ip netns add`, registered for cleanup from the moment it exists.
fn add_ns(name: &str) -> Result<(), NetError> {
    cleanup::register(destroy_action(name));
    ip(&["netns", "add", name])
}

/// [`destroy`] as a command the watchdog can run without knowing what a
/// namespace is: SIGKILL what runs in it, delete it; one already gone is
/// not an error.
fn destroy_action(name: &str) -> Action {
    const SCRIPT: &str = r#"PATH="$PATH:/usr/sbin:/sbin"
[ -e "/run/netns/$0" ] || exit 0
for pid in $(ip netns pids "$0"); do kill -9 "$pid" 2>/dev/null; done
ip netns del "$0" || ! [ -e "/run/netns/$0" ]"#;
    Action::Run {
        what: format!("network namespace {name}"),
        argv: ["sh", "-c", SCRIPT, name].map(String::from).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_run_and_parse_back() {
        let run = RunId {
            pid: 4242,
            start: 987654,
        };
        let name = run.ns_name("server-0");
        assert_eq!(name, "weft-4242-987654-server-0");
        assert_eq!(RunId::of_ns_name(&name), Some(run));
        for other in [
            "weft-t99-a",
            "weft-4242",
            "weft-4242-x-node",
            "weft-1-2-",
            "other-1-2-node",
            "weft-bench-xyz",
        ] {
            assert_eq!(RunId::of_ns_name(other), None, "{other}");
        }
    }

    #[test]
    fn service_rules_pick_each_endpoint_uniformly() {
        let ep = |s: &str| s.parse::<SocketAddr>().unwrap();
        let rules = nat_rules(&[
            ServiceNat {
                vip: Ipv4Addr::new(198, 19, 0, 1),
                port: 80,
                endpoints: vec![ep("198.18.0.2:8080"), ep("198.18.0.3:8080")],
            },
            ServiceNat {
                vip: Ipv4Addr::new(198, 19, 0, 1),
                port: 7070,
                endpoints: vec![ep("198.18.0.2:7070")],
            },
            ServiceNat {
                vip: Ipv4Addr::new(198, 19, 0, 2),
                port: 80,
                endpoints: Vec::new(),
            },
        ]);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines.len(), 6, "{rules}");
        assert_eq!(lines[..2], ["*nat", ":WEFT-SERVICES - [0:0]"]);
        assert!(
            lines[2].contains("-d 198.19.0.1/32 -p tcp --dport 80 -m statistic --mode random --probability 0.500000")
                && lines[2].ends_with("--to-destination 198.18.0.2:8080"),
            "{rules}"
        );
        assert!(
            !lines[3].contains("statistic") && lines[3].ends_with("198.18.0.3:8080"),
            "{rules}"
        );
        assert!(
            lines[4].contains("--dport 7070") && lines[4].ends_with("198.18.0.2:7070"),
            "{rules}"
        );
        assert!(
            !rules.contains("198.19.0.2"),
            "no endpoint, no rule: {rules}"
        );
        assert_eq!(lines[5], "COMMIT");
    }

    #[test]
    fn service_ips_stay_in_their_half() {
        assert_eq!(service_ip(0), Some(Ipv4Addr::new(198, 19, 0, 1)));
        assert_eq!(service_ip(255), Some(Ipv4Addr::new(198, 19, 1, 0)));
        assert_eq!(service_ip(65_533), Some(Ipv4Addr::new(198, 19, 255, 254)));
        assert_eq!(service_ip(65_534), None);
    }

    #[test]
    fn the_cleanup_command_leaves_an_absent_namespace_alone() {
        let Action::Run { argv, what } = destroy_action("weft-0-0-never-made") else {
            panic!("a command");
        };
        assert!(what.contains("weft-0-0-never-made"), "{what}");
        assert_eq!(
            crate::substrate::cleanup::watchdog::run_command(&argv, std::time::Duration::from_secs(10)),
            Ok(())
        );
    }

    #[test]
    fn a_dead_run_is_told_from_a_live_one() {
        let me = RunId::current();
        assert!(me.alive());
        assert!(!RunId {
            start: me.start + 1,
            ..me
        }
        .alive());
    }
}
