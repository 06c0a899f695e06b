//! Inbound protocol detection (mesh-proxy `detect`): the classifier on
//! every prefix of the input, and `detect` reading the input from a stream
//! in pieces; the bytes it hands on must be exactly what it read.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mesh_proxy::tcp::detect::{classify, detect, Detected, PrefixedIo, Protocol};
use tokio::io::AsyncReadExt;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_LINE: usize = 8192;

fuzz_target!(|data: &[u8]| {
    // Once decided, more bytes never change the decision the proxy acted on
    // for TLS and HTTP/2 (decided from the first bytes alone).
    for n in 1..=data.len().min(64) {
        match classify(&data[..n], MAX_LINE) {
            Some(Protocol::Tls) => assert_eq!(data[0], 0x16),
            Some(Protocol::Http2) => assert!(data[..n].starts_with(PREFACE)),
            Some(Protocol::Http1) => assert!(data[..n].contains(&b'\n')),
            Some(Protocol::Opaque) | None => {}
        }
    }
    let _ = classify(data, MAX_LINE);
    let _ = classify(data, 1);

    // The stream detection, reading the input in small pieces.
    let rt = weft_fuzz::runtime();
    rt.block_on(async {
        let chunk = usize::from(data.first().copied().unwrap_or(1)).clamp(1, 64);
        let reader = tokio_test_reader(data, chunk);
        let mut io = reader;
        match detect(&mut io, Duration::from_secs(1), Duration::from_secs(5), MAX_LINE).await {
            Ok(Detected::Protocol(p, prefix)) => {
                assert!(data.starts_with(&prefix), "detect handed on bytes it did not read");
                if p == Protocol::Http2 {
                    assert!(prefix.starts_with(PREFACE));
                }
                let mut all = Vec::new();
                PrefixedIo::new(prefix, io).read_to_end(&mut all).await.unwrap();
                assert_eq!(all, data, "the prefixed stream must give back every byte once");
            }
            Ok(Detected::Nothing) => assert!(data.is_empty()),
            Ok(Detected::Silent) => panic!("an input that ends is never silent"),
            Err(e) => panic!("reading from memory failed: {e}"),
        }
    });
});

/// `data` as a stream that yields at most `chunk` bytes per read.
fn tokio_test_reader(data: &[u8], chunk: usize) -> impl tokio::io::AsyncRead + Unpin + '_ {
    Chunked { data, chunk }
}

struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        std::task::Poll::Ready(Ok(()))
    }
}
