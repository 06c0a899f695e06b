//! Per-connection TCP metrics for every connection a listener accepts
//! (HTTP ones included): opened and closed by peer and TLS, bytes each
//! way on the downstream side, and how long the connection lived.
//!
//! A connection gets a [`ConnMeter`] at accept; its IO is wrapped in
//! [`CountingIo`] once detection is done (the bytes detection read are
//! added then). Its labels are known later (the client's identity after
//! the mTLS handshake, an outbound relay's server identity after the
//! dial), so bytes counted before [`ConnMeter::identify`] wait in the meter
//! and are added then; a connection never identified closes as
//! `peer="none",tls="plaintext"`.

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc, Mutex, OnceLock,
    },
    task::{Context, Poll},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    caps::{Common, Interned, MAX_PEERS},
    histogram::AtomicHistogram,
    Direction,
};

/// Upper bounds (seconds) of `weft_tcp_connection_duration_seconds`.
pub const CONNECTION_DURATION_BUCKETS_SECONDS: [f64; 8] = [0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0];

/// How a connection ended, as the `error` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseError {
    /// Clean close (empty label).
    None = 0,
    /// Reset or broken pipe.
    Reset = 1,
    /// A timeout (idle relay, handshake, header read).
    Timeout = 2,
    /// Any other IO or protocol error.
    Io = 3,
}

impl CloseError {
    const ALL: [CloseError; 4] = [CloseError::None, CloseError::Reset, CloseError::Timeout, CloseError::Io];

    fn as_label(self) -> &'static str {
        match self {
            CloseError::None => "",
            CloseError::Reset => "reset",
            CloseError::Timeout => "timeout",
            CloseError::Io => "io",
        }
    }

    /// The reason of an IO error.
    pub fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => CloseError::Reset,
            io::ErrorKind::TimedOut => CloseError::Timeout,
            _ => CloseError::Io,
        }
    }

    /// The reason of any error: the first IO error in its chain, else a
    /// timeout by its words, else `io`.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<io::Error>() {
                return Self::of_io(io);
            }
            if let Some(h) = err.downcast_ref::<hyper::Error>() {
                if h.is_timeout() {
                    return CloseError::Timeout;
                }
            }
            cur = err.source();
        }
        CloseError::Io
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    direction: &'static str,
    peer: Arc<str>,
    tls: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    direction: &'static str,
    peer: Arc<str>,
    tls: &'static str,
    error: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    direction: &'static str,
    tls: &'static str,
}

#[derive(Debug)]
struct Families {
    opened: Family<ConnLabels, Counter>,
    closed: Family<CloseLabels, Counter>,
    read: Family<ConnLabels, Counter>,
    write: Family<ConnLabels, Counter>,
    duration: Family<DurationLabels, AtomicHistogram>,
    common: Common,
}

fn duration_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&CONNECTION_DURATION_BUCKETS_SECONDS)
}

/// Registers the TCP families; returns (outbound, inbound).
pub(crate) fn register(registry: &mut Registry) -> (Arc<TcpMetrics>, Arc<TcpMetrics>) {
    let families = Arc::new(Families {
        opened: Family::default(),
        closed: Family::default(),
        read: Family::default(),
        write: Family::default(),
        duration: Family::new_with_constructor(duration_histogram as fn() -> AtomicHistogram),
        common: Common::default(),
    });
    registry.register(
        "weft_tcp_connections_opened",
        "Connections accepted (HTTP and opaque), by direction, peer (inbound: the client's mTLS identity; \
         outbound relays: the server identity dialed; none: no mesh identity) and tls (inbound: the \
         downstream connection; outbound relays: the upstream one)",
        families.opened.clone(),
    );
    registry.register(
        "weft_tcp_connections_closed",
        "Connections closed, by error (empty: clean; reset, timeout, io)",
        families.closed.clone(),
    );
    registry.register(
        "weft_tcp_read_bytes",
        "Bytes read from the downstream side of connections (TLS records included for mTLS)",
        families.read.clone(),
    );
    registry.register(
        "weft_tcp_write_bytes",
        "Bytes written to the downstream side of connections (TLS records included for mTLS)",
        families.write.clone(),
    );
    registry.register(
        "weft_tcp_connection_duration_seconds",
        "How long closed connections were open",
        families.duration.clone(),
    );
    let make = |direction: Direction| {
        Arc::new(TcpMetrics {
            direction,
            peers: Interned::new(MAX_PEERS, Arc::clone(&families.common.other)),
            handles: Mutex::default(),
            families: Arc::clone(&families),
        })
    };
    (make(Direction::Outbound), make(Direction::Inbound))
}

