//! The HTTP/1.1 client side of the wire, for the load engine: the request is encoded once per
//! run, responses are parsed in place (httparse, hyper's own parser) and their bodies skipped.
//!
//! Why not hyper's client: its dispatcher hands each request to the connection through a
//! channel and the response back through a oneshot, builds a `HeaderMap` per response and
//! moves large futures around; on one core that was 0.72-0.90x of wrk's rate. A load
//! generator sends the same request over and over and only needs a response's status, its
//! framing and one header, so this is the part of HTTP/1.1 it needs, no more: no pipelining
//! (one request in flight per connection), bodies framed by `Content-Length`, `chunked` or
//! the end of the connection (RFC 9112 §6.3), interim 1xx responses skipped.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::StatusCode;

/// Headers a response may carry (hyper's default limit too).
const MAX_HEADERS: usize = 100;

/// A response head larger than this is refused, as hyper does with its read buffer limit.
pub(crate) const MAX_HEAD: usize = 400 * 1024;

/// Why a response could not be read (error class `io`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("invalid chunked body framing at byte {0:#04x}")]
    Chunk(u8),
    #[error("connection closed before the response ended")]
    Eof,
    #[error("unexpected status 101: this client never asks for an upgrade")]
    Upgrade,
}

/// The request as it goes on the wire, the same bytes hyper's client writes for it
/// (lower-case header names, `content-length` only with a body).
pub(crate) fn encode_request(method: &str, path: &str, host: &str, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(64 + path.len() + host.len() + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !body.is_empty() {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// How the body after a head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0: no body, e.g. 204 and 304).
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// What a response head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// Bytes of the head, its blank line included.
    pub len: usize,
    pub status: StatusCode,
    pub framing: Framing,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
    /// `weft-proxy-error-kind: overloaded`: a proxy answered itself because it was
    /// overloaded (the kind, not the reason's words: every way a proxy sheds is this kind).
    pub shed: bool,
}

/// Parses a response head at the start of `buf`; `None` until it is complete.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, WireError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WireError::Head(e)),
    };
    let code = resp.code.expect("complete head has a status");
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Head(httparse::Error::Status))?;
    let http11 = resp.version == Some(1);
    let mut keep_alive = http11;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut shed = false;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value)?;
            // Repeated equal values are allowed (RFC 9110 §8.6), differing ones are not.
            if length.is_some_and(|l| l != n) {
                return Err(WireError::ContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // Only the last coding decides whether the body is chunked.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("weft-proxy-error-kind") {
            shed = h.value == b"overloaded";
        }
    }
    let framing = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3 item 3).
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        keep_alive: keep_alive && framing != Framing::UntilClose,
        shed,
    }))
}

