//! HTTP/1 attacks: request smuggling vectors, oversize and many headers, a
//! missing Host, and the slow ones (slowloris, a slow body).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::conn::{classify, h1_responses, read_to_close, End, Io, Target};
use super::Finding;
use record::hostile::Outcome;

/// The path of the request hidden in a smuggling vector's body: if the app
/// ever answers it, the proxy and the app disagreed on where a request ends.
pub const SMUGGLED_PATH: &str = "/hostile-smuggled";

/// Ways to make two parsers disagree on a request's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vector {
    /// Content-Length and Transfer-Encoding: chunked.
    ClTe,
    /// Transfer-Encoding first, then a Content-Length.
    TeCl,
    /// Two different Content-Length headers.
    DuplicateCl,
    /// `Transfer-Encoding: chunked, identity` with a Content-Length.
    TeChunkedIdentity,
    /// `Transfer-Encoding: xchunked` (unknown coding) with a Content-Length.
    TeXchunked,
    /// `Transfer-Encoding:<TAB>chunked` with a Content-Length.
    TeTab,
    /// `Transfer-Encoding : chunked` (space before the colon) with a Content-Length.
    TeSpaceColon,
    /// `Content-Length: 1 5`.
    ClSpaces,
    /// Lines ended by a bare LF, with both Content-Length and Transfer-Encoding.
    BareLf,
    /// Transfer-Encoding continued on an obs-fold line, with a Content-Length.
    ObsFold,
}

impl Vector {
    pub const ALL: [Vector; 10] = [
        Vector::ClTe,
        Vector::TeCl,
        Vector::DuplicateCl,
        Vector::TeChunkedIdentity,
        Vector::TeXchunked,
        Vector::TeTab,
        Vector::TeSpaceColon,
        Vector::ClSpaces,
        Vector::BareLf,
        Vector::ObsFold,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Vector::ClTe => "smuggle-cl-te",
            Vector::TeCl => "smuggle-te-cl",
            Vector::DuplicateCl => "smuggle-duplicate-cl",
            Vector::TeChunkedIdentity => "smuggle-te-chunked-identity",
            Vector::TeXchunked => "smuggle-te-xchunked",
            Vector::TeTab => "smuggle-te-tab",
            Vector::TeSpaceColon => "smuggle-te-space-colon",
            Vector::ClSpaces => "smuggle-cl-spaces",
            Vector::BareLf => "smuggle-bare-lf",
            Vector::ObsFold => "smuggle-obs-fold",
        }
    }

    /// The request bytes: a POST whose body holds a complete second request
    /// to [`SMUGGLED_PATH`] (as chunked body `0\r\n\r\n` + request, or raw).
    pub fn request(self, host: &str) -> Vec<u8> {
        let inner = format!("GET {SMUGGLED_PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let chunked = format!("0\r\n\r\n{inner}");
        let n = chunked.len();
        let head = |headers: &str, body: &str| format!("POST /hostile HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n{body}");
        let s = match self {
            Vector::ClTe => head(&format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"), &chunked),
            Vector::TeCl => head(&format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"), &chunked),
            Vector::DuplicateCl => head(&format!("Content-Length: 0\r\nContent-Length: {}\r\n", inner.len()), &inner),
            Vector::TeChunkedIdentity => {
                head(&format!("Content-Length: {n}\r\nTransfer-Encoding: chunked, identity\r\n"), &chunked)
            }
            Vector::TeXchunked => head(&format!("Content-Length: {n}\r\nTransfer-Encoding: xchunked\r\n"), &chunked),
            Vector::TeTab => head(&format!("Content-Length: {n}\r\nTransfer-Encoding:\tchunked\r\n"), &chunked),
            Vector::TeSpaceColon => head(&format!("Content-Length: {n}\r\nTransfer-Encoding : chunked\r\n"), &chunked),
            Vector::ClSpaces => head("Content-Length: 1 5\r\n", &inner),
            Vector::BareLf => format!(
                "POST /hostile HTTP/1.1\nHost: {host}\nContent-Length: {n}\nTransfer-Encoding: chunked\n\n{chunked}"
            ),
            Vector::ObsFold => head(&format!("Content-Length: {n}\r\nTransfer-Encoding: identity\r\n chunked\r\n"), &chunked),
        };
        s.into_bytes()
    }
}

/// Send `request` on a fresh connection and judge what came back: reading
/// stops at the close, `window` after the start, or 500 ms after the first
/// response (time for a smuggled second one to follow).
pub async fn exchange(t: &Target, request: &[u8], window: Duration) -> Finding {
    let started = Instant::now();
    let mut io = match t.connect().await {
        Ok(io) => io,
        Err(e) => return Finding::error(format!("connect: {e}")),
    };
    // The proxy may answer and close before taking everything we send.
    let write_end = match io.write_all(request).await.and(io.flush().await) {
        Ok(()) => None,
        Err(e) => Some(classify(&e, started)),
    };
    let (bytes, end) = read_responses(&mut io, started, started + window).await;
    let end = match (end, write_end) {
        (End::Open, Some(w)) => w,
        (e, _) => e,
    };
    judge(&bytes, end)
}

async fn read_responses(io: &mut Io, since: Instant, deadline: Instant) -> (Vec<u8>, End) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut deadline = deadline;
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => return (got, End::Open),
            Ok(Ok(0)) => return (got, End::Eof(since.elapsed())),
            Ok(Ok(n)) => {
                if got.len() < 1 << 20 {
                    got.extend_from_slice(&buf[..n]);
                }
                // A response has begun: only a short grace for a second
                // (smuggled) one, or for the close.
                deadline = deadline.min(Instant::now() + Duration::from_millis(500));
            }
            Ok(Err(e)) => return (got, classify(&e, since)),
        }
    }
}

