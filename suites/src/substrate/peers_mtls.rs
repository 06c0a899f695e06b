//! Peer proxies as a chain with mTLS between them (`nginx-mtls`,
//! `haproxy-mtls`): the honest comparison for `weft`'s two sidecars.
//!
//! ```text
//! loadgen ─(plaintext, the scenario's protocol)─> outbound peer ══(TLS 1.3, client cert)══> inbound peer i ─> server i
//!                                                  round robin,                             one per replica,
//!                                                  pooled upstream TLS connections          verifies the client cert
//! ```
//!
//! Certificates are made once per run ([`ChainPki::generate`]) from one CA
//! (ECDSA P-256, as mesh-control's): a server certificate for [`PEER_NAME`]
//! and a client certificate, written into the run's work dir and removed
//! with it. What an operator would configure for a production hop, and no
//! more: the outbound peer verifies the inbound's certificate and name, the
//! inbound requires a client certificate signed by the CA; TLS 1.3 only;
//! upstream connections kept alive and reused (nginx: `keepalive 64` in the
//! upstream, `proxy_ssl_session_reuse on`; HAProxy: `http-reuse always`,
//! its default TLS session cache for servers), one worker each, no per
//! request logging. Between the peers both speak HTTP/1.1 over TLS (nginx's
//! proxy module has no HTTP/2 upstream; HAProxy is held to the same).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use super::peers::{haproxy_global, nginx_http_settings, nginx_main, nginx_upstream, peer_command, Peers};
use super::DeployError;
use crate::suite::{Protocol, Variant};

/// The name in the inbound peers' certificate, which the outbound peer verifies.
pub const PEER_NAME: &str = "inbound.peers.bench.local";
/// The client certificate's common name.
const CLIENT_NAME: &str = "outbound.peers.bench.local";
/// Long enough for any run; a run makes its own.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The run's certificates for the peer chains, as files in `dir`.
#[derive(Clone, Debug)]
pub struct ChainPki {
    dir: PathBuf,
}

impl ChainPki {
    /// A CA, a server certificate for [`PEER_NAME`] and a client
    /// certificate signed by it, written into `dir` (`ca.crt`,
    /// `{server,client}.{crt,key}`, and `{server,client}.pem` holding both,
    /// HAProxy's form).
    pub fn generate(dir: &Path) -> Result<ChainPki, DeployError> {
        let pki_err = |e: rcgen::Error| DeployError::Start {
            component: "peer certificates".into(),
            detail: format!("generating the peer chain's certificates: {e}"),
        };
        let now = time::OffsetDateTime::now_utc();
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(pki_err)?;
        let mut ca = params("bench peer chain CA", Vec::new(), now).map_err(pki_err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(pki_err)?;
        let issuer = Issuer::new(ca, ca_key);
        let pki = ChainPki { dir: dir.to_path_buf() };
        pki.write("ca.crt", &ca_cert.pem())?;
        for (who, name, usage) in [
            ("server", PEER_NAME, ExtendedKeyUsagePurpose::ServerAuth),
            ("client", CLIENT_NAME, ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(pki_err)?;
            let mut p = params(name, vec![name.to_string()], now).map_err(pki_err)?;
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![usage];
            p.use_authority_key_identifier_extension = true;
            let cert = p.signed_by(&key, &issuer).map_err(pki_err)?;
            let (cert, key) = (cert.pem(), key.serialize_pem());
            pki.write(&format!("{who}.crt"), &cert)?;
            pki.write(&format!("{who}.key"), &key)?;
            pki.write(&format!("{who}.pem"), &format!("{cert}{key}"))?;
        }
        Ok(pki)
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn write(&self, file: &str, text: &str) -> Result<(), DeployError> {
        let p = self.dir.join(file);
        std::fs::write(&p, text).map_err(|source| DeployError::Io {
            what: format!("write {}", p.display()),
            source,
        })
    }
}

fn params(
    cn: &str,
    dns_names: Vec<String>,
    now: time::OffsetDateTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(dns_names)?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    // A minute back, so a clock a little behind does not see it as not yet valid.
    p.not_before = now - Duration::from_secs(60);
    p.not_after = now + LIFETIME;
    Ok(p)
}

/// Which end of the chain a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Next to the load generator: plaintext in, TLS with a client certificate out.
    Outbound,
    /// Next to one server replica: TLS in (client certificate required), plaintext out.
    Inbound,
}

impl Side {
    /// The component name of this side of `variant` (`nginx-outbound`,
    /// `haproxy-inbound`, `nginx-inbound-2` with replicas).
    pub fn component(self, variant: Variant, replica: Option<usize>) -> String {
        let peer = peer_name(variant);
        let side = match self {
            Side::Outbound => "outbound",
            Side::Inbound => "inbound",
        };
        match replica {
            Some(i) => format!("{peer}-{side}-{i}"),
            None => format!("{peer}-{side}"),
        }
    }
}

fn peer_name(variant: Variant) -> &'static str {
    match variant {
        Variant::NginxMtls => "nginx",
        _ => "haproxy",
    }
}

/// One peer of a chain: its side, where it listens, where it sends (the
/// inbound peers for the outbound side, its one app replica for an inbound).
#[derive(Clone, Copy, Debug)]
pub struct Hop<'a> {
    pub side: Side,
    pub listen: SocketAddr,
    pub upstreams: &'a [SocketAddr],
}

