//! Echo mode of the target server (`loadgen serve --echo`): every request is
//! answered with a JSON description of what arrived, so a conformance test
//! can see what the hops in front of the app did to it (routes, rewrites,
//! header filters, which replica was picked).
//!
//! ```text
//! {"method":"GET","path":"/a","query":"x=1","authority":"echo.ns.svc.cluster.local:80",
//!  "proto":"HTTP/1.1","headers":{"x-h":["v"]},"body_len":0,
//!  "replica":{"name":"echo-v1","namespace":"ns","pod":"echo-v1-0"}}
//! ```
//!
//! A request can ask for its answer (knobs, all optional request headers):
//! - `x-echo-status: 503`: the HTTP status;
//! - `x-echo-delay: 300ms`: wait before the response head;
//! - `x-echo-response-header: name: value` (repeatable): add to the response.
//!
//! gRPC (`content-type: application/grpc...`): the answer is one gRPC message
//! holding the same JSON (a length-prefixed frame, not protobuf: the suite's
//! own client reads it) with `grpc-status: 0` in the trailers, or the code
//! asked for with `x-echo-grpc-status: 14`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Request header: the status to answer with.
pub const STATUS: &str = "x-echo-status";
/// Request header: how long to wait before answering (humantime: `300ms`).
pub const DELAY: &str = "x-echo-delay";
/// Request header, repeatable: `name: value` to add to the response.
pub const RESPONSE_HEADER: &str = "x-echo-response-header";
/// Request header: the `grpc-status` of a gRPC answer.
pub const GRPC_STATUS: &str = "x-echo-grpc-status";
/// Response header naming the replica (pod) that answered, for clients that
/// cannot read the body (e.g. a redirect or a proxy's own answer has none).
pub const REPLICA_HEADER: &str = "x-echo-pod";

/// Which replica this server is, as the deployment names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The workload (e.g. `echo-v1`).
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    /// The pod (e.g. `echo-v1-0`).
    #[serde(default)]
    pub pod: String,
}

/// What the echo server saw; the JSON body of every echo answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`), if any.
    #[serde(default)]
    pub query: Option<String>,
    /// `:authority` (HTTP/2) or `Host` (HTTP/1).
    #[serde(default)]
    pub authority: Option<String>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub proto: String,
    /// Lower-case names, values in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: u64,
    pub replica: Replica,
}

impl Echo {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// The body type of echo answers: whole JSON, or a gRPC message + trailers.
pub type EchoBody = http_body_util::Either<
    Full<Bytes>,
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
>;

/// Problems with a request's knobs, answered 400 so a test sees its own mistake.
fn bad_knob(what: String) -> Response<EchoBody> {
    let mut resp = Response::new(EchoBody::Left(Full::new(Bytes::from(what + "\n"))));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp
}

/// What the request's knobs ask for.
struct Knobs {
    status: StatusCode,
    delay: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
    grpc_status: u32,
}

fn knobs<B>(req: &Request<B>) -> Result<Knobs, String> {
    let text = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
    };
    let status = match text(STATUS) {
        None => StatusCode::OK,
        Some(s) => s
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| format!("{STATUS}: {s:?} is not an HTTP status like 503"))?,
    };
    let delay = match text(DELAY) {
        None => Duration::ZERO,
        Some(d) => humantime::parse_duration(&d)
            .map_err(|_| format!("{DELAY}: {d:?} is not a duration like 300ms"))?,
    };
    let mut headers = Vec::new();
    for v in req.headers().get_all(RESPONSE_HEADER) {
        let v = String::from_utf8_lossy(v.as_bytes()).to_string();
        let parsed = v.split_once(':').and_then(|(n, val)| {
            Some((
                HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                HeaderValue::from_str(val.trim()).ok()?,
            ))
        });
        headers.push(parsed.ok_or_else(|| {
            format!("{RESPONSE_HEADER}: {v:?} is not `name: value` with a valid name and value")
        })?);
    }
    let grpc_status = match text(GRPC_STATUS) {
        None => 0,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|c| *c <= 16)
            .ok_or_else(|| format!("{GRPC_STATUS}: {s:?} is not a gRPC status code 0..=16"))?,
    };
    Ok(Knobs {
        status,
        delay,
        headers,
        grpc_status,
    })
}

