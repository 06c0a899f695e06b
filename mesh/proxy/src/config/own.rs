//! This proxy's own listener addresses, as bound: what a connection must
//! never be sent back to. `--transparent`'s gate (`intercept::orig_dst`)
//! refuses redirected connections to them; the discovered outbound path
//! leaves endpoints that are one of them out of its balancers.

use std::net::{IpAddr, SocketAddr};

/// Whether `ip` is an address of this host (network namespace): binding a
/// socket to it succeeds only then (`EADDRNOTAVAIL` otherwise).
pub fn is_local_ip(ip: IpAddr) -> bool {
    let addr = SocketAddr::new(ip, 0);
    let Ok(sock) = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None) else {
        return false;
    };
    sock.bind(&addr.into()).is_ok()
}

/// This proxy's bound listener addresses (as bound: `0.0.0.0:4143` stays
/// unspecified).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnListeners {
    addrs: Vec<SocketAddr>,
}

impl OwnListeners {
    /// The listeners a redirected connection must never be sent back to.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self { addrs: addrs.into_iter().collect() }
    }

    /// Whether `port` is one of the listeners' ports.
    pub fn has_port(&self, port: u16) -> bool {
        self.addrs.iter().any(|a| a.port() == port)
    }

    /// Whether `dst` is one of the listeners: exactly a bound address, or a
    /// listener's port on an address of this host (loopback, unspecified,
    /// or one `is_local` confirms; it is only asked when the port matches).
    pub fn is_own(&self, dst: SocketAddr, is_local: impl FnOnce(IpAddr) -> bool) -> bool {
        if self.addrs.contains(&dst) {
            return true;
        }
        if !self.has_port(dst.port()) {
            return false;
        }
        let ip = dst.ip();
        ip.is_loopback() || ip.is_unspecified() || is_local(ip)
    }
}

impl OwnListeners {
    /// The listener a connection to `dst` would reach, if it is one of
    /// ours: exactly a bound address; or a listener's port on an
    /// unspecified `dst` (the kernel dials this host), or, for a listener
    /// bound to an unspecified address, on a loopback address or one
    /// `is_local` confirms (only asked when the port matches).
    pub fn reached_by(&self, dst: SocketAddr, is_local: impl Fn(IpAddr) -> bool) -> Option<SocketAddr> {
        if self.addrs.contains(&dst) {
            return Some(dst);
        }
        let same_port = || self.addrs.iter().copied().filter(move |a| a.port() == dst.port());
        if dst.ip().is_unspecified() {
            return same_port().next();
        }
        let mut any = same_port().filter(|a| a.ip().is_unspecified()).peekable();
        any.peek()?;
        if dst.ip().is_loopback() || is_local(dst.ip()) {
            return any.next();
        }
        None
    }

    /// Whether no listener is held.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reached_by_exact_unspecified_and_local() {
        let own = OwnListeners::new(["127.0.0.1:4140".parse().unwrap(), "0.0.0.0:4143".parse().unwrap()]);
        let local = |ip: IpAddr| ip == IpAddr::from([10, 0, 0, 7]);
        let at = |s: &str| own.reached_by(s.parse().unwrap(), local);
        assert_eq!(at("127.0.0.1:4140"), Some("127.0.0.1:4140".parse().unwrap()));
        assert_eq!(at("0.0.0.0:4140"), Some("127.0.0.1:4140".parse().unwrap()));
        assert_eq!(at("127.0.0.2:4140"), None, "a listener on 127.0.0.1 is not reached by another loopback address");
        assert_eq!(at("10.0.0.7:4140"), None);
        assert_eq!(at("10.0.0.7:4143"), Some("0.0.0.0:4143".parse().unwrap()));
        assert_eq!(at("127.0.0.9:4143"), Some("0.0.0.0:4143".parse().unwrap()));
        assert_eq!(at("10.0.0.8:4143"), None, "another host's address");
        assert_eq!(at("127.0.0.1:8080"), None);
    }
}
