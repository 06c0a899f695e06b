//! Rotation and outages: the certifier renews at 70 % of a short lifetime,
//! established connections survive rotation, new ones use the new
//! certificate; with mesh-control down it keeps its certificate and retries,
//! and re-certifies once mesh-control is back.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mesh_identity::{client_config, server_config};
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::{FromDer, X509Certificate};

fn serial_of(der: &[u8]) -> Vec<u8> {
    X509Certificate::from_der(der).unwrap().1.raw_serial().to_vec()
}

/// Echo server that reports, per connection, the serial of the client
/// certificate it verified.
async fn echo_server(config: rustls::ServerConfig) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let _ = tx.send(serial_of(&tls.get_ref().1.peer_certificates().unwrap()[0]));
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn round_trip<S: AsyncReadExt + AsyncWriteExt + Unpin>(tls: &mut S, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(patience(), tls.read_exact(&mut buf)).await.expect("echo").unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn rotates_twice_old_connections_live_on_new_ones_use_new_cert() {
    let fx = Fixture::new();
    let (server_id, client_id) = (workload("server"), workload("client"));
    fx.write_tokens(&[&server_id, &client_id]);
    let cp = fx.start("127.0.0.1:0", "4s").await;
    let anchors = fx.anchors();
    let server = certifier(cp.endpoint(), &server_id);
    let client = certifier(cp.endpoint(), &client_id);
    let first = tokio::time::timeout(patience(), client.ready()).await.unwrap();
    tokio::time::timeout(patience(), server.ready()).await.unwrap();
    let started = Instant::now();

    let (addr, mut serials) = echo_server(server_config(&anchors, server.watch()).unwrap()).await;
    let connector = TlsConnector::from(Arc::new(client_config(&anchors, client.watch(), server_id.clone()).unwrap()));
    let name = ServerName::IpAddress(addr.ip().into());
    let mut old = connector.connect(name.clone(), TcpStream::connect(addr).await.unwrap()).await.unwrap();
    round_trip(&mut old, b"before\n").await;
    assert_eq!(serials.recv().await.unwrap(), first.serial());

    // Watch the client's certificates change: at least two rotations.
    let mut watch = client.watch();
    let mut seen = vec![first.serial().to_vec()];
    let deadline = tokio::time::Instant::now() + patience();
    while seen.len() < 3 {
        tokio::time::timeout_at(deadline, watch.changed()).await.expect("certifier did not rotate twice in time").unwrap();
        let serial = watch.borrow_and_update().as_ref().unwrap().serial().to_vec();
        if seen.last() != Some(&serial) {
            seen.push(serial);
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(12), "two rotations took {elapsed:?} with a 4s lifetime");
    assert_eq!(seen.iter().collect::<std::collections::HashSet<_>>().len(), 3, "serials differ: {seen:?}");

    // The connection made with the first (now expired) certificate still works.
    round_trip(&mut old, b"after rotation\n").await;
    // A new connection presents the current certificate.
    let mut new = connector.connect(name, TcpStream::connect(addr).await.unwrap()).await.unwrap();
    round_trip(&mut new, b"new\n").await;
    let new_serial = serials.recv().await.unwrap();
    assert_ne!(new_serial, first.serial());
    assert!(seen[1..].contains(&new_serial) || client.current().unwrap().serial() == new_serial.as_slice());
    drop(cp);
}

#[tokio::test]
async fn keeps_cert_and_retries_while_control_plane_is_down() {
    let fx = Fixture::new();
    let web = workload("web");
    fx.write_tokens(&[&web]);
    let cp = fx.start("127.0.0.1:0", "3s").await;
    let addr = cp.addr;
    let certifier = certifier(cp.endpoint(), &web);
    let first = tokio::time::timeout(patience(), certifier.ready()).await.unwrap();
    assert!(cp.stop().await.success());

    // Stand in for mesh-control on its port, counting connection attempts
    // and closing each: every retry shows up as one accept.
    let listener = TcpListener::bind(addr).await.unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let stand_in = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    eventually("certifier retries at least 3 times", || {
        let n = attempts.load(Ordering::SeqCst);
        async move { (n >= 3).then_some(()) }
    })
    .await;
    let current = certifier.current().expect("still has a certificate");
    assert_eq!(current.serial(), first.serial(), "kept the current certificate");
    assert!(certifier.is_ready());
    stand_in.abort();
    let _ = stand_in.await;

    // mesh-control back on the same address: the certifier re-certifies.
    let cp = fx.start(&addr.to_string(), "1h").await;
    let renewed = eventually("certifier re-certifies after the restart", || {
        let current = certifier.current();
        let first = first.serial().to_vec();
        async move { current.filter(|c| c.serial() != first.as_slice()) }
    })
    .await;
    assert_eq!(renewed.identity(), &web);
    assert!(renewed.not_after() > first.not_after());
    assert!(cp.stop().await.success());
}
