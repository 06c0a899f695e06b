//! Handshake-level attacks: a TCP connection that never speaks, a TLS
//! ClientHello and then silence, and plaintext HTTP on the mTLS port.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::conn::{classify, read_to_close, Mode, Target};
use super::{h1, Finding};

/// The first flight of a real TLS 1.3 client: a ClientHello with ALPN
/// `weft/1`, from the mesh client config when the target has one.
pub fn client_hello(t: &Target) -> Result<Vec<u8>, String> {
    let cfg = match &t.mode {
        Mode::Mtls(cfg) => Arc::clone(cfg),
        Mode::Plaintext => {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| format!("TLS client config: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"weft/1".to_vec()];
            Arc::new(cfg)
        }
    };
    let name = rustls::pki_types::ServerName::IpAddress(t.addr.ip().into());
    let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| format!("TLS client: {e}"))?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).map_err(|e| format!("write the ClientHello: {e}"))?;
    Ok(hello)
}

/// Connect, send `first` (maybe nothing), then stay silent until the proxy
/// closes or `window` passes.
pub async fn then_silence(t: &Target, first: &[u8], window: Duration) -> Finding {
    let started = Instant::now();
    let mut tcp = match t.connect_raw().await {
        Ok(s) => s,
        Err(e) => return Finding::error(format!("connect: {e}")),
    };
    if !first.is_empty() {
        if let Err(e) = tcp.write_all(first).await {
            return Finding::ended(classify(&e, started), b"");
        }
    }
    let (bytes, end) = read_to_close(&mut tcp, started, started + window).await;
    let mut f = h1::judge(&bytes, end);
    if f.outcome == record::hostile::Outcome::Refused && bytes.first() == Some(&0x16) {
        // A TLS record back (the ServerHello), not an HTTP status.
        f = Finding::ended(end, &bytes);
    }
    f.detail = match (f.detail.is_empty(), bytes.is_empty()) {
        (_, true) => f.detail,
        (true, false) => format!("{} bytes back first", bytes.len()),
        (false, false) => format!("{}; {} bytes back first", f.detail, bytes.len()),
    };
    f
}

/// Plaintext HTTP/1.1 straight to a listener that only takes mTLS.
pub async fn plaintext_on_mtls(t: &Target, window: Duration) -> Finding {
    let plain = Target { mode: Mode::Plaintext, ..t.clone() };
    let req = format!("GET /hostile HTTP/1.1\r\nHost: {}\r\n\r\n", t.authority);
    h1::exchange(&plain, req.as_bytes(), window).await
}