fn parse_length(v: &[u8]) -> Result<u64, WireError> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(WireError::ContentLength);
    }
    Ok(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Skips a chunked body fed in pieces of any size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Hex digits of a chunk size (`digits` read so far).
    Size { n: u64, digits: u8 },
    /// A chunk extension after the size, up to its CR.
    Extension { n: u64 },
    SizeLf { n: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

impl Chunked {
    pub fn new() -> Self {
        Chunked::Size { n: 0, digits: 0 }
    }

    /// Consumes from `buf`; returns how many bytes were part of the body. The body is
    /// complete once `self` is [`Chunked::Done`] (bytes after it are not consumed).
    pub fn skip(&mut self, buf: &[u8]) -> Result<usize, WireError> {
        let mut i = 0;
        while i < buf.len() && *self != Chunked::Done {
            if let Chunked::Data { left } = self {
                let take = (*left).min((buf.len() - i) as u64);
                *left -= take;
                i += take as usize;
                if *left == 0 {
                    *self = Chunked::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            *self = match (*self, b) {
                (Chunked::Size { n, digits }, _) if b.is_ascii_hexdigit() => {
                    if digits == 15 {
                        return Err(WireError::Chunk(b));
                    }
                    let d = (b as char).to_digit(16).expect("a hex digit");
                    Chunked::Size {
                        n: n * 16 + u64::from(d),
                        digits: digits + 1,
                    }
                }
                (Chunked::Size { n, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                    Chunked::Extension { n }
                }
                (Chunked::Size { n, digits }, b'\r') if digits > 0 => Chunked::SizeLf { n },
                (Chunked::Extension { n }, b'\r') => Chunked::SizeLf { n },
                (Chunked::Extension { n }, _) => Chunked::Extension { n },
                (Chunked::SizeLf { n: 0 }, b'\n') => Chunked::TrailerStart,
                (Chunked::SizeLf { n }, b'\n') => Chunked::Data { left: n },
                (Chunked::DataCr, b'\r') => Chunked::DataLf,
                (Chunked::DataLf, b'\n') => Chunked::new(),
                (Chunked::TrailerStart, b'\r') => Chunked::EndLf,
                (Chunked::TrailerLine, b'\r') => Chunked::TrailerLineLf,
                (Chunked::TrailerStart | Chunked::TrailerLine, _) => Chunked::TrailerLine,
                (Chunked::TrailerLineLf, b'\n') => Chunked::TrailerStart,
                (Chunked::EndLf, b'\n') => Chunked::Done,
                _ => return Err(WireError::Chunk(b)),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_are_what_hyper_writes() {
        assert_eq!(
            encode_request("GET", "/a?b=1", "svc:80", b""),
            Bytes::from_static(b"GET /a?b=1 HTTP/1.1\r\nhost: svc:80\r\n\r\n")
        );
        assert_eq!(
            encode_request("POST", "/", "h", b"xyz"),
            Bytes::from_static(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nxyz")
        );
    }

    #[test]
    fn heads_decide_framing_keep_alive_and_shed() {
        let head = |s: &str| parse_head(s.as_bytes()).unwrap().unwrap();
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nbody");
        assert_eq!(h.len, 39);
        assert_eq!((h.status, h.framing, h.keep_alive, h.shed), (StatusCode::OK, Framing::Length(12), true, false));
        let h = head("HTTP/1.1 503 x\r\nWeft-Proxy-Error-Kind: overloaded\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!((h.status, h.framing, h.keep_alive, h.shed), (StatusCode::SERVICE_UNAVAILABLE, Framing::Chunked, true, true));
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive, Close\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), false));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\nconnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nserver: x\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
            let h = head(&format!("HTTP/1.1 {status}\r\ncontent-length: 9\r\n\r\n"));
            assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true), "{status}");
        }
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-length: 7\r\nweft-proxy-error-kind: other\r\n\r\n");
        assert_eq!((h.framing, h.shed), (Framing::Length(7), false));
    }

    #[test]
    fn partial_and_invalid_heads() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_head(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTQ/1.1 200 OK\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert!(matches!(parse_head(&big), Err(WireError::HeadTooLarge)));
    }

    /// Feeds `body` in pieces of `step` bytes; returns the bytes consumed.
    fn skip_in_steps(body: &[u8], step: usize) -> Result<(usize, Chunked), WireError> {
        let mut c = Chunked::new();
        let mut used = 0;
        while used < body.len() && c != Chunked::Done {
            let end = (used + step).min(body.len());
            used += c.skip(&body[used..end])?;
        }
        Ok((used, c))
    }

    #[test]
    fn chunked_bodies_end_where_they_end_in_any_split() {
        let body = b"5;name=v\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\nNEXT";
        let end = body.len() - 4;
        for step in 1..=body.len() {
            let (used, c) = skip_in_steps(body, step).unwrap();
            assert_eq!((used, c), (end, Chunked::Done), "step {step}");
        }
        let plain = b"0\r\n\r\n";
        assert_eq!(skip_in_steps(plain, 1).unwrap(), (5, Chunked::Done));
        let unfinished = b"3\r\nab";
        assert_eq!(skip_in_steps(unfinished, 2).unwrap(), (5, Chunked::Data { left: 1 }));
    }

    #[test]
    fn broken_chunked_framing_is_an_error() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"3\r\nabcX\r\n",
            b"3\nabc\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\n\rX",
        ] {
            assert!(skip_in_steps(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
