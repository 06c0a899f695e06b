//! `weft init` for real: the `weft` binary installs its rules in a network
//! namespace made for the test, and real connections show where they land
//! (SO_ORIGINAL_DST on the redirected ones). Needs root (namespaces,
//! iptables); CI runs as root.
//!
//! Each test makes its own namespaces `weft-t<pid>-<what>`, joined by a veth
//! pair with addresses from 198.18.<x>.0/24 (x unique per test); a Drop guard
//! removes them, also when the test panics. Nothing touches the host's own
//! namespace. Sockets are made by test threads that entered a namespace with
//! setns(2): a socket stays in the namespace it was created in.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};

use nix::sys::socket::{getsockopt, sockopt, SockaddrIn};
use weft_testkit::{patience, run_ok as ok, TestNetns};

const PROXY_UID: &str = "2102";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it creates network namespaces and installs iptables rules in them (run `cargo test -p mesh-init` as root; CI does)"
    );
}

/// The test namespaces (created and removed by `weft_testkit::TestNetns`)
/// and what these tests do in them.
type Netns = TestNetns;

trait NetnsExt {
    fn weft(&self, args: &[&str]) -> Output;
    fn weft_ok(&self, args: &[&str]) -> String;
    fn nat(&self, save: &str) -> String;
}

impl NetnsExt for Netns {
    fn weft(&self, args: &[&str]) -> Output {
        let mut all = vec!["init"];
        all.extend_from_slice(args);
        self.exec(env!("CARGO_BIN_EXE_weft"), &all)
    }