/// One direction's TCP metrics.
#[derive(Debug)]
pub struct TcpMetrics {
    direction: Direction,
    families: Arc<Families>,
    peers: Interned,
    handles: Mutex<HashMap<(Arc<str>, bool), Arc<ConnHandle>>>,
}

impl TcpMetrics {
    /// A connection accepted now.
    pub fn accept(self: &Arc<Self>) -> Arc<ConnMeter> {
        Arc::new(ConnMeter {
            metrics: Arc::clone(self),
            opened_at: Instant::now(),
            handle: OnceLock::new(),
            pending_read: AtomicU64::new(0),
            pending_write: AtomicU64::new(0),
            error: AtomicU8::new(CloseError::None as u8),
        })
    }

    fn handle(&self, peer: Option<&str>, tls: bool) -> Arc<ConnHandle> {
        let peer = match peer {
            Some(p) => self.peers.get(p),
            None => Arc::clone(&self.families.common.no_peer),
        };
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let key = (peer, tls);
        if let Some(h) = handles.get(&key) {
            return Arc::clone(h);
        }
        let f = &self.families;
        let labels = ConnLabels { direction: self.direction.as_str(), peer: Arc::clone(&key.0), tls: tls_label(tls) };
        let handle = Arc::new(ConnHandle {
            opened: f.opened.get_or_create(&labels).clone(),
            read: f.read.get_or_create(&labels).clone(),
            write: f.write.get_or_create(&labels).clone(),
            closed: CloseError::ALL.map(|e| {
                f.closed
                    .get_or_create(&CloseLabels {
                        direction: labels.direction,
                        peer: Arc::clone(&labels.peer),
                        tls: labels.tls,
                        error: e.as_label(),
                    })
                    .clone()
            }),
            duration: f.duration.get_or_create(&DurationLabels { direction: labels.direction, tls: labels.tls }).clone(),
        });
        handles.insert(key, Arc::clone(&handle));
        handle
    }
}

fn tls_label(tls: bool) -> &'static str {
    if tls {
        "mtls"
    } else {
        "plaintext"
    }
}

#[derive(Debug)]
struct ConnHandle {
    opened: Counter,
    read: Counter,
    write: Counter,
    closed: [Counter; CloseError::ALL.len()],
    duration: AtomicHistogram,
}

/// One accepted connection's metrics; counted closed when the last
/// reference (the IO wrapper, the connection's task) goes.
#[derive(Debug)]
pub struct ConnMeter {
    metrics: Arc<TcpMetrics>,
    opened_at: Instant,
    handle: OnceLock<Arc<ConnHandle>>,
    pending_read: AtomicU64,
    pending_write: AtomicU64,
    error: AtomicU8,
}

impl ConnMeter {
    /// Labels the connection (once; later calls are ignored): `peer` its
    /// mesh identity, `tls` whether that leg is mTLS. Counts it opened.
    pub fn identify(&self, peer: Option<&str>, tls: bool) {
        if self.handle.get().is_some() {
            return;
        }
        let handle = self.metrics.handle(peer, tls);
        if self.handle.set(Arc::clone(&handle)).is_ok() {
            handle.opened.inc();
            handle.read.inc_by(self.pending_read.swap(0, Ordering::Relaxed));
            handle.write.inc_by(self.pending_write.swap(0, Ordering::Relaxed));
        }
    }

