//! Command-line interface of the `mesh-proxy` binary.
//!
//! Values are taken as strings and converted in [`Args::into_config`] so that
//! every bad value is reported at once, each naming the flag and the value.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;

use crate::config::{parse_byte_size, Config, ConfigError, Limits, Route};

/// Weft's sidecar micro-proxy: forwards HTTP/1.1 and HTTP/2 (h2c) between an
/// application and its peers, and serves metrics and health on an admin port.
#[derive(Debug, Clone, Parser)]
#[command(name = "mesh-proxy", version, about)]
pub struct Args {
    /// Listener for the application's outbound requests (routed by authority).
    #[arg(long, env = "WEFT_PROXY_OUTBOUND_LISTEN", default_value = "127.0.0.1:4140")]
    pub outbound_listen: String,

    /// Listener for inbound requests, forwarded to --app. Only started with --app.
    #[arg(long, env = "WEFT_PROXY_INBOUND_LISTEN", default_value = "0.0.0.0:4143")]
    pub inbound_listen: String,

    /// Admin listener: /metrics, /ready, /live.
    #[arg(long, env = "WEFT_PROXY_ADMIN_LISTEN", default_value = "127.0.0.1:4191")]
    pub admin_listen: String,

    /// Outbound route AUTHORITY=ADDR (repeatable; env: comma separated). The
    /// request's exact host:port is matched first, then its host alone.
    #[arg(long = "route", env = "WEFT_PROXY_ROUTE", value_name = "AUTHORITY=ADDR", value_delimiter = ',')]
    pub routes: Vec<String>,

    /// Local application address for the inbound listener.
    #[arg(long, env = "WEFT_PROXY_APP", value_name = "ADDR")]
    pub app: Option<String>,

    /// Runtime worker threads; 1 runs everything on one thread.
    #[arg(long, env = "WEFT_PROXY_THREADS", default_value = "1")]
    pub threads: String,

    /// Largest request head accepted (larger: 431). At least 8192.
    #[arg(long, env = "WEFT_PROXY_MAX_HEADER_BYTES", default_value = "65536")]
    pub max_header_bytes: String,

    /// Largest request body forwarded (larger: 413).
    #[arg(long, env = "WEFT_PROXY_MAX_REQUEST_BODY_BYTES", default_value = "16MiB")]
    pub max_request_body_bytes: String,

    /// HTTP/1 clients that have not sent a full request head by then are disconnected.
    #[arg(long, env = "WEFT_PROXY_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: String,

    /// Longest wait for an upstream's response head (then 504).
    #[arg(long, env = "WEFT_PROXY_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,

    /// On SIGTERM/SIGINT, how long in-flight requests may take before exiting anyway.
    #[arg(long, env = "WEFT_PROXY_DRAIN_TIMEOUT", default_value = "30s")]
    pub drain_timeout: String,
}

impl Args {
    /// Converts and validates every value, reporting all problems together.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut cfg = Config::default();

        let mut addr = |flag: &str, v: &str| -> Option<SocketAddr> {
            v.parse()
                .map_err(|_| problems.push(format!("{flag} {v:?}: not a socket address (ip:port)")))
                .ok()
        };
        if let Some(a) = addr("--outbound-listen", &self.outbound_listen) {
            cfg.outbound_listen = a;
        }
        if let Some(a) = addr("--inbound-listen", &self.inbound_listen) {
            cfg.inbound_listen = a;
        }
        if let Some(a) = addr("--admin-listen", &self.admin_listen) {
            cfg.admin_listen = a;
        }
        if let Some(app) = &self.app {
            cfg.app = addr("--app", app);
        }

        for r in &self.routes {
            match r.parse::<Route>() {
                Ok(route) => cfg.routes.push(route),
                Err(e) => problems.push(e),
            }
        }

        match self.threads.parse::<usize>() {
            Ok(n) => cfg.threads = n,
            Err(_) => problems.push(format!("--threads {:?}: not a whole number", self.threads)),
        }

        let mut size = |flag: &str, v: &str| -> Option<u64> {
            parse_byte_size(v).map_err(|e| problems.push(format!("{flag} {e}"))).ok()
        };
        let max_header = size("--max-header-bytes", &self.max_header_bytes);
        let max_body = size("--max-request-body-bytes", &self.max_request_body_bytes);

        let mut duration = |flag: &str, v: &str| -> Option<Duration> {
            humantime::parse_duration(v)
                .map_err(|e| problems.push(format!("{flag} {v:?}: {e} (e.g. 500ms, 10s, 1m)")))
                .ok()
        };
        let header_read_timeout = duration("--header-read-timeout", &self.header_read_timeout);
        let request_timeout = duration("--request-timeout", &self.request_timeout);
        let drain_timeout = duration("--drain-timeout", &self.drain_timeout);

        let defaults = Limits::default();
        cfg.limits = Limits {
            max_header_bytes: max_header
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .unwrap_or(defaults.max_header_bytes),
            max_request_body_bytes: max_body.unwrap_or(defaults.max_request_body_bytes),
            header_read_timeout: header_read_timeout.unwrap_or(defaults.header_read_timeout),
            request_timeout: request_timeout.unwrap_or(defaults.request_timeout),
        };
        if let Some(d) = drain_timeout {
            cfg.drain_timeout = d;
        }

        if let Err(e) = cfg.validate() {
            problems.extend(e.problems);
        }
        ConfigError::from_problems(problems)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["mesh-proxy"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).expect("clap accepts").into_config()
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let cfg = parse(&[]).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn all_bad_values_are_reported_together() {
        let err = parse(&[
            "--route",
            "web=oops",
            "--admin-listen",
            "nowhere",
            "--request-timeout",
            "soon",
            "--max-request-body-bytes",
            "lots",
        ])
        .unwrap_err();
        let text = err.to_string();
        for needle in ["oops", "nowhere", "soon", "lots"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert_eq!(err.problems.len(), 4, "{text}");
    }

    #[test]
    fn repeated_routes_and_app() {
        let cfg = parse(&[
            "--route",
            "a:80=127.0.0.1:1",
            "--route",
            "b=127.0.0.1:2",
            "--app",
            "127.0.0.1:3",
            "--threads",
            "2",
            "--max-request-body-bytes",
            "1KiB",
        ])
        .unwrap();
        assert_eq!(cfg.routes.len(), 2);
        assert_eq!(cfg.app, Some("127.0.0.1:3".parse().unwrap()));
        assert_eq!(cfg.threads, 2);
        assert_eq!(cfg.limits.max_request_body_bytes, 1024);
    }
}