/// Write the config of `hop` of `variant`'s chain into `dir` and return
/// the command that runs it in the foreground (nginx logs its errors to
/// `dir/error.log`).
pub fn command(
    peers: &Peers,
    variant: Variant,
    pki: &ChainPki,
    dir: &Path,
    hop: Hop<'_>,
    protocol: Protocol,
) -> Result<Command, DeployError> {
    let Hop { side, listen, upstreams } = hop;
    peers
        .check(variant)
        .map_err(|reason| DeployError::Unavailable { reason })?;
    // The chains are configured for HTTP only (HTTP/1.1 between the peers):
    // a gRPC, TCP or WebSocket cell through them would measure a
    // misconfigured chain, so it is skipped with the reason instead.
    if !matches!(protocol, Protocol::Http1 | Protocol::Http2) {
        return Err(DeployError::Unavailable {
            reason: format!(
                "{variant} is configured for http1 and http2 only (HTTP/1.1 between its peers); protocol {} is not carried by it yet",
                protocol.as_str()
            ),
        });
    }
    let nginx = match variant {
        Variant::NginxMtls => true,
        Variant::HaproxyMtls => false,
        other => {
            return Err(DeployError::Start {
                component: other.as_str().into(),
                detail: "not a peer chain".into(),
            })
        }
    };
    let (bin, conf) = match nginx {
        true => (&peers.nginx, nginx_conf(side, pki, dir, listen, upstreams, protocol)),
        false => (&peers.haproxy, haproxy_conf(side, pki, listen, upstreams, protocol)),
    };
    peer_command(bin.as_ref().expect("checked above"), nginx, dir, conf)
}

/// nginx for one side of the chain; all paths inside `dir`.
pub fn nginx_conf(
    side: Side,
    pki: &ChainPki,
    dir: &Path,
    listen: SocketAddr,
    upstreams: &[SocketAddr],
    protocol: Protocol,
) -> String {
    let (listen_opts, tls_in, scheme, tls_out) = match side {
        Side::Outbound => (
            if protocol == Protocol::Http2 { " http2" } else { "" },
            String::new(),
            "https",
            format!(
                r#"
            # Verify the inbound peer (CA and name), present the client certificate.
            proxy_ssl_certificate {client_crt};
            proxy_ssl_certificate_key {client_key};
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 1;
            proxy_ssl_name {PEER_NAME};
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;"#,
                client_crt = pki.path("client.crt"),
                client_key = pki.path("client.key"),
                ca = pki.path("ca.crt"),
            ),
        ),
        Side::Inbound => (
            " ssl",
            format!(
                r#"
        ssl_certificate {server_crt};
        ssl_certificate_key {server_key};
        # Only clients holding a certificate of the run's CA.
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_verify_depth 1;
        ssl_protocols TLSv1.3;
        ssl_session_cache shared:peers:10m;
        ssl_session_timeout 1h;"#,
                server_crt = pki.path("server.crt"),
                server_key = pki.path("server.key"),
                ca = pki.path("ca.crt"),
            ),
            "http",
            String::new(),
        ),
    };
    let main = nginx_main(&format!("Generated by bench: the {side:?} side of a peer chain with mTLS; one worker like every proxy measured."), "", dir);
    let settings = nginx_http_settings(dir);
    let upstream = nginx_upstream("next_hop", upstreams);
    format!(
        r#"{main}
http {{
{settings}
{upstream}
    server {{
        listen {listen}{listen_opts};{tls_in}
        location / {{
            proxy_pass {scheme}://next_hop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;{tls_out}
        }}
    }}
}}
"#
    )
}

