//! Looking at the wire: a network namespace of the test's own (so a capture
//! of its loopback holds only the test's traffic), pcap files as `tcpdump
//! -w` writes them read back into TCP byte streams, and TLS records told
//! from plaintext in those streams.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A network namespace with `lo` up, deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Needs root (fails the test saying so: ci/test runs as root).
    pub fn new(tag: &str) -> Netns {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test captures loopback traffic in a network namespace of its own and needs root (ci/test runs as root)"
        );
        let name = format!("wirecap-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().expect("`ip` runs (apt-get install iproute2)");
            assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `program` run inside the namespace.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

/// One direction of a TCP connection: (source port, destination port).
pub type Flow = (u16, u16);

/// Every TCP payload byte of an IPv4 capture, per direction, in sequence
/// order (retransmitted segments counted once). Ethernet (what `-i lo`
/// gives) and Linux cooked captures.
pub fn tcp_streams(pcap: &[u8]) -> Result<BTreeMap<Flow, Vec<u8>>, String> {
    if pcap.len() < 24 {
        return Err(format!("{} bytes: not a pcap file", pcap.len()));
    }
    let le = match &pcap[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        other => return Err(format!("pcap magic {other:02x?} (pcapng is not read here: use tcpdump -w)")),
    };
    let u32_at = |b: &[u8], i: usize| {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le { u32::from_le_bytes(w) } else { u32::from_be_bytes(w) }
    };
    let link_header = match u32_at(pcap, 20) {
        1 => 14,    // Ethernet
        113 => 16,  // Linux cooked (SLL)
        276 => 20,  // SLL2
        other => return Err(format!("link type {other} not read here")),
    };
    // Per direction: segments by offset from the first sequence number seen.
    let mut segs: BTreeMap<Flow, (u32, BTreeMap<u32, Vec<u8>>)> = BTreeMap::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32_at(pcap, at + 8) as usize;
        let pkt = &pcap[at + 16..(at + 16 + caplen).min(pcap.len())];
        at += 16 + caplen;
        let Some(ip) = pkt.get(link_header..) else { continue };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        let Some(tcp) = ip.get(ihl..total) else { continue };
        if tcp.len() < 20 {
            continue;
        }
        let flow = (u16::from_be_bytes([tcp[0], tcp[1]]), u16::from_be_bytes([tcp[2], tcp[3]]));
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let data = &tcp[(usize::from(tcp[12] >> 4) * 4).min(tcp.len())..];
        if data.is_empty() {
            continue;
        }
        let (first, by_offset) = segs.entry(flow).or_insert((seq, BTreeMap::new()));
        by_offset.entry(seq.wrapping_sub(*first)).or_insert_with(|| data.to_vec());
    }
    Ok(segs
        .into_iter()
        .map(|(flow, (_, by_offset))| {
            let mut stream = Vec::new();
            for (off, data) in by_offset {
                // A retransmission overlapping what is there adds only its new tail.
                let off = off as usize;
                if off + data.len() > stream.len() && off <= stream.len() {
                    stream.extend_from_slice(&data[stream.len() - off..]);
                }
            }
            (flow, stream)
        })
        .collect())
}

/// The content types of the TLS records `stream` is made of (0x14 change
/// cipher spec, 0x15 alert, 0x16 handshake, 0x17 application data); an
/// error at the first byte that is not a TLS record header. A last record
/// cut short (the capture stopped) is counted.
pub fn tls_records(stream: &[u8]) -> Result<Vec<u8>, String> {
    let mut types = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let h = &stream[at..(at + 5).min(stream.len())];
        if h.len() < 3 || !(0x14..=0x17).contains(&h[0]) || h[1] != 0x03 || h[2] > 0x04 {
            return Err(format!(
                "byte {at} is not a TLS record header: {:02x?} ({:?})",
                &stream[at..(at + 16).min(stream.len())],
                String::from_utf8_lossy(&stream[at..(at + 40).min(stream.len())])
            ));
        }
        types.push(h[0]);
        let len = if h.len() == 5 { usize::from(u16::from_be_bytes([h[3], h[4]])) } else { 0 };
        at += 5 + len;
    }
    Ok(types)
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The first bytes of `stream`, hex, for evidence in a message.
pub fn head(stream: &[u8], n: usize) -> String {
    stream.iter().take(n).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Read a pcap file.
pub fn read(path: &Path) -> BTreeMap<Flow, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tcp_streams(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