/// What arrived, before the body is read.
pub fn describe<B>(req: &Request<B>, replica: &Replica) -> Echo {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| headers.get("host").and_then(|h| h.first().cloned()));
    Echo {
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        authority,
        proto: format!("{:?}", req.version()),
        headers,
        body_len: 0,
        replica: replica.clone(),
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A gRPC message frame: 1 byte "not compressed", 4 bytes big-endian length, payload.
pub fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// The payload of the first gRPC message in `body`, if it holds a whole one.
pub fn grpc_payload(body: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    body.get(5..5 + len)
}

/// Answer `req` with what it carried.
pub async fn respond(req: Request<Incoming>, replica: &Replica) -> Response<EchoBody> {
    let knobs = match knobs(&req) {
        Ok(k) => k,
        Err(e) => return bad_knob(e),
    };
    let grpc = is_grpc(&req);
    let mut echo = describe(&req, replica);
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    echo.body_len += d.len() as u64;
                }
            }
            // The client went away mid-body; the answer would go nowhere.
            Err(_) => break,
        }
    }
    if !knobs.delay.is_zero() {
        tokio::time::sleep(knobs.delay).await;
    }
    let json = serde_json::to_vec(&echo).expect("an Echo always serializes");
    let mut resp = if grpc {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(knobs.grpc_status));
        let frames = vec![
            Ok(Frame::data(grpc_frame(&json))),
            Ok(Frame::trailers(trailers)),
        ];
        let mut r = Response::new(EchoBody::Right(StreamBody::new(
            futures_util::stream::iter(frames),
        )));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        r
    } else {
        let mut r = Response::new(EchoBody::Left(Full::new(Bytes::from(json))));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        *r.status_mut() = knobs.status;
        r
    };
    if let Ok(v) = HeaderValue::from_str(&replica.pod) {
        resp.headers_mut().insert(REPLICA_HEADER, v);
    }
    for (n, v) in knobs.headers {
        resp.headers_mut().append(n, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica() -> Replica {
        Replica {
            name: "echo-v1".into(),
            namespace: "ns".into(),
            pod: "echo-v1-0".into(),
        }
    }

    #[test]
    fn describes_method_path_query_authority_and_every_header_value() {
        let req = Request::post("/a/b?x=1&y=%20")
            .header("host", "echo.ns:80")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .body(())
            .unwrap();
        let e = describe(&req, &replica());
        assert_eq!(e.method, "POST");
        assert_eq!(e.path, "/a/b");
        assert_eq!(e.query.as_deref(), Some("x=1&y=%20"));
        assert_eq!(e.authority.as_deref(), Some("echo.ns:80"));
        assert_eq!(e.proto, "HTTP/1.1");
        assert_eq!(e.headers["x-multi"], vec!["1", "2"]);
        assert_eq!(e.header("X-Multi"), Some("1"));
        assert_eq!(e.replica, replica());
        let back: Echo = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn knobs_parse_and_bad_ones_are_named() {
        let req = Request::get("/")
            .header(STATUS, "503")
            .header(DELAY, "250ms")
            .header(RESPONSE_HEADER, "x-a: 1")
            .header(RESPONSE_HEADER, "x-b:two words")
            .header(GRPC_STATUS, "14")
            .body(())
            .unwrap();
        let k = knobs(&req).unwrap();
        assert_eq!(k.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(k.delay, Duration::from_millis(250));
        assert_eq!(k.headers.len(), 2);
        assert_eq!(k.headers[1].1, "two words");
        assert_eq!(k.grpc_status, 14);
        for (name, value) in [
            (STATUS, "abc"),
            (DELAY, "soon"),
            (RESPONSE_HEADER, "novalue"),
            (GRPC_STATUS, "99"),
        ] {
            let req = Request::get("/").header(name, value).body(()).unwrap();
            let e = knobs(&req).err().unwrap();
            assert!(e.contains(name) && e.contains(value), "{e}");
        }
    }

    #[test]
    fn grpc_frames_round_trip() {
        let f = grpc_frame(b"{\"a\":1}");
        assert_eq!(&f[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(grpc_payload(&f), Some(&b"{\"a\":1}"[..]));
        assert_eq!(grpc_payload(&f[..6]), None);
    }
}
