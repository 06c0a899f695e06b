//! mTLS on by default: nothing of a request is readable on the server
//! pod's wire, and the server learns who called.

use bytes::Bytes;

use super::{fail, op_verdict};
use crate::conformance::expect::{self, Case, Expect};
use crate::conformance::routing::test;
use crate::conformance::topology::{self, svc, CLIENT, HTTP, NS};
use crate::conformance::{run, Test, Verdict};
use crate::substrate::cluster::{identity, Cluster, Req};

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshMTLSOnTheWire",
            None,
            "requests between sidecars are TLS on the server pod's wire (captured with tcpdump): the request body's marker never appears in clear",
            topology::base,
            on_the_wire
        ),
        test!(
            "MeshClientIdentity",
            None,
            "the server's app is told the client's verified mTLS identity (weft-client-id), over HTTP/1, h2c and gRPC",
            topology::base,
            client_identity
        ),
    ]
}

/// The header the inbound sidecar sets from the client's certificate.
const CLIENT_ID: &str = "weft-client-id";
/// Requests sent while capturing.
const REQUESTS: usize = 5;

async fn on_the_wire(c: &Cluster) -> Verdict {
    if let Err(v) = super::warm(c, CLIENT, &svc("echo-v1", HTTP)).await {
        return v;
    }
    let marker = format!("weft-conformance-marker-{}", std::process::id());
    let capture = match c.capture("echo-v1-0").await {
        Ok(cap) => cap,
        Err(e) => return op_verdict(c, "capture the wire of pod echo-v1-0", e),
    };
    let mut req = Req::get("/wire").method("POST").header("x-marker", &marker);
    req.body = Bytes::from(format!("{marker} {marker} {marker}"));
    let mut answered = 0;
    let mut last = String::new();
    for _ in 0..REQUESTS {
        match c.send(CLIENT, &svc("echo-v1", HTTP), &req).await {
            Ok(r) if r.error.is_none() && r.status == 200 => answered += 1,
            Ok(r) => last = r.describe(),
            Err(e) => return expect::dial_verdict("wire", e),
        }
    }
    let (pcap, tcpdump) = match capture.finish().await {
        Ok(p) => p,
        Err(e) => return op_verdict(c, "read the capture", e),
    };
    if answered < REQUESTS {
        return fail(
            format!("POST /wire from {CLIENT} to echo-v1:{HTTP} failed while capturing"),
            format!("{REQUESTS} answers 200"),
            format!("{answered} answered; last: {last}"),
        );
    }
    let payloads = tcp_payloads(&pcap);
    let bytes: usize = payloads.iter().map(|p| p.len()).sum();
    let in_clear = payloads
        .iter()
        .any(|p| contains(p, marker.as_bytes()))
        || contains(&pcap, marker.as_bytes());
    let tls = payloads.iter().filter(|p| is_tls_record(p)).count();
    let not_tls = payloads.iter().filter(|p| !is_tls_record(p)).count();
    let observed = format!(
        "{} bytes captured, {} segments with payload ({bytes} bytes); marker in clear: {in_clear}; segments starting a TLS record: {tls}, others: {not_tls}{} (tcpdump: {tcpdump})",
        pcap.len(),
        payloads.len(),
        first_clear(&payloads)
    );
    if payloads.is_empty() || in_clear || tls == 0 {
        return fail(
            format!("the wire of pod echo-v1-0 while {REQUESTS} requests carrying {marker:?} were answered"),
            "payload captured, the marker never in clear, TLS records (handshake 0x16 / application data 0x17, version 0x0303)",
            observed,
        );
    }
    Verdict::Pass
}

/// The first bytes of the first non-TLS payload, for the failure message.
fn first_clear(payloads: &[Vec<u8>]) -> String {
    payloads
        .iter()
        .find(|p| !is_tls_record(p))
        .map(|p| {
            let text: String = p
                .iter()
                .take(48)
                .map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' })
                .collect();
            format!("; first other payload: {text:?}")
        })
        .unwrap_or_default()
}