    #[track_caller]
    fn weft_ok(&self, args: &[&str]) -> String {
        let out = self.weft(args);
        assert!(
            out.status.success(),
            "weft init {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nat(&self, save: &str) -> String {
        let out = self.exec(save, &["-t", "nat"]);
        assert!(
            out.status.success(),
            "{save}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Pod namespace A (where rules go) and peer B, veth `eth0` in each,
/// A = 198.18.<x>.1, B = 198.18.<x>.2.
struct Pair {
    a: Netns,
    b: Netns,
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
}

impl Pair {
    fn new(what: &str, x: u8) -> Self {
        let a = Netns::new(&format!("{what}a"));
        let b = Netns::new(&format!("{what}b"));
        ok(
            "ip",
            &[
                "-n", &a.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                "netns", &b.name,
            ],
        );
        for (ns, host) in [(&a, 1), (&b, 2)] {
            ok(
                "ip",
                &[
                    "-n",
                    &ns.name,
                    "addr",
                    "add",
                    &format!("198.18.{x}.{host}/24"),
                    "dev",
                    "eth0",
                ],
            );
            ok("ip", &["-n", &ns.name, "link", "set", "eth0", "up"]);
        }
        Pair {
            a,
            b,
            a_ip: Ipv4Addr::new(198, 18, x, 1),
            b_ip: Ipv4Addr::new(198, 18, x, 2),
        }
    }
}

fn listen(ns: &Netns, addr: impl Into<SocketAddr>) -> TcpListener {
    let addr = addr.into();
    let listener = ns
        .run(|| TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name));
    listener.set_nonblocking(true).unwrap();
    listener
}

fn connect(ns: &Netns, addr: impl Into<SocketAddr>) -> std::io::Result<TcpStream> {
    let addr = addr.into();
    ns.run(|| TcpStream::connect_timeout(&addr, patience()))
}

/// The next connection on `listener`, polled until the patience runs out.
#[track_caller]
fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    // A blocking accept bounded by SO_RCVTIMEO (Linux applies it to
    // accept); then back to non-blocking for `pending`.
    listener.set_nonblocking(false).unwrap();
    socket2::SockRef::from(listener)
        .set_read_timeout(Some(patience()))
        .unwrap();
    let accepted = listener.accept();
    listener.set_nonblocking(true).unwrap();
    match accepted {
        Ok((stream, peer)) => (stream, peer),
        Err(e) => panic!(
            "{what}: no connection arrived on {:?} within {:?}: {e}",
            listener.local_addr(),
            patience()
        ),
    }
}

/// Whether a connection is waiting. Callers ask only after the client's
/// connect() returned: the handshake is done by then, so a connection that
/// went to this listener is already queued.
fn pending(listener: &TcpListener) -> bool {
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

fn original_dst(stream: &TcpStream) -> SocketAddrV4 {
    let raw = getsockopt(stream, sockopt::OriginalDst).expect("getsockopt(SO_ORIGINAL_DST)");
    SocketAddrV4::from(SockaddrIn::from(raw))
}

/// Sends a line through a fresh connection and reads it on the other end,
/// so a connection is known to carry data, not just to have been accepted.
#[track_caller]
fn carries_data(client: &mut TcpStream, server: &mut TcpStream) {
    client.write_all(b"weft\n").unwrap();
    server.set_read_timeout(Some(patience())).unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"weft\n");
}

#[test]
fn outbound_tcp_lands_on_the_proxy_with_its_original_destination_except_proxy_uid_and_loopback() {
    require_root();
    let pair = Pair::new("o", 71);
    let (a, b) = (&pair.a, &pair.b);
    let outbound = listen(a, (Ipv4Addr::LOCALHOST, 4140));
    let peer_8080 = listen(b, (Ipv4Addr::UNSPECIFIED, 8080));
    let loopback = listen(a, (Ipv4Addr::LOCALHOST, 0));
    let pod_ip_port = listen(a, (Ipv4Addr::UNSPECIFIED, 0));

    let summary = a.weft_ok(&[]);
    assert!(summary.contains("2 added"), "{summary}");

    // The app (root, any uid but the proxy's) dials B:80, where nothing
    // listens: the connection is the proxy's, which learns B:80.
    let mut client = connect(a, (pair.b_ip, 80)).expect("redirected connect to B:80");
    let (mut server, _) = accept(&outbound, "A -> B:80");
    assert_eq!(original_dst(&server), SocketAddrV4::new(pair.b_ip, 80));
    carries_data(&mut client, &mut server);

    // Same for B:8080 while B really listens there: still the proxy's.
    let _client = connect(a, (pair.b_ip, 8080)).expect("redirected connect to B:8080");
    let (server, _) = accept(&outbound, "A -> B:8080 as root");
    assert_eq!(original_dst(&server), SocketAddrV4::new(pair.b_ip, 8080));
    assert!(
        !pending(&peer_8080),
        "root's connection to B:8080 must go to the proxy, not to B"
    );

    // The proxy's own uid goes straight to B:8080.
    let dial = format!("exec 3<>/dev/tcp/{}/8080 && echo weft >&3", pair.b_ip);
    let out = a.exec(
        "setpriv",
        &[
            &format!("--reuid={PROXY_UID}"),
            &format!("--regid={PROXY_UID}"),
            "--clear-groups",
            "bash",
            "-c",
            &dial,
        ],
    );
    assert!(
        out.status.success(),
        "uid {PROXY_UID} dialing B:8080: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut at_b, from) = accept(&peer_8080, "A as the proxy uid -> B:8080");
    assert_eq!(from.ip(), pair.a_ip);
    let mut line = [0u8; 5];
    at_b.set_read_timeout(Some(patience())).unwrap();
    at_b.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"weft\n");
    assert!(
        !pending(&outbound),
        "the proxy's own connection must not be redirected to itself"
    );

    // Loopback, by 127.0.0.1 or by the pod's own address, stays put.
    let mut client = connect(a, loopback.local_addr().unwrap()).expect("loopback connect");
    let (mut server, _) = accept(&loopback, "A -> 127.0.0.1");
    carries_data(&mut client, &mut server);
    let port = pod_ip_port.local_addr().unwrap().port();
    let _client = connect(a, (pair.a_ip, port)).expect("connect to the pod's own address");
    accept(&pod_ip_port, "A -> its own pod address");
    assert!(
        !pending(&outbound),
        "loopback traffic must not be redirected"
    );
}

#[test]
fn inbound_tcp_lands_on_the_proxy_with_its_original_destination_except_skipped_ports() {
    require_root();
    let pair = Pair::new("i", 72);
    let (a, b) = (&pair.a, &pair.b);
    let inbound = listen(a, (Ipv4Addr::UNSPECIFIED, 4143));
    let admin = listen(a, (Ipv4Addr::UNSPECIFIED, 4191));

    a.weft_ok(&[]);

    let mut client = connect(b, (pair.a_ip, 8080)).expect("B -> A:8080");
    let (mut server, from) = accept(&inbound, "B -> A:8080");
    assert_eq!(from.ip(), pair.b_ip);
    assert_eq!(original_dst(&server), SocketAddrV4::new(pair.a_ip, 8080));
    carries_data(&mut client, &mut server);

    // 4191 (admin) is skipped: it reaches its own listener.
    let mut client = connect(b, (pair.a_ip, 4191)).expect("B -> A:4191");
    let (mut server, _) = accept(&admin, "B -> A:4191");
    carries_data(&mut client, &mut server);
    assert!(
        !pending(&inbound),
        "a skipped port must not reach the proxy"
    );

    // 4190 is skipped too and nothing listens there: refused, not redirected.
    let err = connect(b, (pair.a_ip, 4190)).expect_err("B -> A:4190 has no listener");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(!pending(&inbound));
}

/// The lines of a saved nat table that jump from `chain` to `target`.
fn jumps(save: &str, chain: &str, target: &str) -> usize {
    save.lines()
        .filter(|l| l.starts_with(&format!("-A {chain} ")) && l.ends_with(&format!(" -j {target}")))
        .count()
}

fn idempotent_and_removable(iptables: &str, what: &str) {
    require_root();
    let ns = Netns::new(what);
    let save = format!("{iptables}-save");
    let iptables_bin = Command::new(iptables).arg("--version").output();
    assert!(
        iptables_bin.is_ok_and(|o| o.status.success()),
        "this test needs `{iptables}` (the iptables package) on PATH"
    );
    let run = |args: &[&str]| {
        let mut all = vec!["--iptables", iptables];
        all.extend_from_slice(args);
        ns.weft_ok(&all)
    };
    // Someone else's rule in the same table: weft must leave it alone.
    ok(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            iptables,
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "lo",
            "-j",
            "ACCEPT",
        ],
    );
    let foreign = "-A POSTROUTING -o lo -j ACCEPT";

    let first = run(&[]);
    assert!(
        first.contains("2 added, 0 already present, 0 removed"),
        "{first}"
    );
    let after_first = ns.nat(&save);
    let second = run(&[]);
    assert!(
        second.contains("0 added, 2 already present, 0 removed"),
        "{second}"
    );
    let after_second = ns.nat(&save);
    for table in [&after_first, &after_second] {
        assert_eq!(jumps(table, "PREROUTING", "WEFT_INBOUND"), 1, "{table}");
        assert_eq!(jumps(table, "OUTPUT", "WEFT_OUTBOUND"), 1, "{table}");
        assert!(table.contains(foreign), "{table}");
    }
    let weft_lines = |t: &str| {
        t.lines()
            .filter(|l| l.contains("WEFT"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(weft_lines(&after_first), weft_lines(&after_second));

    // A hand-made duplicate jump is collapsed back to one.
    let dup = [
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "-j",
        "WEFT_INBOUND",
    ];
    ok(
        "ip",
        &[&["netns", "exec", ns.name.as_str(), iptables][..], &dup[..]].concat(),
    );
    let third = run(&[]);
    assert!(
        third.contains("0 added, 2 already present, 1 removed"),
        "{third}"
    );
    assert_eq!(jumps(&ns.nat(&save), "PREROUTING", "WEFT_INBOUND"), 1);

    // Other settings replace the chain contents, still one jump each.
    run(&[
        "--inbound-port",
        "5143",
        "--skip-outbound-cidrs",
        "192.0.2.0/24",
    ]);
    let changed = ns.nat(&save);
    assert!(
        changed.contains("--to-ports 5143") && !changed.contains("--to-ports 4143"),
        "{changed}"
    );
    assert!(changed.contains("-d 192.0.2.0/24"), "{changed}");
    assert_eq!(
        jumps(&changed, "PREROUTING", "WEFT_INBOUND"),
        1,
        "{changed}"
    );

    let removed = run(&["--cleanup"]);
    assert!(removed.contains("removed 2 jump(s)"), "{removed}");
    let clean = ns.nat(&save);
    assert!(
        !clean.contains("WEFT") && !clean.contains("weft"),
        "{clean}"
    );
    assert!(clean.contains(foreign), "{clean}");
    let again = run(&["--cleanup"]);
    assert!(again.contains("nothing to remove"), "{again}");
}

#[test]
fn init_twice_keeps_one_jump_each_and_cleanup_removes_every_weft_rule() {
    idempotent_and_removable("iptables", "idem");
}

#[test]
fn the_same_holds_with_iptables_legacy() {
    idempotent_and_removable("iptables-legacy", "leg");
}

/// The test binary may sit under a directory other users cannot enter
/// (/root); uid 2102 runs a copy in a world-readable scratch directory.
struct ScratchCopy(PathBuf);

impl Drop for ScratchCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn without_root_it_says_it_must_run_as_root_and_exits_77() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let ns = Netns::new("nr");
    let dir = ScratchCopy(std::env::temp_dir().join(format!("weft-t{}-bin", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let weft = dir.0.join("weft");
    std::fs::copy(env!("CARGO_BIN_EXE_weft"), &weft).unwrap();
    std::fs::set_permissions(&weft, std::fs::Permissions::from_mode(0o755)).unwrap();

    for iptables in ["iptables", "iptables-legacy"] {
        let out = ns.exec(
            "setpriv",
            &[
                &format!("--reuid={PROXY_UID}"),
                &format!("--regid={PROXY_UID}"),
                "--clear-groups",
                weft.to_str().unwrap(),
                "init",
                "--iptables",
                iptables,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(77), "{iptables}: {stderr}");
        assert!(
            stderr.contains(
                "weft init must run as root (CAP_NET_ADMIN) inside the pod's network namespace"
            ),
            "{iptables}: {stderr}"
        );
    }
    let table = ns.nat("iptables-save");
    assert!(!table.contains("WEFT"), "{table}");
}

/// A = 2001:2:0:<x, in hex>::1, B = ...::2 (the IPv6 benchmarking prefix,
/// RFC 5180), on the same veth pair as IPv4.
fn v6(x: u8, host: u16) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0x2001, 2, 0, u16::from(x), 0, 0, 0, host)
}

#[test]
fn ipv6_tcp_is_intercepted_too_so_a_dual_stack_pod_cannot_bypass_the_proxy() {
    use std::net::{Ipv6Addr, SocketAddrV6};
    require_root();
    let x = 73;
    let pair = Pair::new("six", x);
    let (a, b) = (&pair.a, &pair.b);
    for (ns, host) in [(a, 1), (b, 2)] {
        // nodad: usable at once, no duplicate address detection wait.
        ok("ip", &["-n", &ns.name, "addr", "add", &format!("{}/64", v6(x, host)), "dev", "eth0", "nodad"]);
    }
    let bind_v6_only = |ns: &Netns, addr: SocketAddrV6| {
        let socket = ns
            .run(|| socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None))
            .unwrap();
        socket.set_only_v6(true).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.bind(&SocketAddr::V6(addr).into()).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        socket.listen(16).unwrap();
        let listener: TcpListener = socket.into();
        listener.set_nonblocking(true).unwrap();
        listener
    };
    let outbound6 = bind_v6_only(a, SocketAddrV6::new(Ipv6Addr::LOCALHOST, 4140, 0, 0));
    let inbound6 = bind_v6_only(a, SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 4143, 0, 0));
    let loopback6 = bind_v6_only(a, SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0));

    let summary = a.weft_ok(&["--ipv6", "on"]);
    assert!(summary.contains("IPv4 nat table") && summary.contains("IPv6 nat table"), "{summary}");
    let save6 = a.nat("ip6tables-save");
    assert_eq!(jumps(&save6, "PREROUTING", "WEFT_INBOUND"), 1, "{save6}");
    assert!(save6.contains("-d ::1/128"), "{save6}");

    let original_dst6 = |s: &TcpStream| {
        socket2::SockRef::from(s)
            .original_dst_v6()
            .expect("getsockopt(IP6T_SO_ORIGINAL_DST)")
            .as_socket()
            .expect("an IPv6 socket address")
    };

    // A's app dials [B]:80: the proxy's outbound listener gets it.
    let mut client = connect(a, (v6(x, 2), 80)).expect("redirected connect to [B]:80");
    let (mut server, _) = accept(&outbound6, "A -> [B]:80");
    assert_eq!(original_dst6(&server), SocketAddr::from((v6(x, 2), 80)));
    carries_data(&mut client, &mut server);

    // B dials [A]:8080: the proxy's inbound listener gets it.
    let mut client = connect(b, (v6(x, 1), 8080)).expect("[B] -> [A]:8080");
    let (mut server, from) = accept(&inbound6, "[B] -> [A]:8080");
    assert_eq!(from.ip(), std::net::IpAddr::V6(v6(x, 2)));
    assert_eq!(original_dst6(&server), SocketAddr::from((v6(x, 1), 8080)));
    carries_data(&mut client, &mut server);

    // ::1 stays put.
    let mut client = connect(a, loopback6.local_addr().unwrap()).expect("[::1] connect");
    let (mut server, _) = accept(&loopback6, "A -> [::1]");
    carries_data(&mut client, &mut server);
    assert!(!pending(&outbound6), "IPv6 loopback must not be redirected");

    let removed = a.weft_ok(&["--cleanup", "--ipv6", "on"]);
    assert!(removed.contains("from the IPv6 nat table"), "{removed}");
    let clean6 = a.nat("ip6tables-save");
    assert!(!clean6.contains("WEFT"), "{clean6}");
}

/// Runs `program args` in `ns` as `uid`:`gid`, with no supplementary groups.
fn exec_as(ns: &Netns, uid: &str, gid: &str, program: &str, args: &[&str]) -> Output {
    let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={gid}"));
    let mut all = vec![reuid.as_str(), regid.as_str(), "--clear-groups", program];
    all.extend_from_slice(args);
    ns.exec("setpriv", &all)
}

/// Dials `dst` from `ns` as `uid`:`gid` and writes one line ("weft\n").
#[track_caller]
fn dial_as(ns: &Netns, uid: &str, gid: &str, dst: SocketAddr) {
    let dial = format!("exec 3<>/dev/tcp/{}/{} && echo weft >&3", dst.ip(), dst.port());
    let out = exec_as(ns, uid, gid, "bash", &["-c", &dial]);
    assert!(
        out.status.success(),
        "{uid}:{gid} dialing {dst}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The next connection on `listener` and the line it carries.
#[track_caller]
fn accept_line(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    let (mut stream, from) = accept(listener, what);
    stream.set_read_timeout(Some(patience())).unwrap();
    let mut line = [0u8; 5];
    stream.read_exact(&mut line).unwrap_or_else(|e| panic!("{what}: reading: {e}"));
    assert_eq!(&line, b"weft\n", "{what}");
    (stream, from)
}

#[test]
fn the_proxy_calling_its_own_pod_ip_goes_through_the_inbound_proxy() {
    require_root();
    let pair = Pair::new("h", 74);
    let a = &pair.a;
    let inbound = listen(a, (Ipv4Addr::UNSPECIFIED, 4143));
    // Any app port is intercepted: bind one and read it back.
    let app = listen(a, (Ipv4Addr::UNSPECIFIED, 0));
    let app_port = app.local_addr().unwrap().port();
    let admin = listen(a, (Ipv4Addr::UNSPECIFIED, 4191));
    a.weft_ok(&[]);

    // The hairpin: the proxy (its uid) dials its own pod IP on an app port,
    // as it does when the app calls its own Service. The connection lands
    // on the inbound port, which learns the app port it was going to.
    let own = SocketAddr::from((pair.a_ip, app_port));
    dial_as(a, PROXY_UID, PROXY_UID, own);
    let (server, _) = accept_line(&inbound, "the proxy uid -> its own pod IP:<app port>");
    assert_eq!(original_dst(&server), SocketAddrV4::new(pair.a_ip, app_port));
    assert!(!pending(&app), "the hairpinned connection must not reach the app around the inbound proxy");

    // The inbound proxy's own forward to the app comes from 127.0.0.6 and
    // reaches the app (else every inbound connection would loop).
    let dst = format!("http://{own}/");
    let forward = std::thread::scope(|s| {
        let curl = s.spawn(|| {
            exec_as(a, PROXY_UID, PROXY_UID, "curl", &["-s", "-o", "/dev/null", "--interface", "127.0.0.6", "--max-time", "30", &dst])
        });
        let (stream, from) = accept(&app, "the proxy uid from 127.0.0.6 -> its pod IP:<app port>");
        drop(stream);
        let _ = curl.join().expect("curl thread");
        from
    });
    assert_eq!(forward.ip(), mesh_init::INBOUND_SOURCE_V4);
    assert!(!pending(&inbound), "the inbound proxy's forward to the app must not loop back into it");

    // The proxy dialing 127.0.0.1 is not a hairpin; skipped inbound ports
    // (the admin port) are reached directly; the app itself (root) calling
    // its own pod IP is not intercepted either.
    dial_as(a, PROXY_UID, PROXY_UID, SocketAddr::from((Ipv4Addr::LOCALHOST, app_port)));
    accept_line(&app, "the proxy uid -> 127.0.0.1:<app port>");
    dial_as(a, PROXY_UID, PROXY_UID, SocketAddr::from((pair.a_ip, 4191)));
    accept_line(&admin, "the proxy uid -> its own pod IP:4191");
    let mut client = connect(a, own).expect("root -> its own pod IP:<app port>");
    let (mut server, _) = accept(&app, "root -> its own pod IP:<app port>");
    carries_data(&mut client, &mut server);
    assert!(!pending(&inbound), "only the proxy's hairpin goes to the inbound port");
}

#[test]
fn processes_of_the_proxy_gid_are_exempt_and_hairpinned_like_the_proxy_uid() {
    require_root();
    let pair = Pair::new("g", 75);
    let (a, b) = (&pair.a, &pair.b);
    let outbound = listen(a, (Ipv4Addr::LOCALHOST, 4140));
    let inbound = listen(a, (Ipv4Addr::UNSPECIFIED, 4143));
    let peer = listen(b, (Ipv4Addr::UNSPECIFIED, 8080));
    a.weft_ok(&["--proxy-gid", "2103"]);

    // uid 3000 is nobody in particular; with the proxy's gid it goes straight to B.
    let at_b = SocketAddr::from((pair.b_ip, 8080));
    dial_as(a, "3000", "2103", at_b);
    let (_, from) = accept_line(&peer, "gid 2103 -> B:8080");
    assert_eq!(from.ip(), pair.a_ip);
    assert!(!pending(&outbound), "the proxy gid's connection must not be redirected");

    // The same uid with another group is the app: redirected.
    dial_as(a, "3000", "3000", at_b);
    let (server, _) = accept_line(&outbound, "uid 3000, gid 3000 -> B:8080");
    assert_eq!(original_dst(&server), SocketAddrV4::new(pair.b_ip, 8080));
    assert!(!pending(&peer));

    // And the proxy gid calling its own pod IP is hairpinned.
    dial_as(a, "3000", "2103", SocketAddr::from((pair.a_ip, 8080)));
    let (server, _) = accept_line(&inbound, "gid 2103 -> its own pod IP:8080");
    assert_eq!(original_dst(&server), SocketAddrV4::new(pair.a_ip, 8080));
}
