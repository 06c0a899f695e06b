//! Load in protocols other than plain HTTP requests: gRPC (unary and server streaming, h2c),
//! opaque TCP (echo over one long-lived connection, or a new connection per exchange) and
//! WebSocket (upgrade, then message round trips); and what `loadgen serve` answers them with.
//!
//! ```text
//!  sequencer / closed loop (as for HTTP)
//!     │
//!     ├─ gRPC:            round robin ──> N h2c connections, every call a stream at once
//!     └─ TCP, TCP churn,  one FIFO    ──> N lanes, one exchange in flight each
//!        WebSocket                        (TCP churn: a fresh connection per exchange)
//!                                              │
//!                         the same Recorder, histograms and record::Load as HTTP
//! ```
//!
//! One *exchange* is what a latency sample measures: a unary call; a whole stream (request to
//! trailers); `body_size` bytes written and the same number read back; a WebSocket message
//! sent and its echo received. Connection setup is part of the sample only for TCP churn,
//! where it is the point.

mod engine;
pub mod grpc;
pub mod tcp;
pub mod ws;

use std::fmt;
use std::str::FromStr;

pub use engine::probe;
pub(crate) use engine::run;

/// Messages per server-streaming call when none is given.
pub const DEFAULT_STREAM_MESSAGES: u32 = 10;

/// A load protocol other than plain HTTP requests (those are `LoadConfig::http2`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// gRPC unary calls over h2c: `Bench/Unary` with `body_size` payload bytes.
    Grpc,
    /// gRPC server streaming over h2c: `Bench/ServerStream`, `messages` responses per call;
    /// one latency sample per stream.
    GrpcStream { messages: u32 },
    /// Opaque TCP: `body_size` bytes written and echoed back, over long-lived connections.
    Tcp,
    /// Opaque TCP with a new connection per exchange (connect, echo, close): the
    /// per-connection cost of whatever is in between.
    TcpChurn,
    /// WebSocket: one upgrade per connection, then binary messages of `body_size` bytes, each
    /// echoed by the server.
    WebSocket,
}

impl Proto {
    /// The record's `protocol` string (also what `--protocol` takes).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Grpc => "grpc",
            Proto::GrpcStream { .. } => "grpc-stream",
            Proto::Tcp => "tcp",
            Proto::TcpChurn => "tcp-churn",
            Proto::WebSocket => "websocket",
        }
    }

    /// Every problem of this protocol with the rest of the load's settings.
    pub(crate) fn problems(self, http2: bool, body_size: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if http2 {
            problems.push(format!(
                "--http2 with protocol {self}: {self} chooses its own transport, drop --http2"
            ));
        }
        match self {
            Proto::Tcp | Proto::TcpChurn | Proto::WebSocket if body_size == 0 => problems.push(format!(
                "protocol {self} with body size 0: the bytes echoed per exchange must be at least 1"
            )),
            Proto::GrpcStream { messages: 0 } => {
                problems.push("grpc-stream with 0 messages: a stream must carry at least 1".into())
            }
            _ => {}
        }
        problems
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--protocol` value that names no protocol.
#[derive(Debug, thiserror::Error)]
#[error("unknown protocol {0:?}: expected http1, http2, grpc, grpc-stream, tcp, tcp-churn or websocket")]
pub struct UnknownProto(pub String);

impl FromStr for Proto {
    type Err = UnknownProto;

    /// `grpc-stream` gets [`DEFAULT_STREAM_MESSAGES`]; http1/http2 are not a `Proto`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "grpc" => Proto::Grpc,
            "grpc-stream" => Proto::GrpcStream {
                messages: DEFAULT_STREAM_MESSAGES,
            },
            "tcp" => Proto::Tcp,
            "tcp-churn" => Proto::TcpChurn,
            "websocket" | "ws" => Proto::WebSocket,
            other => return Err(UnknownProto(other.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for p in [
            Proto::Grpc,
            Proto::GrpcStream {
                messages: DEFAULT_STREAM_MESSAGES,
            },
            Proto::Tcp,
            Proto::TcpChurn,
            Proto::WebSocket,
        ] {
            assert_eq!(p.name().parse::<Proto>().unwrap(), p);
        }
        assert!("http3"
            .parse::<Proto>()
            .unwrap_err()
            .to_string()
            .contains("\"http3\""));
    }

    #[test]
    fn echo_protocols_need_bytes_and_no_http2() {
        assert!(Proto::Tcp.problems(false, 0)[0].contains("body size 0"));
        assert!(Proto::WebSocket.problems(true, 8)[0].contains("--http2"));
        assert!(Proto::Grpc.problems(false, 0).is_empty());
        assert!(!Proto::GrpcStream { messages: 0 }.problems(false, 0).is_empty());
    }
}