/// HAProxy for one side of the chain (run in the foreground, `-db`).
pub fn haproxy_conf(
    side: Side,
    pki: &ChainPki,
    listen: SocketAddr,
    upstreams: &[SocketAddr],
    protocol: Protocol,
) -> String {
    let (bind_opts, server_opts) = match side {
        Side::Outbound => (
            if protocol == Protocol::Http2 { " proto h2".to_string() } else { String::new() },
            // Verify the inbound peer (CA and name), present the client certificate.
            format!(
                " ssl crt {} ca-file {} verify required verifyhost {PEER_NAME} ssl-min-ver TLSv1.3",
                pki.path("client.pem"),
                pki.path("ca.crt"),
            ),
        ),
        Side::Inbound => (
            // Only clients holding a certificate of the run's CA.
            format!(
                " ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3",
                pki.path("server.pem"),
                pki.path("ca.crt"),
            ),
            String::new(),
        ),
    };
    let servers: String = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| format!("    server next{i} {u}{server_opts}\n"))
        .collect();
    let global = haproxy_global(&format!("Generated by bench: the {side:?} side of a peer chain with mTLS; one thread like every proxy measured."));
    format!(
        r#"{global}
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    # Idle server-side connections (TLS ones included) serve any request.
    http-reuse always

frontend bench_in
    bind {listen}{bind_opts}
    default_backend next_hop

backend next_hop
    balance roundrobin
{servers}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddr, Vec<SocketAddr>) {
        let l = "127.0.0.1:1000".parse().unwrap();
        let us = (1..=2).map(|i| format!("127.0.0.1:200{i}").parse().unwrap()).collect();
        (l, us)
    }

    #[test]
    fn chains_refuse_the_protocols_they_are_not_configured_for() {
        // Needs nginx and haproxy installed (ci/test installs them): a
        // missing peer is refused with another reason and fails here.
        let (l, us) = addrs();
        let pki = ChainPki { dir: "/nonexistent/pki".into() };
        let peers = Peers::find();
        for variant in [Variant::NginxMtls, Variant::HaproxyMtls] {
            for name in ["grpc", "tcp", "tcp-churn", "websocket"] {
                let hop = Hop { side: Side::Outbound, listen: l, upstreams: &us };
                let got = command(&peers, variant, &pki, Path::new("/nonexistent"), hop, Protocol::parse(name).unwrap());
                match got {
                    Err(DeployError::Unavailable { reason }) => {
                        assert!(reason.contains("http1 and http2 only") && reason.contains(name), "{variant:?} {name}: {reason}")
                    }
                    other => panic!("{variant:?} {name}: expected the cell skipped, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn nginx_originates_and_terminates_mtls_with_pooled_upstreams() {
        let (l, us) = addrs();
        let pki = ChainPki { dir: "/run/x/pki".into() };
        let out = nginx_conf(Side::Outbound, &pki, Path::new("/run/x/o"), l, &us, Protocol::Http2);
        for want in [
            "listen 127.0.0.1:1000 http2;",
            "server 127.0.0.1:2001;",
            "server 127.0.0.1:2002;",
            "keepalive 64;",
            "proxy_pass https://next_hop;",
            "proxy_ssl_certificate /run/x/pki/client.crt;",
            "proxy_ssl_trusted_certificate /run/x/pki/ca.crt;",
            "proxy_ssl_verify on;",
            &format!("proxy_ssl_name {PEER_NAME};"),
            "proxy_ssl_session_reuse on;",
            "worker_processes 1;",
        ] {
            assert!(out.contains(want), "{want} missing:\n{out}");
        }
        assert!(!out.contains("ssl_verify_client"), "{out}");
        let inb = nginx_conf(Side::Inbound, &pki, Path::new("/run/x/i"), l, &us[..1], Protocol::Http2);
        for want in [
            "listen 127.0.0.1:1000 ssl;",
            "ssl_certificate /run/x/pki/server.crt;",
            "ssl_client_certificate /run/x/pki/ca.crt;",
            "ssl_verify_client on;",
            "proxy_pass http://next_hop;",
            "keepalive 64;",
        ] {
            assert!(inb.contains(want), "{want} missing:\n{inb}");
        }
        // The client's protocol is the outbound's business only.
        assert!(!inb.contains("http2"), "{inb}");
    }

    #[test]
    fn haproxy_originates_and_terminates_mtls_with_reuse() {
        let (l, us) = addrs();
        let pki = ChainPki { dir: "/run/x/pki".into() };
        let out = haproxy_conf(Side::Outbound, &pki, l, &us, Protocol::Http1);
        assert!(out.contains("    bind 127.0.0.1:1000\n"), "{out}");
        assert!(out.contains(&format!(
            "    server next1 127.0.0.1:2002 ssl crt /run/x/pki/client.pem ca-file /run/x/pki/ca.crt verify required verifyhost {PEER_NAME} ssl-min-ver TLSv1.3\n"
        )), "{out}");
        assert!(out.contains("http-reuse always") && out.contains("nbthread 1"), "{out}");
        let inb = haproxy_conf(Side::Inbound, &pki, l, &us[..1], Protocol::Http2);
        assert!(inb.contains(
            "    bind 127.0.0.1:1000 ssl crt /run/x/pki/server.pem ca-file /run/x/pki/ca.crt verify required ssl-min-ver TLSv1.3\n"
        ), "{inb}");
        assert!(inb.contains("    server next0 127.0.0.1:2001\n"), "{inb}");
        assert!(!inb.contains("proto h2"), "{inb}");
    }

    #[test]
    fn the_run_pki_chains_to_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        ChainPki::generate(dir.path()).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        let ca = read("ca.crt");
        let ca = x509(&ca);
        for who in ["server", "client"] {
            let pem = read(&format!("{who}.pem"));
            assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"), "{who}");
            let cert = x509(&read(&format!("{who}.crt")));
            assert_eq!(cert.issuer, ca.subject, "{who}");
        }
    }

    struct Names {
        subject: String,
        issuer: String,
    }

    fn x509(pem: &str) -> Names {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        Names {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
        }
    }
}
