//! The channel to mesh-control: TLS 1.3 over TCP, the server verified by its
//! chain to the mesh's trust anchors and by its exact SPIFFE ID, never by a
//! DNS name. Bootstrap and ServiceAccount tokens travel inside it, so there
//! is no plaintext mode.
//!
//! ```text
//!  ControlEndpoint { host:port, TrustAnchors, control SpiffeId }
//!     └─ channel(Endpoint settings) ─> tonic Channel over ControlConnector
//!          (TCP connect ─> rustls handshake, ALPN h2 ─> ExpectedServer verifier)
//!
//!  mesh-control side: control_server_config(watch of its own Credentials)
//!     (TLS 1.3, ALPN h2, no client certificate: callers prove who they are
//!      with the token inside the request)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{provider, CurrentCert};
use crate::verify::ExpectedServer;
use crate::{CredentialsWatch, SpiffeId, TlsError, TrustAnchors};

/// Namespace of mesh-control's default identity (`weft`, where the
/// control plane is installed).
pub const CONTROL_NAMESPACE: &str = "weft";
/// ServiceAccount of mesh-control's default identity.
pub const CONTROL_SERVICE_ACCOUNT: &str = "mesh-control";

/// HTTP/2 over TLS; gRPC needs nothing else.
const ALPN_H2: &[u8] = b"h2";

/// mesh-control's default SPIFFE ID in `trust_domain`:
/// `spiffe://<trust_domain>/ns/weft/sa/mesh-control` (as Linkerd names its
/// controllers by their ServiceAccount).
pub fn control_identity(trust_domain: &str) -> Result<SpiffeId, crate::SpiffeIdError> {
    SpiffeId::workload(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
}

/// A control-plane address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("control plane address {addr:?}: {reason}")]
pub struct ControlAddressError {
    /// The value given.
    pub addr: String,
    /// Why it cannot be used, and what to give instead.
    pub reason: String,
}

/// Where mesh-control is and how to recognise it.
#[derive(Clone)]
pub struct ControlEndpoint {
    host: String,
    port: u16,
    anchors: TrustAnchors,
    identity: SpiffeId,
}

impl std::fmt::Debug for ControlEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlEndpoint({}:{} as {})", self.host, self.port, self.identity)
    }
}

impl ControlEndpoint {
    /// `addr` is `host:port` (an IP address or a DNS name; the name is only
    /// used to connect, the server is verified by `identity`).
    pub fn new(addr: &str, anchors: TrustAnchors, identity: SpiffeId) -> Result<Self, ControlAddressError> {
        let (host, port) = parse_addr(addr)?;
        Ok(Self { host, port, anchors, identity })
    }

    /// The anchors the server, and every certificate it issues, must chain to.
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// The SPIFFE ID the server must present.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A tonic endpoint for this address; set timeouts and keepalive on it
    /// and hand it to [`Self::channel`]. Its `http://` URI only names the
    /// HTTP/2 `:authority`: the connector always speaks TLS.
    pub fn endpoint(&self) -> Endpoint {
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.addr())
            .path_and_query("/")
            .build()
            .expect("host and port were validated by ControlEndpoint::new");
        Endpoint::from(uri)
    }

    /// A lazily connected channel over TLS (reconnects by itself); the
    /// server must chain to the anchors and be exactly [`Self::identity`].
    pub fn channel(&self, endpoint: Endpoint) -> Result<Channel, TlsError> {
        let connector = ControlConnector {
            tls: TlsConnector::from(Arc::new(control_client_config(&self.anchors, self.identity.clone())?)),
            host: self.host.clone(),
            port: self.port,
        };
        Ok(endpoint.connect_with_connector_lazy(connector))
    }
}

fn parse_addr(addr: &str) -> Result<(String, u16), ControlAddressError> {
    let err = |reason: &str| ControlAddressError { addr: addr.to_owned(), reason: reason.to_owned() };
    if addr.contains("://") {
        return Err(err(
            "give host:port without a scheme (the control plane is always reached over TLS and \
             verified by its SPIFFE ID)",
        ));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| err("needs host and port, e.g. 127.0.0.1:8086"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| err("the port is not a number 1-65535"))?;
    if host.is_empty() || port == 0 || host.contains(['/', '@', ' ', '[', ']']) {
        return Err(err("needs host and port, e.g. 127.0.0.1:8086"));
    }
    Ok((host.to_owned(), port))
}

/// The client side: TLS 1.3, ALPN h2, no client certificate, the server
/// must chain to `anchors` with exactly the URI SAN `server`.
pub fn control_client_config(anchors: &TrustAnchors, server: SpiffeId) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = ExpectedServer { roots: anchors.roots(), expected: server, provider: Arc::clone(&provider) };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Protocol)?
        .dangerous() // a custom verifier: SPIFFE URI SAN instead of DNS names, still full chain validation
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// mesh-control's server side: TLS 1.3, ALPN h2, no client certificates,
/// presenting the latest certificate in `creds` (rotation needs no rebuild).
pub fn control_server_config(creds: CredentialsWatch) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Protocol)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CurrentCert(creds)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// TCP connect, then the TLS handshake; tonic bounds both with the
/// endpoint's connect timeout.
#[derive(Clone)]
struct ControlConnector {
    tls: TlsConnector,
    host: String,
    port: u16,
}

impl Service<Uri> for ControlConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (tls, host, port) = (self.tls.clone(), self.host.clone(), self.port);
        Box::pin(async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // The verifier ignores the name; an IP address sends no SNI.
            let name = ServerName::try_from(host.clone())
                .unwrap_or_else(|_| ServerName::try_from("mesh-control").expect("a valid DNS name"));
            let tls = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_port_only() {
        assert_eq!(parse_addr("127.0.0.1:8086").unwrap(), ("127.0.0.1".to_owned(), 8086));
        assert_eq!(parse_addr("mesh-control.weft.svc:8086").unwrap(), ("mesh-control.weft.svc".to_owned(), 8086));
        assert_eq!(parse_addr("[::1]:8086").unwrap(), ("::1".to_owned(), 8086));
        for bad in ["http://127.0.0.1:8086", "https://a:1", "127.0.0.1", ":8086", "a:0", "a:x", "a b:1"] {
            let e = parse_addr(bad).unwrap_err();
            assert_eq!(e.addr, bad);
        }
        assert!(parse_addr("http://127.0.0.1:8086").unwrap_err().to_string().contains("without a scheme"));
    }

    #[test]
    fn default_identity_names_the_control_service_account() {
        assert_eq!(control_identity("cluster.local").unwrap().as_str(), "spiffe://cluster.local/ns/weft/sa/mesh-control");
    }
}
