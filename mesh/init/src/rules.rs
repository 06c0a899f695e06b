//! The interception rules as `iptables-restore` input, and what an
//! `iptables-save` of the nat table says is already installed.
//!
//! Everything lives in two chains of the nat table that Weft owns, so a run
//! can replace their contents wholesale (a chain declaration flushes it under
//! `--noflush`) and cleanup can remove them without touching anyone else's
//! rules. The only rules outside those chains are the two jumps into them.

use std::fmt::Write as _;

use ipnet::IpNet;

use mesh_kube::lists::PortRange;

/// Chain that PREROUTING sends inbound TCP through.
pub const INBOUND_CHAIN: &str = "WEFT_INBOUND";
/// Chain that OUTPUT sends locally generated TCP through.
pub const OUTBOUND_CHAIN: &str = "WEFT_OUTBOUND";

/// The jumps into the Weft chains, written exactly as `iptables-save` prints
/// them back, so a later run recognises its own jump and leaves it alone.
const INBOUND_JUMP: &str = r#"-A PREROUTING -p tcp -m comment --comment "weft: inbound TCP goes through WEFT_INBOUND" -j WEFT_INBOUND"#;
const OUTBOUND_JUMP: &str = r#"-A OUTPUT -p tcp -m comment --comment "weft: outbound TCP goes through WEFT_OUTBOUND" -j WEFT_OUTBOUND"#;

/// The source address of mesh-proxy's inbound connections to the local app
/// (as Istio's 127.0.0.6): the hairpin rule would otherwise send the
/// inbound proxy's own forward to the pod IP back into the inbound proxy,
/// forever. Any 127/8 address is local, so the proxy can bind it without
/// setup.
pub const INBOUND_SOURCE_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 6);

/// iptables' multiport match takes at most 15 ports (a range counts twice).
const MULTIPORT_SLOTS: usize = 15;

/// An address family: IPv4 rules go through iptables, IPv6 rules through
/// ip6tables. A dual-stack pod needs both, or its IPv6 TCP would bypass the
/// proxy (and inbound authorization with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// `iptables` or `ip6tables`: the tool family of this address family.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The loopback network, whose traffic is never intercepted.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    /// The loopback address a hairpin rule leaves alone: the proxy's own
    /// connections to 127.0.0.1 are never the pod calling itself.
    fn localhost(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// The source address mesh-proxy's inbound side dials the local app
    /// from ([`INBOUND_SOURCE_V4`]); IPv6 has no spare loopback address.
    fn inbound_source(self) -> Option<&'static str> {
        match self {
            Family::V4 => Some("127.0.0.6/32"),
            Family::V6 => None,
        }
    }

    /// Whether `net` is of this family.
    pub(crate) fn holds(self, net: &IpNet) -> bool {
        matches!((self, net), (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_)))
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

fn header(family: Family) -> String {
    format!(
        "# weft init: transparent TCP interception for the mesh proxy, {family} ({}-restore --noflush input)\n",
        family.tool()
    )
}

/// What to intercept and where to send it. `Default` is what `weft init`
/// installs with no flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The proxy's outbound listener: the pod's outgoing TCP lands here.
    pub outbound_port: u16,
    /// The proxy's inbound listener: TCP arriving at the pod lands here.
    pub inbound_port: u16,
    /// The uid the proxy runs as; its own connections are never redirected
    /// (they would loop back into the proxy).
    pub proxy_uid: u32,
    /// The gid the proxy runs as (Istio's proxy gid): connections of any
    /// process of that group are not redirected either.
    pub proxy_gid: Option<u32>,
    /// Inbound destination ports that reach the app directly (the proxy's
    /// admin port, by default).
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports that bypass the proxy.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound destinations that bypass the proxy (each family's rules
    /// take that family's entries).
    pub skip_outbound_cidrs: Vec<IpNet>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            outbound_port: 4140,
            inbound_port: 4143,
            proxy_uid: 2102,
            proxy_gid: None,
            // 4190 is kept free for a future control port, 4191 is the admin
            // server: probes and scrapers must reach them, not the proxy's
            // inbound listener.
            skip_inbound_ports: vec![
                PortRange::single(4190).expect("non-zero"),
                PortRange::single(4191).expect("non-zero"),
            ],
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: Vec::new(),
        }
    }
}

