//! `--transparent` mode's first look at a connection: where was it going
//! before iptables redirected it here (`SO_ORIGINAL_DST`), and is that this
//! proxy itself?
//!
//! ```text
//!  accept ─> SO_ORIGINAL_DST ─ none (not redirected)      ─> refuse: no_original_dst
//!                            ─ one of our own listeners   ─> refuse: loop
//!                            ─ anything else              ─> the connection's target
//! ```
//!
//! The option is read through socket2's safe wrapper, so no `unsafe` here.
//! The kernel answers from the conntrack entry that the `REDIRECT` rule
//! created: a connection made straight to the listener (no NAT) has either
//! no entry (`ENOENT`) or one whose original destination is the listener
//! itself, and both are refused. Without the refusal a client dialing the
//! outbound port directly would make the proxy dial itself, forever.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
};

use socket2::SockRef;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::{
    metrics::{Direction, DirectionMetrics},
    identity::refusal::Refusal,
};

/// The destination the client dialed before a `REDIRECT` rule sent the
/// connection here (IPv4 `SO_ORIGINAL_DST`, IPv6 `IP6T_SO_ORIGINAL_DST`).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let v6 = match stream.local_addr()? {
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_none(),
        SocketAddr::V4(_) => false,
    };
    let addr = if v6 { sock.original_dst_v6()? } else { sock.original_dst_v4()? };
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "SO_ORIGINAL_DST is not an IP socket address"))
}

pub use crate::config::own::{is_local_ip, OwnListeners};

/// Remembered (peer IP, destination) pairs: a client retrying a refused
/// connection in a loop is logged at warn once, then at debug.
#[derive(Debug, Default)]
struct OnceLog {
    seen: Mutex<HashSet<(IpAddr, Option<SocketAddr>)>>,
}

/// Past this many distinct pairs new refusals are only logged at debug:
/// memory stays bounded whatever the clients do.
const MAX_REMEMBERED: usize = 1024;

impl OnceLog {
    fn first(&self, peer: IpAddr, dst: Option<SocketAddr>) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_REMEMBERED {
            return false;
        }
        seen.insert((peer, dst))
    }
}

/// Decides, once per accepted connection, where a redirected connection was
/// going, and refuses the ones that cannot be forwarded (counted in
/// `weft_refused_connections_total{direction,reason="loop|no_original_dst"}`).
#[derive(Debug)]
pub struct Gate {
    direction: Direction,
    own: OwnListeners,
    metrics: DirectionMetrics,
    logged: OnceLog,
}

impl Gate {
    /// Outbound: refuses destinations that are one of `own` on a local
    /// address. Inbound: refuses every destination port that is one of
    /// `own`'s ports (inbound connections always arrive on a local address).
    pub fn new(direction: Direction, own: OwnListeners, metrics: DirectionMetrics) -> Self {
        Self { direction, own, metrics, logged: OnceLog::default() }
    }

    /// The connection's original destination, or `None` after refusing it
    /// (the caller closes it).
    pub fn admit(&self, stream: &TcpStream, peer: SocketAddr) -> Option<SocketAddr> {
        let dst = match original_dst(stream) {
            Ok(dst) => dst,
            Err(e) => {
                let detail = format!(
                    "SO_ORIGINAL_DST: {e}; with --transparent every connection must arrive through the \
                     iptables REDIRECT that `weft init` installs"
                );
                self.refuse(peer, None, Refusal::NoOriginalDst, &detail);
                return None;
            }
        };
        let own = match self.direction {
            Direction::Inbound => self.own.has_port(dst.port()),
            Direction::Outbound => self.own.is_own(dst, |ip| stream.local_addr().is_ok_and(|l| l.ip() == ip) || is_local_ip(ip)),
        };
        if own {
            let detail = format!(
                "the original destination {dst} is this proxy's own listener (a client dialed the proxy port \
                 directly, or a redirect loop: is the proxy's uid exempt from the OUTPUT rule?)"
            );
            self.refuse(peer, Some(dst), Refusal::Loop, &detail);
            return None;
        }
        Some(dst)
    }

    fn refuse(&self, peer: SocketAddr, dst: Option<SocketAddr>, reason: Refusal, detail: &str) {
        self.metrics.record_refusal(reason);
        let direction = self.direction;
        if self.logged.first(peer.ip(), dst) {
            warn!("refused {direction} connection from {peer}: {reason}: {detail}; closed (logged once per client and destination)");
        } else {
            debug!("refused {direction} connection from {peer}: {reason}: {detail}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn own() -> OwnListeners {
        OwnListeners::new([a("127.0.0.1:4140"), a("0.0.0.0:4143"), a("127.0.0.1:4191")])
    }

    #[test]
    fn own_listeners_on_local_addresses_are_loops() {
        let own = own();
        let never = |_: IpAddr| -> bool { panic!("only asked when the port matches") };
        let local = |ip: IpAddr| ip == a("198.18.0.1:0").ip();
        // Exactly a listener, or its port on loopback / the pod's own IP.
        assert!(own.is_own(a("127.0.0.1:4140"), never));
        assert!(own.is_own(a("127.0.0.2:4143"), local));
        assert!(own.is_own(a("198.18.0.1:4191"), local));
        assert!(own.is_own(a("0.0.0.0:4140"), local));
        // Another host's 4143 is a real destination (its proxy's port).
        assert!(!own.is_own(a("198.18.0.2:4143"), local));
        // Not one of our ports: never asks whether the address is local.
        assert!(!own.is_own(a("127.0.0.1:8080"), never));
        assert!(!own.is_own(a("198.18.0.2:8080"), never));
        assert!(own.has_port(4143) && !own.has_port(8080));
    }

    #[test]
    fn local_addresses_are_those_we_can_bind() {
        assert!(is_local_ip(a("127.0.0.1:0").ip()));
        // TEST-NET-3 is never assigned to a test machine's interfaces.
        assert!(!is_local_ip(a("203.0.113.77:0").ip()));
    }

    #[test]
    fn refusals_are_logged_once_per_client_and_destination() {
        let log = OnceLog::default();
        let (p, d) = (a("10.0.0.1:0").ip(), Some(a("127.0.0.1:4140")));
        assert!(log.first(p, d));
        assert!(!log.first(p, d));
        assert!(log.first(p, None));
        for i in 0..(MAX_REMEMBERED as u16 * 2) {
            log.first(p, Some(SocketAddr::new(p, i)));
        }
        assert!(!log.first(a("10.9.9.9:0").ip(), None), "bounded: new pairs past the cap are not remembered");
    }

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_is_refused_and_counted() {
        let metrics = crate::metrics::Metrics::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let gate = Gate::new(
            Direction::Outbound,
            OwnListeners::new([addr]),
            metrics.direction(Direction::Outbound).clone(),
        );
        // No REDIRECT here: either no conntrack entry (no original
        // destination) or one naming the listener itself (a loop).
        assert_eq!(gate.admit(&stream, peer), None);
        let text = metrics.encode();
        let count = |reason: &str| {
            let series = format!(r#"weft_refused_connections_total{{direction="outbound",reason="{reason}"}} "#);
            text.lines().find_map(|l| l.strip_prefix(series.as_str())).map(|v| v.trim().to_owned())
        };
        let refused: u32 = ["loop", "no_original_dst"].iter().map(|r| count(r).unwrap().parse::<u32>().unwrap()).sum();
        assert_eq!(refused, 1, "{text}");
    }
}
