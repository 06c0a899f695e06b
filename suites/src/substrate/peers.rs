//! Peer proxies (nginx, HAProxy): finding them and writing their configs.
//!
//! Fairness: each peer gets exactly one worker thread, like each Weft proxy,
//! keeps upstream connections alive and reuses them, and logs nothing per
//! request. With several server replicas both balance round robin (their
//! default; neither knows latency), against which `weft`'s P2C over
//! peak-EWMA is measured.
//!
//! Per protocol: gRPC through nginx's `grpc_pass` (h2c both ways) and
//! HAProxy's `proto h2` on both sides; WebSocket through nginx with the
//! `Upgrade` / `Connection` headers passed on (HAProxy's HTTP mode does it
//! by itself); opaque TCP through nginx's `stream {}` module and HAProxy's
//! `mode tcp`. An nginx without its stream module cannot carry TCP: those
//! cells are skipped saying so.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::DeployError;
use crate::suite::{Protocol, Variant};

/// The peer proxies installed on this machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    /// How nginx gets its `stream {}` module (opaque TCP); `None`: it has none.
    pub nginx_stream: Option<NginxStream>,
}

/// Where nginx's `stream` module comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NginxStream {
    /// Compiled in (`--with-stream`).
    Builtin,
    /// A dynamic module to `load_module` (Debian's libnginx-mod-stream).
    Module(PathBuf),
}

/// Where distributions put nginx's dynamic modules.
const NGINX_MODULE_DIRS: [&str; 3] =
    ["/usr/lib/nginx/modules", "/usr/lib64/nginx/modules", "/usr/local/nginx/modules"];

/// `nginx -V` names `--with-stream` when the module is compiled in
/// (`--with-stream=dynamic` when it is built as a module).
fn nginx_stream(bin: &Path) -> Option<NginxStream> {
    let out = Command::new(bin).arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if text.split_whitespace().any(|w| w == "--with-stream") {
        return Some(NginxStream::Builtin);
    }
    NGINX_MODULE_DIRS
        .iter()
        .map(|d| Path::new(d).join("ngx_stream_module.so"))
        .find(|p| p.is_file())
        .map(NginxStream::Module)
}

impl Peers {
    pub fn find() -> Peers {
        let nginx = find_binary("nginx");
        Peers {
            nginx_stream: nginx.as_deref().and_then(nginx_stream),
            nginx,
            haproxy: find_binary("haproxy"),
        }
    }

    /// Whether `variant` can run with these peers (Weft variants always can).
    pub fn check(&self, variant: Variant) -> Result<(), String> {
        match variant {
            v if v.cluster_only() => Err(format!(
                "{v} runs on --substrate kind or kube only: its CLI installs it in a Kubernetes cluster"
            )),
            Variant::Nginx | Variant::NginxMtls if self.nginx.is_none() => {
                Err("nginx not found in PATH or /usr/sbin; install it (apt-get install nginx) to compare against it".into())
            }
            Variant::Haproxy | Variant::HaproxyMtls if self.haproxy.is_none() => {
                Err("haproxy not found in PATH or /usr/sbin; install it (apt-get install haproxy) to compare against it".into())
            }
            _ => Ok(()),
        }
    }

    /// Their versions, for the record's environment.
    pub fn versions(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        if let Some(ver) = self.nginx.as_deref().and_then(nginx_version) {
            v.insert("nginx".into(), ver);
        }
        if let Some(ver) = self.haproxy.as_deref().and_then(haproxy_version) {
            v.insert("haproxy".into(), ver);
        }
        v
    }

