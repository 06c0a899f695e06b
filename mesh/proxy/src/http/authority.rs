//! An authority as the proxy keys it, for static routes, discovery and
//! metrics alike: lower-case `host:port`, port 80 when the request named
//! none (HTTP's default port, RFC 9110 §4.2.1: `Host: svc` is `svc:80`),
//! without userinfo. Built without allocating: borrowed when the authority
//! is already so, else in a stack buffer.

use std::ops::Deref;

/// DNS names are at most 253 bytes; with a port and brackets this is ample.
pub const MAX_AUTHORITY_LEN: usize = 320;

/// Room for the longest authority and a `:80` added to it.
const KEY_CAP: usize = MAX_AUTHORITY_LEN + 3;

/// See the module docs; derefs to the key.
pub enum AuthorityKey<'a> {
    /// The authority was already a key.
    Borrowed(&'a str),
    /// Lower-cased and/or given its port, in place.
    Built { buf: [u8; KEY_CAP], len: usize },
    /// Longer than [`MAX_AUTHORITY_LEN`] (never a valid name; allocated).
    Long(String),
}

impl Deref for AuthorityKey<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            AuthorityKey::Borrowed(s) => s,
            // Lower-casing ASCII bytes and appending ASCII keep UTF-8 valid.
            AuthorityKey::Built { buf, len } => std::str::from_utf8(&buf[..*len]).unwrap_or_default(),
            AuthorityKey::Long(s) => s,
        }
    }
}

impl std::fmt::Debug for AuthorityKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// The key of `authority` (see the module docs).
pub fn normalize(authority: &str) -> AuthorityKey<'_> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let suffix: &str = if strip_port(authority).is_some() { "" } else { ":80" };
    if suffix.is_empty() && !authority.bytes().any(|b| b.is_ascii_uppercase()) {
        return AuthorityKey::Borrowed(authority);
    }
    let (n, len) = (authority.len(), authority.len() + suffix.len());
    if len > KEY_CAP {
        return AuthorityKey::Long(authority.to_ascii_lowercase() + suffix);
    }
    let mut buf = [0u8; KEY_CAP];
    buf[..n].copy_from_slice(authority.as_bytes());
    buf[..n].make_ascii_lowercase();
    buf[n..len].copy_from_slice(suffix.as_bytes());
    AuthorityKey::Built { buf, len }
}

/// `host:port` -> `host`; `[::1]:80` -> `[::1]`; no port -> `None`.
pub fn strip_port(authority: &str) -> Option<&str> {
    let (host, port) = authority.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // An unbracketed IPv6 literal has colons but no port.
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return None;
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lower_case_host_port_without_userinfo() {
        for (given, key) in [
            ("web.ns:80", "web.ns:80"),
            ("Web.NS", "web.ns:80"),
            ("u@web:8080", "web:8080"),
            ("[::1]:81", "[::1]:81"),
            ("[::1]", "[::1]:80"),
            ("WEB:8080", "web:8080"),
        ] {
            assert_eq!(&*normalize(given), key, "{given}");
        }
        assert!(matches!(normalize("web.ns:80"), AuthorityKey::Borrowed(_)), "no copy when already a key");
        assert!(matches!(normalize("u@web.ns:80"), AuthorityKey::Borrowed(_)));
        let long = "A".repeat(MAX_AUTHORITY_LEN + 1);
        assert_eq!(&*normalize(&long), format!("{}:80", long.to_ascii_lowercase()));
        let at_cap = "a".repeat(MAX_AUTHORITY_LEN);
        assert_eq!(&*normalize(&at_cap), format!("{at_cap}:80"));
    }

    #[test]
    fn ports_are_digits_after_the_last_colon_outside_brackets() {
        assert_eq!(strip_port("web:80"), Some("web"));
        assert_eq!(strip_port("[::1]:80"), Some("[::1]"));
        assert_eq!(strip_port("::1"), None);
        assert_eq!(strip_port("web:"), None);
        assert_eq!(strip_port("web:x"), None);
        assert_eq!(strip_port("web"), None);
    }
}