    /// Whether [`Self::identify`] was called.
    pub fn identified(&self) -> bool {
        self.handle.get().is_some()
    }

    /// Records why the connection ended (the last call wins).
    pub fn failed(&self, error: CloseError) {
        self.error.store(error as u8, Ordering::Relaxed);
    }

    /// `n` bytes read from the downstream side.
    #[inline]
    pub fn read(&self, n: u64) {
        match self.handle.get() {
            Some(h) => {
                h.read.inc_by(n);
            }
            None => {
                self.pending_read.fetch_add(n, Ordering::Relaxed);
                // Raced with identify: move what it may have missed.
                if let Some(h) = self.handle.get() {
                    h.read.inc_by(self.pending_read.swap(0, Ordering::Relaxed));
                }
            }
        };
    }

    /// `n` bytes written to the downstream side.
    #[inline]
    pub fn wrote(&self, n: u64) {
        match self.handle.get() {
            Some(h) => {
                h.write.inc_by(n);
            }
            None => {
                self.pending_write.fetch_add(n, Ordering::Relaxed);
                if let Some(h) = self.handle.get() {
                    h.write.inc_by(self.pending_write.swap(0, Ordering::Relaxed));
                }
            }
        };
    }
}

impl Drop for ConnMeter {
    fn drop(&mut self) {
        self.identify(None, false);
        let Some(h) = self.handle.get() else { return };
        let error = CloseError::ALL[usize::from(self.error.load(Ordering::Relaxed)) % CloseError::ALL.len()];
        h.closed[error as usize].inc();
        h.duration.observe(self.opened_at.elapsed());
    }
}

/// An IO that counts its bytes into a [`ConnMeter`].
#[derive(Debug)]
pub struct CountingIo<I> {
    io: I,
    meter: Arc<ConnMeter>,
}

impl<I> CountingIo<I> {
    /// `io`, whose first `already_read` bytes were read before it was
    /// wrapped (protocol detection).
    pub fn new(io: I, meter: Arc<ConnMeter>, already_read: usize) -> Self {
        meter.read(already_read as u64);
        Self { io, meter }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &I {
        &self.io
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CountingIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.meter.read(n as u64);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CountingIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.meter.wrote(*n as u64);
        }
        polled
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            this.meter.wrote(*n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_before_and_after_identify_are_counted_once() {
        let mut r = Registry::default();
        let (_, inbound) = register(&mut r);
        let (a, mut b) = tokio::io::duplex(64);
        let meter = inbound.accept();
        let mut io = CountingIo::new(a, Arc::clone(&meter), 3);
        b.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.unwrap();
        meter.identify(Some("spiffe://td/ns/a/sa/c"), true);
        io.write_all(b"0123456789").await.unwrap();
        meter.failed(CloseError::Reset);
        drop(io);
        drop(meter);
        let mut t = String::new();
        prometheus_client::encoding::text::encode(&mut t, &r).unwrap();
        let l = r#"direction="inbound",peer="spiffe://td/ns/a/sa/c",tls="mtls""#;
        for line in [
            format!("weft_tcp_connections_opened_total{{{l}}} 1"),
            format!("weft_tcp_read_bytes_total{{{l}}} 8"),
            format!("weft_tcp_write_bytes_total{{{l}}} 10"),
            format!(r#"weft_tcp_connections_closed_total{{{l},error="reset"}} 1"#),
            format!(r#"weft_tcp_connections_closed_total{{{l},error=""}} 0"#),
            r#"weft_tcp_connection_duration_seconds_count{direction="inbound",tls="mtls"} 1"#.to_owned(),
        ] {
            assert!(t.contains(&line), "missing {line} in\n{t}");
        }
    }
}