impl Rules {
    /// Every problem with these rules, or none. Ports within the skip lists
    /// are valid by construction ([`PortRange`]).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.outbound_port == 0 {
            problems.push(
                "outbound port 0: the proxy's outbound listener needs a real port".to_owned(),
            );
        }
        if self.inbound_port == 0 {
            problems
                .push("inbound port 0: the proxy's inbound listener needs a real port".to_owned());
        }
        // iptables' owner match on 0 exempts every root process: the whole
        // pod's traffic (and an attacker's) would bypass the proxy.
        if self.proxy_uid == 0 {
            problems.push(
                "--proxy-uid 0: root's traffic would bypass the proxy (every root process, not just the proxy); run the proxy as its own non-root uid (default 2102) and pass that".to_owned(),
            );
        }
        if self.proxy_gid == Some(0) {
            problems.push(
                "--proxy-gid 0: the root group's traffic would bypass the proxy; run the proxy with its own non-root group and pass that, or leave --proxy-gid out".to_owned(),
            );
        }
        if self.outbound_port != 0 && self.outbound_port == self.inbound_port {
            problems.push(format!(
                "outbound and inbound port are both {}: the proxy could not tell outbound from inbound traffic",
                self.outbound_port
            ));
        }
        problems
    }

    /// The complete `iptables-restore --noflush` (IPv4) or
    /// `ip6tables-restore --noflush` (IPv6) input for a namespace that has
    /// no Weft rules yet (and what `--dry-run` prints). On a namespace that
    /// has them, [`crate::apply`] leaves out the jumps already present.
    pub fn render(&self, family: Family) -> String {
        self.render_for(family, &Installed::default()).script
    }

    /// The `iptables-restore --noflush` input that removes what
    /// [`Rules::render`] installs (one jump each, both chains). [`crate::cleanup`]
    /// removes whatever is actually there instead.
    pub fn cleanup_script() -> String {
        let installed = Installed {
            chains: vec![INBOUND_CHAIN.to_owned(), OUTBOUND_CHAIN.to_owned()],
            jumps: vec![INBOUND_JUMP.to_owned(), OUTBOUND_JUMP.to_owned()],
        };
        installed.cleanup_script().expect("something to remove")
    }

    /// The script that brings a namespace in state `installed` to exactly
    /// these rules with one jump each.
    pub(crate) fn render_for(&self, family: Family, installed: &Installed) -> Rendered {
        let mut out = header(family);
        out.push_str("*nat\n");
        // Declaring a chain creates it, or flushes it if it exists: the new
        // contents replace the old in the same transaction.
        for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }

        rule(
            &mut out,
            INBOUND_CHAIN,
            "-i lo",
            "loopback is not intercepted",
            "RETURN",
        );
        multiport(
            &mut out,
            INBOUND_CHAIN,
            &self.skip_inbound_ports,
            "skip-inbound-ports",
        );
        rule(
            &mut out,
            INBOUND_CHAIN,
            "-p tcp",
            "inbound TCP to the proxy inbound port",
            &format!("REDIRECT --to-ports {}", self.inbound_port),
        );

        // The hairpin: a pod calling its own Service gets its own pod IP as
        // the destination, and the outbound proxy's connection there goes
        // through `lo`, where PREROUTING never sees it. Sent to the inbound
        // chain instead, it goes through the inbound proxy (authorization,
        // metrics) like any other peer's. It must come before the proxy's
        // exemption, and the inbound proxy's own forward to the app (from
        // 127.0.0.6) must come before it, or it would loop.
        if let Some(source) = family.inbound_source() {
            rule(
                &mut out,
                OUTBOUND_CHAIN,
                &format!("-s {source} -o lo"),
                "the inbound proxy's connections to the app",
                "RETURN",
            );
            for owner in self.owners() {
                rule(
                    &mut out,
                    OUTBOUND_CHAIN,
                    &format!("-o lo ! -d {} {owner}", family.localhost()),
                    "hairpin: the proxy calling its own pod goes through the inbound proxy",
                    INBOUND_CHAIN,
                );
            }
        }
        for owner in self.owners() {
            rule(&mut out, OUTBOUND_CHAIN, &owner, "traffic of the proxy itself", "RETURN");
        }
        rule(
            &mut out,
            OUTBOUND_CHAIN,
            "-o lo",
            "loopback is not intercepted",
            "RETURN",
        );
        rule(
            &mut out,
            OUTBOUND_CHAIN,
            &format!("-d {}", family.loopback()),
            "loopback is not intercepted",
            "RETURN",
        );
        multiport(
            &mut out,
            OUTBOUND_CHAIN,
            &self.skip_outbound_ports,
            "skip-outbound-ports",
        );
        for cidr in self.skip_outbound_cidrs.iter().filter(|c| family.holds(c)) {
            rule(
                &mut out,
                OUTBOUND_CHAIN,
                &format!("-d {cidr}"),
                "skip-outbound-cidrs",
                "RETURN",
            );
        }
        rule(
            &mut out,
            OUTBOUND_CHAIN,
            "-p tcp",
            "outbound TCP to the proxy outbound port",
            &format!("REDIRECT --to-ports {}", self.outbound_port),
        );

        let mut jumps = JumpChanges::default();
        for (ours, chain) in [
            (INBOUND_JUMP, INBOUND_CHAIN),
            (OUTBOUND_JUMP, OUTBOUND_CHAIN),
        ] {
            let builtin = ours.split_whitespace().nth(1).expect("-A CHAIN");
            let present: Vec<&String> = installed
                .jumps
                .iter()
                .filter(|line| {
                    rule_chain(line) == Some(builtin) && jump_target(line) == Some(chain)
                })
                .collect();
            // Keep our own jump if it is there (its position in the chain
            // stays put); drop duplicates and jumps in any other form (an
            // older weft, a hand-made one) and add ours if it is missing.
            let keep = present.iter().position(|line| line.as_str() == ours);
            for (i, line) in present.iter().enumerate() {
                if Some(i) != keep {
                    let _ = writeln!(out, "-D{}", &line["-A".len()..]);
                    jumps.removed += 1;
                }
            }
            if keep.is_some() {
                jumps.kept += 1;
            } else {
                let _ = writeln!(out, "{ours}");
                jumps.added += 1;
            }
        }
        out.push_str("COMMIT\n");
        Rendered { script: out, jumps }
    }
}

