//! HTTP/1 requests cross the mesh as HTTP/2 streams (one multiplexed
//! connection between two proxies instead of a pool of HTTP/1 connections),
//! and leave it as HTTP/1 again.
//!
//! ```text
//!  app ─HTTP/1.1─> outbound ─h2 + `weft-orig-proto: HTTP/1.1`─> inbound ─HTTP/1.1─> app
//! ```
//!
//! The outbound proxy moves `Host` into `:authority` and records the
//! original version in `weft-orig-proto`; the inbound proxy restores both
//! and removes the header, so the app never sees it. A request arriving
//! with the header already set by someone else is not trusted: the outbound
//! side overwrites it, the inbound side only honours it on HTTP/2.

use http::{header, uri, HeaderName, HeaderValue, Uri, Version};

/// Carries the downstream HTTP version from one proxy to the other.
pub static ORIG_PROTO: HeaderName = HeaderName::from_static("weft-orig-proto");

/// Why an HTTP/1 request cannot be carried over HTTP/2.
#[derive(Debug, thiserror::Error)]
#[error("cannot carry the HTTP/1 request over HTTP/2: {0}")]
pub struct UpgradeError(String);

/// Outbound, meshed route: turns an HTTP/1.x request (origin-form target,
/// `Host` header) into an HTTP/2 one marked with its original version. An
/// HTTP/2 request only loses a `weft-orig-proto` it should not carry.
pub fn upgrade(parts: &mut http::request::Parts) -> Result<(), UpgradeError> {
    let original = match parts.version {
        Version::HTTP_2 => {
            parts.headers.remove(&ORIG_PROTO);
            return Ok(());
        }
        Version::HTTP_10 => HeaderValue::from_static("HTTP/1.0"),
        _ => HeaderValue::from_static("HTTP/1.1"),
    };
    let authority = match parts.headers.remove(header::HOST) {
        Some(host) => uri::Authority::try_from(host.as_bytes())
            .map_err(|_| UpgradeError(format!("Host {host:?} is not a valid authority")))?,
        None => parts
            .uri
            .authority()
            .cloned()
            .ok_or_else(|| UpgradeError("the request names no authority (no Host)".to_owned()))?,
    };
    let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
    uri_parts.scheme = Some(uri::Scheme::HTTP);
    uri_parts.authority = Some(authority);
    if uri_parts.path_and_query.is_none() {
        uri_parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri_parts).map_err(|e| UpgradeError(e.to_string()))?;
    parts.version = Version::HTTP_2;
    parts.headers.insert(ORIG_PROTO.clone(), original);
    Ok(())
}

/// Inbound: an HTTP/2 request marked by a peer proxy goes back to its
/// original HTTP/1 version (the caller then makes the target origin-form
/// and `Host` from the authority). The header is always removed.
pub fn restore(parts: &mut http::request::Parts) {
    let Some(original) = parts.headers.remove(&ORIG_PROTO) else { return };
    if parts.version != Version::HTTP_2 {
        return;
    }
    match original.as_bytes() {
        b"HTTP/1.1" => parts.version = Version::HTTP_11,
        b"HTTP/1.0" => parts.version = Version::HTTP_10,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> http::request::Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn round_trip_http11() {
        let mut p = parts(http::Request::get("/a?b=c").header("host", "web.test:8080").header("x-k", "v"));
        upgrade(&mut p).unwrap();
        assert_eq!(p.version, Version::HTTP_2);
        assert_eq!(p.uri, "http://web.test:8080/a?b=c");
        assert!(p.headers.get("host").is_none());
        assert_eq!(p.headers[&ORIG_PROTO], "HTTP/1.1");
        restore(&mut p);
        assert_eq!(p.version, Version::HTTP_11);
        assert!(p.headers.get(&ORIG_PROTO).is_none());
        assert_eq!(p.headers["x-k"], "v");
    }

    #[test]
    fn http10_and_h2_and_spoofing() {
        let mut p = parts(http::Request::get("/").version(Version::HTTP_10).header("host", "h"));
        upgrade(&mut p).unwrap();
        assert_eq!(p.headers[&ORIG_PROTO], "HTTP/1.0");
        restore(&mut p);
        assert_eq!(p.version, Version::HTTP_10);

        // An app's own header on an h2 request is dropped, not forwarded.
        let mut p = parts(http::Request::get("http://h/").version(Version::HTTP_2).header("weft-orig-proto", "HTTP/1.0"));
        upgrade(&mut p).unwrap();
        assert!(p.headers.get(&ORIG_PROTO).is_none());

        // Inbound HTTP/1 with the header: removed, version untouched.
        let mut p = parts(http::Request::get("/").header("weft-orig-proto", "HTTP/1.0"));
        restore(&mut p);
        assert_eq!(p.version, Version::HTTP_11);
        assert!(p.headers.get(&ORIG_PROTO).is_none());
    }

    #[test]
    fn no_authority_is_an_error() {
        let mut p = parts(http::Request::get("/"));
        assert!(upgrade(&mut p).is_err());
    }
}