    /// Write `variant`'s config (one hop on `listen` to `upstreams`) into
    /// `dir` and return the command that runs it in the foreground; nginx
    /// logs its errors to `dir/error.log`.
    pub fn command(
        &self,
        variant: Variant,
        dir: &Path,
        listen: SocketAddr,
        upstreams: &[SocketAddr],
        protocol: Protocol,
    ) -> Result<Command, DeployError> {
        self.check(variant)
            .map_err(|reason| DeployError::Unavailable { reason })?;
        let (bin, conf) = match variant {
            Variant::Nginx if protocol.is_tcp() => {
                let module = match &self.nginx_stream {
                    Some(NginxStream::Builtin) => None,
                    Some(NginxStream::Module(path)) => Some(path.as_path()),
                    None => return Err(DeployError::Unavailable {
                        reason: format!(
                            "nginx has no stream module (not compiled in, no ngx_stream_module.so in {}): it cannot relay opaque TCP ({}); install libnginx-mod-stream",
                            NGINX_MODULE_DIRS.join(", "),
                            protocol.as_str()
                        ),
                    }),
                };
                (&self.nginx, nginx_stream_conf(dir, listen, upstreams, module))
            }
            Variant::Nginx => (&self.nginx, nginx_conf(dir, listen, upstreams, protocol)),
            Variant::Haproxy => (&self.haproxy, haproxy_conf(listen, upstreams, protocol)),
            other => {
                return Err(DeployError::Start {
                    component: other.as_str().into(),
                    detail: "not a peer proxy".into(),
                })
            }
        };
        peer_command(bin.as_ref().expect("checked above"), variant == Variant::Nginx, dir, conf)
    }
}

/// Look for `name` on PATH, then in the sbin dirs Debian-likes put daemons in
/// (often missing from a non-root PATH).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `nginx -v` prints `nginx version: nginx/1.22.1` on stderr.
pub fn nginx_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("-v").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split("nginx/").nth(1))
        .map(|v| v.trim().to_string())
}

/// `haproxy -v` prints `HAProxy version 2.6.12-1+deb12u3 2025/10/03 - ...`.
pub fn haproxy_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("HAProxy version ")
                .or_else(|| l.strip_prefix("HA-Proxy version "))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// The top of every nginx config bench writes: `title` as a comment, the
/// `load` line (a dynamic module, or empty), one worker in the foreground,
/// errors and pid in `dir`.
pub(crate) fn nginx_main(title: &str, load: &str, dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# {title}
{load}daemon off;
master_process on;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;

events {{
    worker_connections 16384;
}}
"#
    )
}

/// The `http {}` settings every nginx hop shares: no access log, temp
/// paths in `dir`, and connections kept open for a whole run.
pub(crate) fn nginx_http_settings(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    # The default (1000) would make nginx alone close client and upstream
    # connections every few seconds at benchmark rates.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
"#
    )
}

/// An nginx `upstream {}` block's servers and its idle connection pool.
pub(crate) fn nginx_upstream(name: &str, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams.iter().map(|u| format!("        server {u};\n")).collect();
    format!(
        "    upstream {name} {{\n{servers}        keepalive 64;\n        keepalive_requests 10000000;\n        keepalive_timeout 300s;\n    }}\n"
    )
}

/// HAProxy's `global` section for every config bench writes, after `title`.
pub(crate) fn haproxy_global(title: &str) -> String {
    format!(
        r#"# {title}
global
    nbthread 1
    # HAProxy needs ~2 fds per connection and refuses to start if it cannot
    # raise RLIMIT_NOFILE that far; 4000 is plenty for any suite's connections.
    maxconn 4000
"#
    )
}

/// Writes `conf` into `dir` and returns the command running that peer in
/// the foreground: nginx (`nginx` true) with its prefix and error log in
/// `dir`, HAProxy with `-db`.
pub(crate) fn peer_command(bin: &Path, nginx: bool, dir: &Path, conf: String) -> Result<Command, DeployError> {
    let conf_path = dir.join(if nginx { "nginx.conf" } else { "haproxy.cfg" });
    std::fs::write(&conf_path, conf).map_err(|source| DeployError::Io {
        what: format!("write {}", conf_path.display()),
        source,
    })?;
    let mut cmd = Command::new(bin);
    if nginx {
        cmd.arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&conf_path);
    } else {
        cmd.arg("-db").arg("-f").arg(&conf_path);
    }
    Ok(cmd)
}