impl Rules {
    /// The owner matches of the proxy's traffic: its uid, and its gid if set.
    fn owners(&self) -> Vec<String> {
        let mut owners = vec![format!("-m owner --uid-owner {}", self.proxy_uid)];
        if let Some(gid) = self.proxy_gid {
            owners.push(format!("-m owner --gid-owner {gid}"));
        }
        owners
    }
}

/// Restore input plus what it does to the jumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub script: String,
    pub jumps: JumpChanges,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct JumpChanges {
    pub added: usize,
    pub kept: usize,
    pub removed: usize,
}

fn rule(out: &mut String, chain: &str, matches: &str, comment: &str, target: &str) {
    let _ = writeln!(
        out,
        "-A {chain} {matches} -m comment --comment \"weft: {comment}\" -j {target}"
    );
}

fn multiport(out: &mut String, chain: &str, ports: &[PortRange], comment: &str) {
    let mut chunk: Vec<String> = Vec::new();
    let mut slots = 0;
    let flush = |out: &mut String, chunk: &mut Vec<String>| {
        if !chunk.is_empty() {
            let matches = format!("-p tcp -m multiport --dports {}", chunk.join(","));
            rule(out, chain, &matches, comment, "RETURN");
            chunk.clear();
        }
    };
    for range in ports {
        if slots + range.multiport_slots() > MULTIPORT_SLOTS {
            flush(out, &mut chunk);
            slots = 0;
        }
        slots += range.multiport_slots();
        chunk.push(range.to_iptables());
    }
    flush(out, &mut chunk);
}

/// The chain a saved rule line (`-A CHAIN ...`) is in.
fn rule_chain(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    (words.next() == Some("-A")).then(|| words.next()).flatten()
}

/// The chain a saved rule line jumps to: `iptables-save` prints the target
/// last, and a jump to a user chain takes no target options.
fn jump_target(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().rev();
    let target = words.next()?;
    (words.next() == Some("-j")).then_some(target)
}

fn is_weft_chain(chain: &str) -> bool {
    chain == INBOUND_CHAIN || chain == OUTBOUND_CHAIN
}