async fn client_identity(c: &Cluster) -> Verdict {
    let id = identity(NS, "client");
    let cases = [
        Case {
            name: "HTTP/1.1",
            from: CLIENT,
            to: svc("echo-v1", HTTP),
            req: Req::get("/who"),
            expect: Expect::ok("echo-v1").saw(CLIENT_ID, &[&id]),
        },
        Case {
            name: "h2c",
            from: CLIENT,
            to: svc("echo-v1", HTTP),
            req: Req::get("/who").proto(crate::substrate::cluster::Proto::H2c),
            expect: Expect::ok("echo-v1").saw(CLIENT_ID, &[&id]),
        },
        Case {
            name: "gRPC",
            from: CLIENT,
            to: svc("echo-v1", topology::GRPC),
            req: Req::grpc("weft.Echo", "Who"),
            expect: Expect::ok("echo-v1").grpc(0).saw(CLIENT_ID, &[&id]),
        },
        // A client cannot pass itself off as another: the header it sends is replaced.
        Case {
            name: "a forged header is replaced",
            from: CLIENT,
            to: svc("echo-v1", HTTP),
            req: Req::get("/who").header(CLIENT_ID, "spiffe://cluster.local/ns/gamma/sa/admin"),
            expect: Expect::ok("echo-v1").saw(CLIENT_ID, &[&id]),
        },
    ];
    expect::all(c, &cases, run::patience()).await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A payload that starts a TLS record: handshake (0x16), change cipher
/// spec (0x14), alert (0x15) or application data (0x17), version 3.x.
fn is_tls_record(p: &[u8]) -> bool {
    p.len() >= 5 && (0x14..=0x17).contains(&p[0]) && p[1] == 3 && p[2] <= 4
}

/// The TCP payloads of a pcap file (Ethernet, Linux cooked v1/v2 or raw
/// IP; IPv4 and IPv6), in capture order; what cannot be parsed is skipped.
pub(crate) fn tcp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if pcap.len() < 24 {
        return out;
    }
    let le = match pcap[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return out,
    };
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
    };
    let link = u32_at(pcap, 20);
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32_at(pcap, at + 8) as usize;
        let start = at + 16;
        let end = (start + caplen).min(pcap.len());
        let frame = &pcap[start..end];
        at = start + caplen;
        // Where the IP header starts, by link type.
        let ip = match link {
            1 => 14,    // Ethernet
            113 => 16,  // Linux cooked v1
            276 => 20,  // Linux cooked v2
            101 | 228 | 229 => 0, // raw IP
            _ => continue,
        };
        if frame.len() <= ip {
            continue;
        }
        let pkt = &frame[ip..];
        let (proto, l4) = match pkt[0] >> 4 {
            4 if pkt.len() >= 20 => (pkt[9], usize::from(pkt[0] & 0x0f) * 4),
            6 if pkt.len() >= 40 => (pkt[6], 40),
            _ => continue,
        };
        if proto != 6 || pkt.len() < l4 + 20 {
            continue;
        }
        let tcp = &pkt[l4..];
        let data = usize::from(tcp[12] >> 4) * 4;
        if tcp.len() > data {
            out.push(tcp[data..].to_vec());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        f.extend([0u8; 8]);
        f.extend(65535u32.to_le_bytes());
        f.extend(1u32.to_le_bytes()); // Ethernet
        for fr in frames {
            f.extend([0u8; 8]);
            f.extend((fr.len() as u32).to_le_bytes());
            f.extend((fr.len() as u32).to_le_bytes());
            f.extend(fr);
        }
        f
    }

    fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
        let mut fr = vec![0u8; 14];
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6];
        ip.extend([0u8; 10]);
        let mut tcp = vec![0u8; 12];
        tcp.push(5 << 4);
        tcp.extend([0u8; 7]);
        fr.extend(ip);
        fr.extend(tcp);
        fr.extend(payload);
        fr
    }

    #[test]
    fn payloads_come_out_of_an_ethernet_capture() {
        let p = pcap(&[ipv4_tcp(b""), ipv4_tcp(b"\x17\x03\x03\x00\x10abc"), ipv4_tcp(b"POST /x")]);
        let got = tcp_payloads(&p);
        assert_eq!(got.len(), 2);
        assert!(is_tls_record(&got[0]));
        assert!(!is_tls_record(&got[1]));
        assert!(contains(&got[1], b"/x"));
        assert!(tcp_payloads(b"not a pcap at all, no").is_empty());
    }
}