/// An nginx config for one reverse-proxy hop to `upstreams` (round robin);
/// all paths inside `dir`.
pub fn nginx_conf(
    dir: &Path,
    listen: SocketAddr,
    upstreams: &[SocketAddr],
    protocol: Protocol,
) -> String {
    let http2 = if protocol.http() == Protocol::Http2 {
        " http2"
    } else {
        ""
    };
    let pass = match protocol {
        // h2c to the server too (gRPC needs HTTP/2 end to end), reusing
        // upstream connections like proxy_pass.
        Protocol::Grpc | Protocol::GrpcStream { .. } => "            grpc_pass grpc://backend;\n".to_string(),
        _ => {
            let upgrade = match protocol {
                // An upgrade only when the client asks, so plain requests
                // keep their upstream connection alive.
                Protocol::WebSocket => "            proxy_set_header Upgrade $http_upgrade;\n            proxy_set_header Connection $connection_upgrade;\n            proxy_read_timeout 300s;\n",
                _ => "            proxy_set_header Connection \"\";\n",
            };
            format!("            proxy_pass http://backend;\n            proxy_http_version 1.1;\n{upgrade}            proxy_set_header Host $host;\n")
        }
    };
    let main = nginx_main("Generated by bench for one measured cell; one worker like every proxy measured.", "", dir);
    let settings = nginx_http_settings(dir);
    let upstream = nginx_upstream("backend", upstreams);
    format!(
        r#"{main}
http {{
{settings}
{upstream}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}

    server {{
        listen {listen}{http2};
        location / {{
{pass}        }}
    }}
}}
"#
    )
}

/// An nginx config relaying opaque TCP from `listen` to `upstreams` (round
/// robin) in its `stream {}` module, loaded from `module` when it is not
/// compiled in.
pub fn nginx_stream_conf(dir: &Path, listen: SocketAddr, upstreams: &[SocketAddr], module: Option<&Path>) -> String {
    let load = module.map_or(String::new(), |m| format!("load_module {};\n", m.display()));
    let main = nginx_main("Generated by bench for one measured cell; one worker like every proxy measured.", &load, dir);
    let servers: String = upstreams.iter().map(|u| format!("        server {u};\n")).collect();
    format!(
        r#"{main}
stream {{
    upstream backend {{
{servers}    }}

    server {{
        listen {listen};
        proxy_pass backend;
        proxy_timeout 300s;
    }}
}}
"#
    )
}

