//! Parsing what proxies ask for: an authority (`name.ns.svc.cluster.local:80`,
//! `name.ns.svc:80`, `name.ns:80`, `10.0.0.1:80`) into a lookup key.

use std::net::{IpAddr, SocketAddr};

use crate::model::ObjectKey;

/// What an authority names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Service port by name.
    Service { service: ObjectKey, port: u16 },
    /// An address: a ClusterIP or an endpoint, resolved at lookup time so a
    /// Service or endpoint that appears later is picked up.
    Addr(SocketAddr),
    /// A name outside the cluster domain: never known to the index, but still
    /// watchable so the answer is uniform ("unknown, forward as is").
    External { host: String, port: u16 },
}

/// An authority that cannot be looked up at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authority {authority:?}: {reason}")]
pub struct AuthorityError {
    pub authority: String,
    pub reason: &'static str,
}

impl Target {
    /// Parses `authority` (host and port) for a cluster whose DNS domain is
    /// `cluster_domain` (usually `cluster.local`). Host names are
    /// case-insensitive and may end with a dot.
    pub fn parse(authority: &str, cluster_domain: &str) -> Result<Self, AuthorityError> {
        let err = |reason| AuthorityError { authority: authority.to_owned(), reason };
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (host, port) =
                rest.split_once("]:").ok_or_else(|| err("an IPv6 address needs the form [addr]:port"))?;
            (host, port)
        } else {
            authority.rsplit_once(':').ok_or_else(|| err("a port is required (host:port)"))?
        };
        let port: u16 = port.parse().map_err(|_| err("the port is not a number in 1..=65535"))?;
        if port == 0 {
            return Err(err("the port is not a number in 1..=65535"));
        }
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Target::Addr(SocketAddr::new(ip, port)));
        }
        if authority.starts_with('[') {
            return Err(err("the bracketed host is not an IPv6 address"));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        if labels.iter().any(|l| l.is_empty()) {
            return Err(err("the host has an empty label"));
        }
        let domain = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
        let service = match labels.as_slice() {
            [name, ns] | [name, ns, "svc"] => Some(ObjectKey::new(*ns, *name)),
            [name, ns, "svc", rest @ ..] if rest.join(".") == domain => Some(ObjectKey::new(*ns, *name)),
            _ => None,
        };
        Ok(match service {
            Some(service) => Target::Service { service, port },
            None => Target::External { host, port },
        })
    }
}

/// `<name>.<ns>.svc.<cluster_domain>:<port>`: the form routes and backends are served in.
pub fn canonical_authority(service: &ObjectKey, port: u16, cluster_domain: &str) -> String {
    format!("{}.{}.svc.{}:{port}", service.name, service.namespace, cluster_domain.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, port: u16) -> Target {
        Target::Service { service: ObjectKey::new(ns, name), port }
    }

    #[test]
    fn service_forms() {
        for a in ["web.shop.svc.cluster.local:80", "web.shop.svc:80", "web.shop:80", "Web.Shop.svc.cluster.local.:80"] {
            assert_eq!(Target::parse(a, "cluster.local").unwrap(), svc("shop", "web", 80), "{a}");
        }
        assert_eq!(Target::parse("web.shop.svc.corp.example:8080", "corp.example").unwrap(), svc("shop", "web", 8080));
    }

    #[test]
    fn addresses_and_external_names() {
        assert_eq!(
            Target::parse("10.1.2.3:80", "cluster.local").unwrap(),
            Target::Addr("10.1.2.3:80".parse().unwrap())
        );
        assert_eq!(Target::parse("[::1]:443", "cluster.local").unwrap(), Target::Addr("[::1]:443".parse().unwrap()));
        assert_eq!(
            Target::parse("www.example.com:443", "cluster.local").unwrap(),
            Target::External { host: "www.example.com".into(), port: 443 }
        );
        // Another cluster's domain is not ours.
        assert!(matches!(
            Target::parse("web.shop.svc.other.local:80", "cluster.local").unwrap(),
            Target::External { .. }
        ));
    }

    #[test]
    fn malformed() {
        for a in [
            "web.shop",
            "web.shop:",
            "web.shop:http",
            ":80",
            "web.shop:0",
            "web.shop:70000",
            "[::1:80",
            "[zz]:80",
            "a..b:80",
        ] {
            assert!(Target::parse(a, "cluster.local").is_err(), "{a} should not parse");
        }
    }
}
