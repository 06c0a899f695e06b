//! Proxy configuration, validated once at startup.
//!
//! Every problem is collected and reported together so an operator fixes a
//! bad command line in one go rather than one flag per restart.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

/// Everything the proxy needs to start. Built from the CLI by
/// [`crate::cli::Args::into_config`] or directly by embedders and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the application sends its outbound traffic.
    pub outbound_listen: SocketAddr,
    /// Where peers reach the local application.
    pub inbound_listen: SocketAddr,
    /// `/metrics`, `/ready`, `/live`.
    pub admin_listen: SocketAddr,
    /// Static outbound routes, authority -> upstream address.
    pub routes: Vec<Route>,
    /// The local application; `None` disables the inbound listener.
    pub app: Option<SocketAddr>,
    /// Runtime worker threads; 1 selects tokio's current-thread runtime.
    pub threads: usize,
    /// Request size and time limits applied on both listeners.
    pub limits: Limits,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
}

/// Limits applied to every downstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (HTTP/1 read buffer, HTTP/2 header list) accepted.
    pub max_header_bytes: usize,
    /// Largest request body forwarded; larger ones get 413.
    pub max_request_body_bytes: u64,
    /// HTTP/1 clients must send their full request head within this time.
    pub header_read_timeout: Duration,
    /// Upper bound from forwarding a request to the upstream's response head.
    pub request_timeout: Duration,
}

/// hyper refuses HTTP/1 read buffers smaller than this (it panics), so the
/// header limit is validated against it up front.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_request_body_bytes: 16 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            outbound_listen: SocketAddr::from(([127, 0, 0, 1], 4140)),
            inbound_listen: SocketAddr::from(([0, 0, 0, 0], 4143)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 4191)),
            routes: Vec::new(),
            app: None,
            threads: 1,
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Checks cross-field invariants, returning every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.threads == 0 {
            problems.push("--threads 0: need at least one worker thread".to_owned());
        }
        if self.limits.max_header_bytes < MIN_HEADER_BYTES {
            problems.push(format!(
                "--max-header-bytes {}: must be at least {MIN_HEADER_BYTES}",
                self.limits.max_header_bytes
            ));
        }
        if u32::try_from(self.limits.max_header_bytes).is_err() {
            problems.push(format!(
                "--max-header-bytes {}: must fit in 32 bits (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE)",
                self.limits.max_header_bytes
            ));
        }
        for (name, d) in [
            ("--header-read-timeout", self.limits.header_read_timeout),
            ("--request-timeout", self.limits.request_timeout),
        ] {
            if d.is_zero() {
                problems.push(format!("{name} 0s: must be greater than zero"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for route in &self.routes {
            if !seen.insert(route.authority.as_str()) {
                problems.push(format!(
                    "--route {route}: authority {:?} is routed more than once",
                    route.authority
                ));
            }
        }
        ConfigError::from_problems(problems)
    }
}

/// One static route: requests whose authority is `authority` go to `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `host` or `host:port`, stored lower-case (authorities are case-insensitive).
    pub authority: String,
    /// Upstream socket address.
    pub addr: SocketAddr,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.authority, self.addr)
    }
}

impl FromStr for Route {
    type Err = String;

    /// Parses `AUTHORITY=ADDR`, e.g. `web.default:80=127.0.0.1:8080`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (authority, addr) = s.split_once('=').ok_or_else(|| {
            format!("--route {s:?}: expected AUTHORITY=ADDR, e.g. web:80=127.0.0.1:8080")
        })?;
        if authority.is_empty() || authority.parse::<http::uri::Authority>().is_err() {
            return Err(format!(
                "--route {s:?}: {authority:?} is not a valid authority (host or host:port)"
            ));
        }
        let addr = addr.parse::<SocketAddr>().map_err(|_| {
            format!("--route {s:?}: {addr:?} is not a socket address (ip:port)")
        })?;
        Ok(Route {
            authority: authority.to_ascii_lowercase(),
            addr,
        })
    }
}

/// Parses a byte size such as `65536`, `64KiB`, `16MiB`, `1GiB`, `10kB`, `5MB`.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size (e.g. 65536, 64KiB, 16MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("{s:?}: unknown size unit {other:?} (use B, KiB, MiB, GiB, kB, MB, GB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Every configuration problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// Each names the offending flag and value.
    pub problems: Vec<String>,
}

impl ConfigError {
    pub(crate) fn from_problems(problems: Vec<String>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_parses_and_lowercases() {
        let r: Route = "Web.Default:80=127.0.0.1:8080".parse().unwrap();
        assert_eq!(r.authority, "web.default:80");
        assert_eq!(r.addr, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn route_errors_name_the_value() {
        let e = "web=nonsense".parse::<Route>().unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
        let e = "no-equals".parse::<Route>().unwrap_err();
        assert!(e.contains("no-equals"), "{e}");
        let e = "bad host=127.0.0.1:1".parse::<Route>().unwrap_err();
        assert!(e.contains("bad host"), "{e}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("65536").unwrap(), 65536);
        assert_eq!(parse_byte_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_byte_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_byte_size("5MB").unwrap(), 5_000_000);
        assert!(parse_byte_size("12 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_byte_size("").is_err());
    }

    #[test]
    fn validate_reports_every_problem() {
        let cfg = Config {
            threads: 0,
            limits: Limits {
                max_header_bytes: 10,
                ..Limits::default()
            },
            routes: vec!["a=127.0.0.1:1".parse().unwrap(), "a=127.0.0.1:2".parse().unwrap()],
            ..Config::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert!(Config::default().validate().is_ok());
    }
}
