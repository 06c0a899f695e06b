//! mTLS between a server and a client built by mesh-identity, each certified
//! by a real mesh-control: identities are exchanged and verified, and every
//! way of not belonging to the mesh is refused.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mesh_identity::{client_config, peer_identity, server_config, Credentials, SpiffeId, WorkloadKey, ALPN_WEFT};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType, SubjectPublicKeyInfo};
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// What the server saw for one connection.
type Accepted = Result<SpiffeId, String>;

/// A TLS echo server: for each connection, reports the peer identity (or the
/// handshake error) and echoes one line.
async fn echo_server(config: rustls::ServerConfig) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Accepted>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(patience(), acceptor.accept(tcp)).await {
                    Ok(Ok(mut tls)) => {
                        let (_, conn) = tls.get_ref();
                        assert_eq!(conn.alpn_protocol(), Some(ALPN_WEFT));
                        let peer = peer_identity(conn).expect("verified peer has a SPIFFE ID");
                        let _ = tx.send(Ok(peer));
                        let mut buf = vec![0u8; 64];
                        while let Ok(n) = tls.read(&mut buf).await {
                            if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                    Err(_) => {
                        let _ = tx.send(Err("handshake timed out".to_owned()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Connects, checks the echo, returns the server identity the client saw.
async fn connect(addr: std::net::SocketAddr, config: rustls::ClientConfig) -> Result<SpiffeId, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    // TLS 1.3: the server verifies the client certificate after the client
    // considers the handshake done; a refusal shows up on the first read.
    tls.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    assert_eq!(&buf, b"ping\n");
    Ok(peer_identity(tls.get_ref().1).expect("server has a SPIFFE ID"))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Accepted>) -> Accepted {
    tokio::time::timeout(patience(), rx.recv()).await.expect("server saw no connection").unwrap()
}

#[tokio::test]
async fn mutual_tls_with_spiffe_identities_and_refusals() {
    let fx = Fixture::new();
    let (server_id, client_id) = (workload("server"), workload("client"));
    fx.write_tokens(&[&server_id, &client_id]);
    let cp = fx.start("127.0.0.1:0", "1h").await;
    let anchors = fx.anchors();
    let server = certifier(cp.endpoint(), &server_id);
    let client = certifier(cp.endpoint(), &client_id);
    assert!(!client.is_ready() || client.current().is_some());
    tokio::time::timeout(patience(), async { tokio::join!(server.ready(), client.ready()) }).await.expect("certified");
    assert!(server.is_ready() && client.is_ready());

    let (addr, mut accepted) = echo_server(server_config(&anchors, server.watch()).unwrap()).await;

    // 1. Both meshed: each side sees the other's SPIFFE ID.
    let seen = connect(addr, client_config(&anchors, client.watch(), server_id.clone()).unwrap()).await;
    assert_eq!(seen, Ok(server_id.clone()));
    assert_eq!(next(&mut accepted).await, Ok(client_id.clone()));

    // 2. The client expects another identity: it refuses the server.
    let err = connect(addr, client_config(&anchors, client.watch(), workload("database")).unwrap()).await.unwrap_err();
    assert!(err.contains("expected spiffe://cluster.local/ns/default/sa/database"), "{err}");
    assert!(next(&mut accepted).await.is_err(), "server saw the client abort");

    // 3. A client certified under another trust anchor (another mesh-control,
    //    same trust domain name) is refused by the server.
    let other = Fixture::new();
    let intruder_id = workload("client");
    other.write_tokens(&[&intruder_id]);
    let other_cp = other.start("127.0.0.1:0", "1h").await;
    let intruder = certifier(other_cp.endpoint(), &intruder_id);
    tokio::time::timeout(patience(), intruder.ready()).await.expect("intruder certified by its own CA");
    let err = connect(addr, client_config(&anchors, intruder.watch(), server_id.clone()).unwrap()).await.unwrap_err();
    assert!(!err.is_empty());
    let server_err = next(&mut accepted).await.unwrap_err();
    // Both CAs use the same subject names, so webpki finds a candidate
    // issuer by name and then fails its signature.
    assert!(server_err.contains("BadSignature") || server_err.contains("UnknownIssuer"), "{server_err}");

    // 4. An expired certificate from the right issuer is refused.
    let expired = expired_credentials(&fx, &client_id);
    let (_tx, expired_watch) = watch::channel(Some(Arc::new(expired)));
    let err = connect(addr, client_config(&anchors, expired_watch, server_id.clone()).unwrap()).await.unwrap_err();
    assert!(!err.is_empty());
    let server_err = next(&mut accepted).await.unwrap_err();
    assert!(server_err.contains("certificate expired"), "{server_err}");

    // 5. Plaintext to the TLS port gets no application data back.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(patience(), tcp.read_to_end(&mut reply)).await.expect("server closes plaintext");
    assert!(!reply.windows(4).any(|w| w == b"HTTP"), "plaintext got an HTTP answer: {reply:?}");
    assert!(reply.len() < 16, "at most a TLS alert: {reply:?}");
    assert!(next(&mut accepted).await.is_err(), "server refuses plaintext");

    // The meshed client still works after all that.
    let seen = connect(addr, client_config(&anchors, client.watch(), server_id.clone()).unwrap()).await;
    assert_eq!(seen, Ok(server_id));
    assert_eq!(next(&mut accepted).await, Ok(client_id));
    drop(other_cp);
}

/// A leaf for `id` signed by `fx`'s real issuer, valid in the past only.
fn expired_credentials(fx: &Fixture, id: &SpiffeId) -> Credentials {
    let data = fx.data_dir();
    let issuer_pem = std::fs::read_to_string(data.join("issuer.pem")).unwrap();
    let issuer_key = KeyPair::from_pem(&std::fs::read_to_string(data.join("issuer-key.pem")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&issuer_pem, issuer_key).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.as_str().try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(7200);
    params.not_after = now - Duration::from_secs(3600);
    let spki = SubjectPublicKeyInfo::from_der(&key.public_key_der()).unwrap();
    let leaf = params.signed_by(&spki, &issuer).unwrap();
    let issuer_der = x509_parser::pem::parse_x509_pem(issuer_pem.as_bytes()).unwrap().1.contents;
    Credentials::new(&key, leaf.der().to_vec(), vec![issuer_der], Some(id)).unwrap()
}