/// The Weft parts of a nat table, read from `iptables-save -t nat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Installed {
    /// Weft chains that exist.
    pub chains: Vec<String>,
    /// Saved lines (`-A ...`) of rules outside the Weft chains that jump
    /// into one of them.
    pub jumps: Vec<String>,
}

impl Installed {
    pub fn parse(save: &str) -> Self {
        let mut installed = Installed::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(chain) = line.strip_prefix(':') {
                let name = chain.split_whitespace().next().unwrap_or("");
                if is_weft_chain(name) {
                    installed.chains.push(name.to_owned());
                }
            } else if let (Some(chain), Some(target)) = (rule_chain(line), jump_target(line)) {
                if is_weft_chain(target) && !is_weft_chain(chain) {
                    installed.jumps.push(line.to_owned());
                }
            }
        }
        installed
    }

    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }

    /// Restore input removing every jump into a Weft chain, then the chains;
    /// `None` when there is nothing to remove.
    pub fn cleanup_script(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut out = String::from("# weft init --cleanup: remove the mesh interception rules (iptables-restore --noflush input)\n*nat\n");
        // A chain that is still jumped to, or not empty, cannot be deleted.
        for line in &self.jumps {
            let _ = writeln!(out, "-D{}", &line["-A".len()..]);
        }
        for chain in &self.chains {
            let _ = writeln!(out, "-F {chain}");
        }
        for chain in &self.chains {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_SCRIPT: &str = r#"# weft init: transparent TCP interception for the mesh proxy, IPv4 (iptables-restore --noflush input)
*nat
:WEFT_INBOUND - [0:0]
:WEFT_OUTBOUND - [0:0]
-A WEFT_INBOUND -i lo -m comment --comment "weft: loopback is not intercepted" -j RETURN
-A WEFT_INBOUND -p tcp -m multiport --dports 4190,4191 -m comment --comment "weft: skip-inbound-ports" -j RETURN
-A WEFT_INBOUND -p tcp -m comment --comment "weft: inbound TCP to the proxy inbound port" -j REDIRECT --to-ports 4143
-A WEFT_OUTBOUND -s 127.0.0.6/32 -o lo -m comment --comment "weft: the inbound proxy's connections to the app" -j RETURN
-A WEFT_OUTBOUND -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 2102 -m comment --comment "weft: hairpin: the proxy calling its own pod goes through the inbound proxy" -j WEFT_INBOUND
-A WEFT_OUTBOUND -m owner --uid-owner 2102 -m comment --comment "weft: traffic of the proxy itself" -j RETURN
-A WEFT_OUTBOUND -o lo -m comment --comment "weft: loopback is not intercepted" -j RETURN
-A WEFT_OUTBOUND -d 127.0.0.0/8 -m comment --comment "weft: loopback is not intercepted" -j RETURN
-A WEFT_OUTBOUND -p tcp -m comment --comment "weft: outbound TCP to the proxy outbound port" -j REDIRECT --to-ports 4140
-A PREROUTING -p tcp -m comment --comment "weft: inbound TCP goes through WEFT_INBOUND" -j WEFT_INBOUND
-A OUTPUT -p tcp -m comment --comment "weft: outbound TCP goes through WEFT_OUTBOUND" -j WEFT_OUTBOUND
COMMIT
"#;

    fn ports(s: &str) -> Vec<PortRange> {
        s.parse::<crate::PortList>().unwrap().0
    }

    #[test]
    fn default_rules_render_exactly() {
        assert_eq!(Rules::default().render(Family::V4), DEFAULT_SCRIPT);
    }

    #[test]
    fn ipv6_rules_are_the_same_with_ipv6_loopback_and_cidrs() {
        let rules = Rules {
            skip_outbound_cidrs: "10.96.0.0/12,2001:db8::/32".parse::<crate::CidrList>().unwrap().0,
            ..Rules::default()
        };
        let v4 = rules.render(Family::V4);
        let v6 = rules.render(Family::V6);
        assert!(v6.starts_with("# weft init: transparent TCP interception for the mesh proxy, IPv6 (ip6tables-restore --noflush input)\n"), "{v6}");
        assert!(v6.contains("-A WEFT_OUTBOUND -d ::1/128 -m comment"), "{v6}");
        assert!(v6.contains("-A WEFT_OUTBOUND -d 2001:db8::/32 -m comment"), "{v6}");
        assert!(!v6.contains("10.96.0.0/12") && !v6.contains("127.0.0.0/8"), "{v6}");
        assert!(v4.contains("-d 10.96.0.0/12") && !v4.contains("2001:db8"), "{v4}");
        // Apart from the header, the loopback and the CIDRs, the same rules.
        // IPv6 has no hairpin rules (no spare loopback source to tell the
        // inbound proxy's forward to the app from the pod calling itself).
        let same = |s: &str| -> Vec<String> {
            s.lines()
                .skip(1)
                .filter(|l| !l.contains(" -d ") && !l.contains(" -s 127.0.0.6/32 "))
                .map(str::to_owned)
                .collect()
        };
        assert!(!v6.lines().any(|l| l.starts_with("-A WEFT_OUTBOUND") && l.ends_with("-j WEFT_INBOUND")), "{v6}");
        assert_eq!(same(&v4), same(&v6));
    }

    #[test]
    fn skip_lists_render_exactly() {
        let rules = Rules {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: 1337,
            proxy_gid: Some(1338),
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: ports("25,3306-3307"),
            skip_outbound_cidrs: "10.96.0.0/12,169.254.169.254"
                .parse::<crate::CidrList>()
                .unwrap()
                .0,
        };
        let expected = r#"# weft init: transparent TCP interception for the mesh proxy, IPv4 (iptables-restore --noflush input)
*nat
:WEFT_INBOUND - [0:0]
:WEFT_OUTBOUND - [0:0]
-A WEFT_INBOUND -i lo -m comment --comment "weft: loopback is not intercepted" -j RETURN
-A WEFT_INBOUND -p tcp -m comment --comment "weft: inbound TCP to the proxy inbound port" -j REDIRECT --to-ports 15006
-A WEFT_OUTBOUND -s 127.0.0.6/32 -o lo -m comment --comment "weft: the inbound proxy's connections to the app" -j RETURN
-A WEFT_OUTBOUND -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -m comment --comment "weft: hairpin: the proxy calling its own pod goes through the inbound proxy" -j WEFT_INBOUND
-A WEFT_OUTBOUND -o lo ! -d 127.0.0.1/32 -m owner --gid-owner 1338 -m comment --comment "weft: hairpin: the proxy calling its own pod goes through the inbound proxy" -j WEFT_INBOUND
-A WEFT_OUTBOUND -m owner --uid-owner 1337 -m comment --comment "weft: traffic of the proxy itself" -j RETURN
-A WEFT_OUTBOUND -m owner --gid-owner 1338 -m comment --comment "weft: traffic of the proxy itself" -j RETURN
-A WEFT_OUTBOUND -o lo -m comment --comment "weft: loopback is not intercepted" -j RETURN
-A WEFT_OUTBOUND -d 127.0.0.0/8 -m comment --comment "weft: loopback is not intercepted" -j RETURN
-A WEFT_OUTBOUND -p tcp -m multiport --dports 25,3306:3307 -m comment --comment "weft: skip-outbound-ports" -j RETURN
-A WEFT_OUTBOUND -d 10.96.0.0/12 -m comment --comment "weft: skip-outbound-cidrs" -j RETURN
-A WEFT_OUTBOUND -d 169.254.169.254/32 -m comment --comment "weft: skip-outbound-cidrs" -j RETURN
-A WEFT_OUTBOUND -p tcp -m comment --comment "weft: outbound TCP to the proxy outbound port" -j REDIRECT --to-ports 15001
-A PREROUTING -p tcp -m comment --comment "weft: inbound TCP goes through WEFT_INBOUND" -j WEFT_INBOUND
-A OUTPUT -p tcp -m comment --comment "weft: outbound TCP goes through WEFT_OUTBOUND" -j WEFT_OUTBOUND
COMMIT
"#;
        assert_eq!(rules.render(Family::V4), expected);
    }

    #[test]
    fn multiport_chunks_hold_at_most_15_slots() {
        // 14 single ports (14 slots), then a range (2 slots) must start a new
        // rule; 20 more single ports fill one rule of 15 and one of 7 with it.
        let mut list: Vec<String> = (1000..1014).map(|p| p.to_string()).collect();
        list.push("2000-2010".into());
        list.extend((3000..3020).map(|p| p.to_string()));
        let rules = Rules {
            skip_inbound_ports: ports(&list.join(",")),
            ..Rules::default()
        };
        let lines: Vec<String> = rules
            .render(Family::V4)
            .lines()
            .filter(|l| l.contains("--dports"))
            .map(|l| l.split_whitespace().nth(7).unwrap().to_owned())
            .collect();
        let first: Vec<String> = (1000..1014).map(|p| p.to_string()).collect();
        let second: Vec<String> = std::iter::once("2000:2010".to_owned())
            .chain((3000..3013).map(|p| p.to_string()))
            .collect();
        let third: Vec<String> = (3013..3020).map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            vec![first.join(","), second.join(","), third.join(",")]
        );
        for line in &lines {
            let slots: usize = line
                .split(',')
                .map(|p| if p.contains(':') { 2 } else { 1 })
                .sum();
            assert!(slots <= 15, "{line}");
        }
    }

    #[test]
    fn cleanup_script_removes_jumps_then_chains() {
        let expected = r#"# weft init --cleanup: remove the mesh interception rules (iptables-restore --noflush input)
*nat
-D PREROUTING -p tcp -m comment --comment "weft: inbound TCP goes through WEFT_INBOUND" -j WEFT_INBOUND
-D OUTPUT -p tcp -m comment --comment "weft: outbound TCP goes through WEFT_OUTBOUND" -j WEFT_OUTBOUND
-F WEFT_INBOUND
-F WEFT_OUTBOUND
-X WEFT_INBOUND
-X WEFT_OUTBOUND
COMMIT
"#;
        assert_eq!(Rules::cleanup_script(), expected);
    }

    const SAVED: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Thu Nov 26 16:28:30 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j WEFT_INBOUND
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OTHER - [0:0]
:WEFT_INBOUND - [0:0]
:WEFT_OUTBOUND - [0:0]
-A PREROUTING -p tcp -m comment --comment "weft: inbound TCP goes through WEFT_INBOUND" -j WEFT_INBOUND
-A PREROUTING -p udp -j OTHER
-A PREROUTING -p tcp -j WEFT_INBOUND
-A OUTPUT -p tcp -m comment --comment "weft: outbound TCP goes through WEFT_OUTBOUND" -j WEFT_OUTBOUND
-A OUTPUT -p tcp -m comment --comment "weft: outbound TCP goes through WEFT_OUTBOUND" -j WEFT_OUTBOUND
-A OTHER -j WEFT_OUTBOUND
-A WEFT_INBOUND -p tcp -m comment --comment "weft: inbound TCP to the proxy inbound port" -j REDIRECT --to-ports 4143
COMMIT
# Completed on Thu Nov 26 16:28:30 2026
"#;

    #[test]
    fn installed_state_is_read_from_the_nat_table_only() {
        let installed = Installed::parse(SAVED);
        assert_eq!(installed.chains, vec!["WEFT_INBOUND", "WEFT_OUTBOUND"]);
        assert_eq!(installed.jumps.len(), 5, "{:#?}", installed.jumps);
        assert!(installed.jumps.iter().all(|j| !j.starts_with("-A INPUT")));
        assert!(Installed::parse("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n").is_empty());
        assert_eq!(Installed::parse("").cleanup_script(), None);
    }

    #[test]
    fn reapplying_keeps_one_jump_each_and_drops_the_rest() {
        let installed = Installed::parse(SAVED);
        let rendered = Rules::default().render_for(Family::V4, &installed);
        assert_eq!(
            rendered.jumps,
            JumpChanges {
                added: 0,
                kept: 2,
                removed: 2
            }
        );
        let jump_lines: Vec<&str> = rendered
            .script
            .lines()
            .filter(|l| {
                l.starts_with("-D") || l.starts_with("-A PREROUTING") || l.starts_with("-A OUTPUT")
            })
            .collect();
        assert_eq!(
            jump_lines,
            vec![
                "-D PREROUTING -p tcp -j WEFT_INBOUND",
                r#"-D OUTPUT -p tcp -m comment --comment "weft: outbound TCP goes through WEFT_OUTBOUND" -j WEFT_OUTBOUND"#,
            ]
        );
        // A second run on a clean install changes no jump at all.
        let clean = Installed::parse(&format!("*nat\n:WEFT_INBOUND - [0:0]\n:WEFT_OUTBOUND - [0:0]\n{INBOUND_JUMP}\n{OUTBOUND_JUMP}\nCOMMIT\n"));
        assert_eq!(
            Rules::default().render_for(Family::V4, &clean).jumps,
            JumpChanges {
                added: 0,
                kept: 2,
                removed: 0
            }
        );
    }

    #[test]
    fn cleanup_removes_every_jump_into_weft_chains() {
        let script = Installed::parse(SAVED).cleanup_script().unwrap();
        let deletes = script.lines().filter(|l| l.starts_with("-D ")).count();
        assert_eq!(deletes, 5);
        assert!(script.contains("-D OTHER -j WEFT_OUTBOUND\n"));
        assert!(script.ends_with("-X WEFT_INBOUND\n-X WEFT_OUTBOUND\nCOMMIT\n"));
    }

    #[test]
    fn hairpin_goes_to_the_inbound_chain_after_the_inbound_proxys_exemption_and_before_the_proxys() {
        let rules = Rules { proxy_gid: Some(2103), ..Rules::default() };
        let script = rules.render(Family::V4);
        let outbound: Vec<&str> = script.lines().filter(|l| l.starts_with("-A WEFT_OUTBOUND")).collect();
        let position = |needle: &str| {
            outbound.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in\n{script}"))
        };
        let exempt_inbound = position("-s 127.0.0.6/32 -o lo ");
        let hairpin_uid = position("-o lo ! -d 127.0.0.1/32 -m owner --uid-owner 2102 ");
        let hairpin_gid = position("-o lo ! -d 127.0.0.1/32 -m owner --gid-owner 2103 ");
        let proxy_uid = position("-A WEFT_OUTBOUND -m owner --uid-owner 2102 ");
        let proxy_gid = position("-A WEFT_OUTBOUND -m owner --gid-owner 2103 ");
        let loopback = position("-A WEFT_OUTBOUND -o lo -m comment");
        assert_eq!(exempt_inbound, 0, "{script}");
        assert!(exempt_inbound < hairpin_uid && hairpin_uid < hairpin_gid, "{script}");
        assert!(hairpin_gid < proxy_uid && proxy_uid < proxy_gid && proxy_gid < loopback, "{script}");
        assert!(outbound[hairpin_uid].ends_with("-j WEFT_INBOUND") && outbound[hairpin_gid].ends_with("-j WEFT_INBOUND"));
        assert!(outbound[exempt_inbound].ends_with("-j RETURN"), "{script}");
        assert_eq!(INBOUND_SOURCE_V4.to_string() + "/32", "127.0.0.6/32");
        // The inbound chain's skip list still applies to a hairpinned
        // connection (the admin port is reached directly), and its redirect
        // is the inbound port.
        assert!(script.contains("-A WEFT_INBOUND -p tcp -m multiport --dports 4190,4191 "), "{script}");
    }

    #[test]
    fn the_gid_exemption_is_only_there_when_asked_for() {
        assert!(!Rules::default().render(Family::V4).contains("--gid-owner"));
        let script = Rules { proxy_gid: Some(7), ..Rules::default() }.render(Family::V6);
        assert!(script.contains("-A WEFT_OUTBOUND -m owner --gid-owner 7 -m comment --comment \"weft: traffic of the proxy itself\" -j RETURN\n"), "{script}");
    }

    #[test]
    fn uid_or_gid_0_is_refused_naming_the_flag() {
        let rules = Rules { proxy_uid: 0, proxy_gid: Some(0), ..Rules::default() };
        let problems = rules.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("--proxy-uid 0: root's traffic would bypass the proxy"), "{problems:?}");
        assert!(problems[1].starts_with("--proxy-gid 0:"), "{problems:?}");
        assert!(Rules { proxy_uid: 1, proxy_gid: Some(1), ..Rules::default() }.problems().is_empty());
    }

    #[test]
    fn problems_are_all_reported() {
        assert!(Rules::default().problems().is_empty());
        let rules = Rules {
            outbound_port: 0,
            inbound_port: 0,
            ..Rules::default()
        };
        assert_eq!(rules.problems().len(), 2);
        let rules = Rules {
            outbound_port: 4143,
            ..Rules::default()
        };
        assert!(
            rules.problems()[0].contains("both 4143"),
            "{:?}",
            rules.problems()
        );
    }
}