/// A refusal, an answer from the app (forwarded), or how the connection ended.
pub fn judge(bytes: &[u8], end: End) -> Finding {
    let responses = h1_responses(bytes);
    let closed_after = end.after();
    let from_app = |text: &str| text.contains("\"path\"");
    if responses.iter().any(|(_, text)| text.contains(SMUGGLED_PATH)) {
        let statuses: Vec<String> = responses.iter().map(|(s, _)| s.to_string()).collect();
        return Finding {
            outcome: Outcome::Forwarded,
            status: responses.first().map(|r| r.0),
            detail: format!("the smuggled request reached the app (responses {})", statuses.join(", ")),
            closed_after,
        };
    }
    match responses.first() {
        Some((status, text)) if from_app(text) || (200..300).contains(status) => Finding {
            outcome: Outcome::Forwarded,
            status: Some(*status),
            detail: "the app answered it".into(),
            closed_after,
        },
        Some((status, _)) => Finding { outcome: Outcome::Refused, status: Some(*status), detail: String::new(), closed_after },
        None => Finding::ended(end, bytes),
    }
}

/// One header far over the default 64 KiB head limit.
pub fn oversize_header(host: &str) -> Vec<u8> {
    format!("GET /hostile HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n", "a".repeat(100 * 1024)).into_bytes()
}