/// An HAProxy config for one reverse-proxy hop to `upstreams` (round
/// robin; run in the foreground, `-db`).
pub fn haproxy_conf(listen: SocketAddr, upstreams: &[SocketAddr], protocol: Protocol) -> String {
    let grpc = matches!(protocol, Protocol::Grpc | Protocol::GrpcStream { .. });
    // gRPC needs HTTP/2 to the server as well.
    let server_proto = if grpc { " proto h2" } else { "" };
    let servers: String = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| format!("    server app{i} {u}{server_proto}\n"))
        .collect();
    let proto = if protocol.http() == Protocol::Http2 {
        " proto h2"
    } else {
        ""
    };
    // Opaque TCP: a plain relay, without the HTTP mode's options.
    let mode = match protocol.is_tcp() {
        true => "mode tcp",
        false => "mode http\n    timeout http-keep-alive 300s\n    http-reuse always",
    };
    let global = haproxy_global("Generated by bench for one measured cell; one thread like every proxy measured.");
    format!(
        r#"{global}
defaults
    {mode}
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    # An upgraded WebSocket is a tunnel.
    timeout tunnel 300s

frontend bench_in
    bind {listen}{proto}
    default_backend bench_app

backend bench_app
    balance roundrobin
{servers}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_have_one_worker_and_keepalive() {
        let l: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let u: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let n = nginx_conf(Path::new("/tmp/x"), l, &[u], Protocol::Http2);
        assert!(n.contains("worker_processes 1;"));
        assert!(n.contains("listen 127.0.0.1:1000 http2;"));
        assert!(n.contains("server 127.0.0.1:2000;"));
        assert!(n.contains("keepalive 64;"));
        assert!(n.contains("proxy_set_header Connection \"\";"));
        let h = haproxy_conf(l, &[u], Protocol::Http2);
        assert!(h.contains("nbthread 1"));
        assert!(h.contains("bind 127.0.0.1:1000 proto h2"));
        assert!(h.contains("http-reuse always"));
        assert!(h.contains("    server app0 127.0.0.1:2000\n"), "{h}");
        assert!(!haproxy_conf(l, &[u], Protocol::Http1).contains("proto h2"));
    }

    #[test]
    fn every_replica_is_an_upstream() {
        let l: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let us: Vec<SocketAddr> = (1..=3)
            .map(|i| format!("127.0.0.1:200{i}").parse().unwrap())
            .collect();
        let n = nginx_conf(Path::new("/tmp/x"), l, &us, Protocol::Http1);
        let h = haproxy_conf(l, &us, Protocol::Http1);
        for (i, u) in us.iter().enumerate() {
            assert!(n.contains(&format!("        server {u};\n")), "{n}");
            assert!(h.contains(&format!("    server app{i} {u}\n")), "{h}");
        }
        assert!(h.contains("balance roundrobin"));
    }

    #[test]
    fn each_protocol_gets_its_config() {
        let l: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let u: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let d = Path::new("/tmp/x");
        let n = nginx_conf(d, l, &[u], Protocol::Grpc);
        assert!(n.contains("listen 127.0.0.1:1000 http2;") && n.contains("grpc_pass grpc://backend;"), "{n}");
        let h = haproxy_conf(l, &[u], Protocol::Grpc);
        assert!(h.contains("bind 127.0.0.1:1000 proto h2") && h.contains("server app0 127.0.0.1:2000 proto h2\n"), "{h}");
        let n = nginx_conf(d, l, &[u], Protocol::WebSocket);
        assert!(n.contains("proxy_set_header Upgrade $http_upgrade;") && !n.contains(" http2;"), "{n}");
        let n = nginx_stream_conf(d, l, &[u], Some(Path::new("/m/ngx_stream_module.so")));
        assert!(n.starts_with("# Generated") && n.contains("load_module /m/ngx_stream_module.so;\n"), "{n}");
        assert!(n.contains("stream {") && n.contains("listen 127.0.0.1:1000;") && n.contains("server 127.0.0.1:2000;"), "{n}");
        assert!(!nginx_stream_conf(d, l, &[u], None).contains("load_module"));
        for p in [Protocol::Tcp, Protocol::TcpChurn] {
            let h = haproxy_conf(l, &[u], p);
            assert!(h.contains("mode tcp") && !h.contains("http-reuse") && !h.contains("mode http"), "{h}");
        }
    }

    /// The installed peers accept every protocol's config (`nginx -t`,
    /// `haproxy -c`); skipped where they are not installed.
    #[test]
    fn installed_peers_accept_every_protocol_config() {
        let peers = Peers::find();
        let l: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let u: SocketAddr = "127.0.0.1:2".parse().unwrap();
        for name in crate::suite::Protocol::NAMES {
            let protocol = crate::suite::Protocol::parse(name).expect("a known name");
            let dir = tempfile::tempdir().unwrap();
            for variant in [Variant::Nginx, Variant::Haproxy] {
                let Ok(mut cmd) = peers.command(variant, dir.path(), l, &[u], protocol) else { continue };
                let check = if variant == Variant::Nginx { "-t" } else { "-c" };
                let out = cmd.arg(check).output().unwrap();
                assert!(out.status.success(), "{variant} {name}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }

    #[test]
    fn installed_peers_report_versions() {
        // Only meaningful where the peers are installed; where they are, the
        // version parsers must understand them.
        if let Some(b) = find_binary("nginx") {
            assert!(nginx_version(&b).is_some_and(|v| v.chars().next().unwrap().is_ascii_digit()));
        }
        if let Some(b) = find_binary("haproxy") {
            assert!(haproxy_version(&b).is_some_and(|v| v
                .chars()
                .next()
                .unwrap()
                .is_ascii_digit()));
        }
    }
}
