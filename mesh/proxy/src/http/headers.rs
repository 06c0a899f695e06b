//! Hop-by-hop header removal (RFC 9110 §7.6.1).
//!
//! A proxy must not forward connection-specific fields: `Connection`, every
//! field the `Connection` header names, and the well-known hop-by-hop fields.
//! `TE: trailers` is the one exception kept, because gRPC over HTTP/2 needs it
//! to travel end to end. Everything else passes through unchanged.

use http::{header, HeaderMap, HeaderValue};

/// `Keep-Alive` and `Proxy-Connection` are not in `http::header`.
const KEEP_ALIVE: &str = "keep-alive";
const PROXY_CONNECTION: &str = "proxy-connection";

/// Removes hop-by-hop fields from `headers` in place.
///
/// Allocation-free: names listed in `Connection` are looked up by `&str`,
/// which `http` resolves without building a `HeaderName`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these; one pass of cheap name comparisons
    // is faster than six hashed removals that find nothing.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // A message may carry several Connection lines; `HeaderMap::remove`
    // would return only the first, so each line is read (a cheap refcounted
    // clone) before the field goes.
    let lines = headers.get_all(header::CONNECTION).iter().count();
    for i in 0..lines {
        if let Some(line) = headers.get_all(header::CONNECTION).iter().nth(i).cloned() {
            remove_connection_listed(headers, &line);
        }
    }
    if lines > 0 {
        headers.remove(header::CONNECTION);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
    strip_te(headers);
}

fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name.as_str() == KEEP_ALIVE
        || name.as_str() == PROXY_CONNECTION
}

fn remove_connection_listed(headers: &mut HeaderMap, conn: &HeaderValue) {
    let Ok(list) = conn.to_str() else { return };
    for name in list.split(',') {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        // RFC 9110 §10.1.4 makes HTTP/1.1 senders of TE list it in
        // Connection; `TE: trailers` must still survive, so TE is judged by
        // its value in `strip_te` instead. `Connection` itself is removed
        // once every line has been read.
        if name.eq_ignore_ascii_case("te") || name.eq_ignore_ascii_case("connection") {
            continue;
        }
        headers.remove(name);
    }
}

/// Keeps `TE` only if it says exactly `trailers`, the one value allowed
/// across an HTTP/2 hop.
fn strip_te(headers: &mut HeaderMap) {
    let keep = match headers.get(header::TE) {
        None => return,
        Some(v) => {
            headers.get_all(header::TE).iter().count() == 1
                && v.as_bytes().eq_ignore_ascii_case(b"trailers")
        }
    };
    if !keep {
        headers.remove(header::TE);
    }
}

/// Whether a request is gRPC (`content-type: application/grpc*`).
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn strips_fixed_hop_by_hop_fields() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("content-type", "text/plain"),
            ("x-request-id", "42"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "x-request-id"]);
    }

    #[test]
    fn strips_fields_named_by_connection() {
        let mut h = map(&[
            ("connection", "close, X-Secret-Hop"),
            ("connection", "x-other"),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("x-other").is_none());
        assert_eq!(h.get("x-kept").unwrap(), "3");
        assert!(h.get("connection").is_none());
    }

    #[test]
    fn keeps_te_trailers_only() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");

        let mut h = map(&[("te", "trailers, deflate")]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn keeps_end_to_end_fields_untouched() {
        let mut h = map(&[("content-length", "5"), ("host", "web:80"), ("cookie", "a=b")]);
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