/// 2,000 small headers (about 24 KiB, under the byte limit).
pub fn many_headers(host: &str) -> Vec<u8> {
    let mut s = format!("GET /hostile HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..2000 {
        s.push_str(&format!("X-H{i}: v\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// HTTP/1.1 without Host (RFC 9112 §3.2: a server must answer 400).
pub fn missing_host() -> Vec<u8> {
    b"GET /hostile HTTP/1.1\r\nUser-Agent: hostile\r\n\r\n".to_vec()
}

/// Send `prefix` at once, then `trickle` one byte per `every` until the
/// proxy answers or closes, or `window` passes.
pub async fn slow(t: &Target, prefix: &[u8], trickle: &[u8], every: Duration, window: Duration) -> Finding {
    let started = Instant::now();
    let deadline = started + window;
    let mut io = match t.connect().await {
        Ok(io) => io,
        Err(e) => return Finding::error(format!("connect: {e}")),
    };
    if let Err(e) = io.write_all(prefix).await.and(io.flush().await) {
        return Finding::ended(classify(&e, started), b"");
    }
    let (mut rd, mut wr) = tokio::io::split(io);
    let reader = tokio::spawn(async move { read_to_close(&mut rd, started, deadline).await });
    let mut reader = std::pin::pin!(reader);
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            r = &mut reader => {
                let (bytes, end) = r.unwrap_or((Vec::new(), End::Open));
                let mut f = judge(&bytes, end);
                f.detail = join(&f.detail, &format!("after {sent} trickled bytes"));
                return f;
            }
            _ = tick.tick() => {
                if Instant::now() >= deadline {
                    break;
                }
                let byte = [trickle[sent % trickle.len()]];
                if let Err(e) = wr.write_all(&byte).await.and(wr.flush().await) {
                    // Closed under us; the reader reports how and when.
                    let end = classify(&e, started);
                    let (bytes, rend) = tokio::time::timeout(Duration::from_secs(2), &mut reader)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or((Vec::new(), end));
                    let mut f = judge(&bytes, if rend == End::Open { end } else { rend });
                    f.detail = join(&f.detail, &format!("after {sent} trickled bytes"));
                    return f;
                }
                sent += 1;
            }
        }
    }
    let (bytes, end) = reader.await.unwrap_or((Vec::new(), End::Open));
    let mut f = judge(&bytes, end);
    f.detail = join(&f.detail, &format!("still open after {sent} trickled bytes in {:.0} s", window.as_secs_f64()));
    f
}

fn join(a: &str, b: &str) -> String {
    match a.is_empty() {
        true => b.to_owned(),
        false => format!("{a}; {b}"),
    }
}

/// A request head that never ends: one byte per second is a slowloris.
pub fn slowloris_bytes(host: &str) -> Vec<u8> {
    let mut s = format!("GET /hostile HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..1000 {
        s.push_str(&format!("X-Slow-{i}: {}\r\n", "s".repeat(16)));
    }
    s.into_bytes()
}

/// A complete head announcing a 1 MB body, whose bytes then trickle.
pub fn slow_body_head(host: &str) -> Vec<u8> {
    format!("POST /hostile HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vector_carries_a_complete_smuggled_request() {
        for v in Vector::ALL {
            let r = String::from_utf8(v.request("h.test")).unwrap();
            assert!(r.contains(&format!("GET {SMUGGLED_PATH} HTTP/1.1")), "{v:?}");
            assert!(r.starts_with("POST /hostile HTTP/1.1"), "{v:?}");
        }
        let names: std::collections::BTreeSet<_> = Vector::ALL.iter().map(|v| v.name()).collect();
        assert_eq!(names.len(), Vector::ALL.len());
    }

    #[test]
    fn an_answer_from_the_app_is_forwarded_a_proxy_status_is_a_refusal() {
        let app = b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\n{\"path\":\"/host\"}";
        assert_eq!(judge(app, End::Open).outcome, Outcome::Forwarded);
        let refused = judge(b"HTTP/1.1 400 Bad Request\r\n\r\n", End::Eof(Duration::from_millis(3)));
        assert_eq!((refused.outcome, refused.status), (Outcome::Refused, Some(400)));
        let smuggled = [&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], b"HTTP/1.1 200 OK\r\n\r\n{\"path\":\"/hostile-smuggled\"}"].concat();
        assert_eq!(judge(&smuggled, End::Open).outcome, Outcome::Forwarded);
        assert_eq!(judge(b"", End::Open).outcome, Outcome::Hung);
        assert_eq!(judge(b"", End::Reset(Duration::ZERO)).outcome, Outcome::Reset);
    }
}
