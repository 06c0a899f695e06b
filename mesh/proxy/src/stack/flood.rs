//! HTTP/2 control-frame floods (CVE-2019-9512 PING, -9515 SETTINGS, -9518
//! empty frames, -9513 PRIORITY): frames that carry no request but cost
//! the proxy work, most an acknowledgement to write. The h2 crate answers
//! every one and only stops reading once the client leaves the answers
//! unread and the socket buffers are full, hundreds of thousands of frames
//! later, all of it CPU taken from the other connections. Like Envoy's
//! flood protections, each connection gets a budget per kind ([`Flood`]);
//! past it the proxy sends GOAWAY ENHANCE_YOUR_CALM and closes, counted in
//! `weft_h2_flood_closes_total{frame}`. (Rapid reset and CONTINUATION
//! floods are the h2 crate's own limits: see `http::server::http_builder`.)
//!
//! [`FloodIo`] follows the frames in the bytes the connection reads by
//! their 9-byte headers only (payloads are skipped, an HTTP/1 connection is
//! let go at its first byte), and the frames it writes, so that its GOAWAY
//! goes out between two of the h2 crate's frames, never inside one.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};
use tracing::warn;

pub use crate::metrics::H2Flood as Flood;

/// The window each kind's budget is counted over.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How long a connection closed for a flood may take to get its GOAWAY out
/// (a client that reads nothing leaves it in full socket buffers).
pub const GOAWAY_GRACE: Duration = Duration::from_secs(2);

/// Frames of `kind` one connection may send per [`WINDOW`]. Far above what
/// a client needs: hyper's BDP probing sends a few dozen PINGs while a
/// connection's window grows, keep-alive one per interval, SETTINGS come
/// once or twice, an empty DATA frame without END_STREAM does nothing.
pub fn budget(kind: Flood) -> u32 {
    match kind {
        Flood::Ping | Flood::Settings | Flood::EmptyData => 100,
        // Browsers re-prioritise streams as pages load (Envoy: 100 per stream).
        Flood::Priority => 1000,
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// What the connection is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// This many bytes of the h2 preface matched so far.
    Preface(usize),
    /// HTTP/2: frames are followed.
    H2,
    /// Not HTTP/2: nothing to follow.
    Off,
}

/// Where a stream of frames is: inside a 9-byte header, or skipping a payload.
#[derive(Debug, Default)]
struct Frames {
    head: [u8; 9],
    have: usize,
    skip: usize,
}

impl Frames {
    /// Follows `bytes`; calls `on_head` with each complete frame header and
    /// the offset in `bytes` where that frame began (0: in an earlier
    /// chunk). Returns that offset when `on_head` says stop.
    fn walk(&mut self, bytes: &[u8], mut on_head: impl FnMut(&[u8; 9]) -> bool) -> Option<usize> {
        let mut pos = 0;
        while pos < bytes.len() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() - pos);
                self.skip -= n;
                pos += n;
                continue;
            }
            let start = if self.have == 0 { pos } else { 0 };
            let n = (9 - self.have).min(bytes.len() - pos);
            self.head[self.have..self.have + n].copy_from_slice(&bytes[pos..pos + n]);
            self.have += n;
            pos += n;
            if self.have == 9 {
                self.have = 0;
                self.skip = usize::from(self.head[0]) << 16 | usize::from(self.head[1]) << 8 | usize::from(self.head[2]);
                if on_head(&self.head) {
                    return Some(start);
                }
            }
        }
        None
    }

    /// Bytes until the current frame ends (0: between two frames). Inside
    /// a header, the header's rest (its payload's length is not known yet).
    fn to_boundary(&self) -> usize {
        if self.have > 0 {
            9 - self.have
        } else {
            self.skip
        }
    }
}

/// One kind's spending in the current window.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    frames: u32,
    since: Option<Instant>,
}

impl Spent {
    /// Counts a frame; `false` past the budget within the window. The clock
    /// is read when a window starts and when its budget runs out, not per frame.
    fn spend(&mut self, budget: u32) -> bool {
        self.frames += 1;
        if self.frames == 1 {
            self.since = Some(Instant::now());
        }
        if self.frames <= budget {
            return true;
        }
        let now = Instant::now();
        if self.since.is_some_and(|s| now.duration_since(s) < WINDOW) {
            return false;
        }
        *self = Spent { frames: 1, since: Some(now) };
        true
    }
}

/// The GOAWAY being written after a flood.
#[derive(Debug)]
struct Closing {
    frame: Vec<u8>,
    written: usize,
    kind: Flood,
}

/// Shared with the connection's driver: resolves when a flood closed it.
#[derive(Debug, Default)]
pub struct Flooded {
    notify: Notify,
}

impl Flooded {
    /// Resolves [`GOAWAY_GRACE`] after the connection was found flooding:
    /// by then it is closed, or its client reads nothing and it is dropped.
    pub async fn past_grace(&self) {
        self.notify.notified().await;
        tokio::time::sleep(GOAWAY_GRACE).await;
    }
}

/// A downstream connection's IO with HTTP/2 control frames counted (see
/// the module doc). Reads and writes pass through unchanged until a budget
/// runs out; then the reader gets the frames before the offending one, the
/// writer's current frame is finished, GOAWAY ENHANCE_YOUR_CALM is sent,
/// the write side shut down, and both sides fail from then on.
#[derive(Debug)]
pub struct FloodIo<I> {
    inner: I,
    mode: Mode,
    read: Frames,
    write: Frames,
    spent: [Spent; Flood::ALL.len()],
    /// Highest stream a request was opened on: GOAWAY's last stream id.
    last_stream: u32,
    closing: Option<Closing>,
    flooded: Arc<Flooded>,
}

impl<I> FloodIo<I> {
    /// Wraps `inner`; the [`Flooded`] tells the driver when to give up.
    pub fn new(inner: I) -> (Self, Arc<Flooded>) {
        let flooded = Arc::new(Flooded::default());
        let io = Self {
            inner,
            mode: Mode::Preface(0),
            read: Frames::default(),
            write: Frames::default(),
            spent: [Spent::default(); Flood::ALL.len()],
            last_stream: 0,
            closing: None,
            flooded: Arc::clone(&flooded),
        };
        (io, flooded)
    }

    /// Follows bytes read; the offset of a frame over budget, and its kind.
    fn follow_read(&mut self, mut bytes: &[u8]) -> Option<(usize, Flood)> {
        let mut offset = 0;
        if let Mode::Preface(matched) = self.mode {
            let n = (PREFACE.len() - matched).min(bytes.len());
            if bytes[..n] != PREFACE[matched..matched + n] {
                self.mode = Mode::Off;
                return None;
            }
            self.mode = if matched + n == PREFACE.len() { Mode::H2 } else { Mode::Preface(matched + n) };
            bytes = &bytes[n..];
            offset = n;
        }
        if self.mode != Mode::H2 {
            return None;
        }
        let (spent, last_stream) = (&mut self.spent, &mut self.last_stream);
        let mut over = None;
        let at = self.read.walk(bytes, |head| {
            let (len, kind, flags) = (head[2] as usize | (head[1] as usize) << 8 | (head[0] as usize) << 16, head[3], head[4]);
            let flood = match kind {
                PING if flags & ACK == 0 => Flood::Ping,
                SETTINGS if flags & ACK == 0 => Flood::Settings,
                DATA if len == 0 && flags & END_STREAM == 0 => Flood::EmptyData,
                PRIORITY => Flood::Priority,
                HEADERS => {
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    *last_stream = (*last_stream).max(stream);
                    return false;
                }
                _ => return false,
            };
            let ok = spent[flood as usize].spend(budget(flood));
            if !ok {
                over = Some(flood);
            }
            !ok
        });
        Some((offset + at?, over?))
    }

    fn trip(&mut self, kind: Flood) {
        warn!(
            "closing an HTTP/2 connection: more than {} {} frames within {}s (a flood); GOAWAY ENHANCE_YOUR_CALM",
            budget(kind),
            kind.frame_name(),
            WINDOW.as_secs()
        );
        kind.record();
        let debug = format!("too many {} frames", kind.frame_name());
        let len = 8 + debug.len();
        let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, GOAWAY, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&self.last_stream.to_be_bytes());
        frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        frame.extend_from_slice(debug.as_bytes());
        self.closing = Some(Closing { frame, written: 0, kind });
        self.flooded.notify.notify_one();
    }
}

impl<I: AsyncWrite + Unpin> FloodIo<I> {
    /// Once the h2 crate's current frame is out: GOAWAY, flush, shut down
    /// the write side; then the error both sides return from now on.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(closing) = self.closing.as_mut() else { unreachable!("called once tripped") };
        while closing.written < closing.frame.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &closing.frame[closing.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => closing.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(e),
                Poll::Pending => return Poll::Pending,
            }
        }
        if let Err(e) = std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx)) {
            return Poll::Ready(e);
        }
        let _ = std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        let kind = closing.kind.frame_name();
        Poll::Ready(io::Error::new(io::ErrorKind::ConnectionAborted, format!("HTTP/2 {kind} flood: sent GOAWAY ENHANCE_YOUR_CALM")))
    }

    /// Writes `buf` (or the part up to the end of the current frame, once
    /// tripped) and follows the frames written.
    fn write_frames(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let buf = match (&self.closing, self.write.to_boundary()) {
            (Some(_), 0) => return self.poll_goaway(cx).map(Err),
            (Some(_), left) => &buf[..left.min(buf.len())],
            (None, _) => buf,
        };
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        if self.mode != Mode::Off {
            self.write.walk(&buf[..n], |_| false);
        }
        Poll::Ready(Ok(n))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for FloodIo<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closing.is_some() {
            // The h2 crate finishes its frame from its own write path.
            if this.write.to_boundary() > 0 {
                return Poll::Pending;
            }
            return this.poll_goaway(cx).map(Err);
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.mode == Mode::Off {
            return Poll::Ready(Ok(()));
        }
        let Some((at, kind)) = this.follow_read(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        this.trip(kind);
        // The h2 crate gets the frames before the offending one, and nothing after.
        buf.set_filled(before + at);
        if at > 0 {
            return Poll::Ready(Ok(()));
        }
        if this.write.to_boundary() > 0 {
            return Poll::Pending;
        }
        this.poll_goaway(cx).map(Err)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FloodIo<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_frames(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.closing.is_some() || this.mode == Mode::Off {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return match this.mode {
                Mode::Off => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
                _ => this.write_frames(cx, first),
            };
        }
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.write.walk(&b[..k], |_| false);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closing.is_some() && this.write.to_boundary() == 0 {
            return this.poll_goaway(cx).map(Err);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closing.is_some() && this.write.to_boundary() == 0 {
            return this.poll_goaway(cx).map(|_| Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_are_followed_across_split_reads() {
        let (mut io, _) = FloodIo::new(tokio::io::empty());
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        bytes.extend(frame(HEADERS, 0x4, 7, b"abc"));
        bytes.extend(frame(DATA, 0, 7, &[1; 300]));
        for chunk in bytes.chunks(5) {
            assert_eq!(io.follow_read(chunk), None);
        }
        assert_eq!((io.mode, io.last_stream, io.read.to_boundary()), (Mode::H2, 7, 0));
        assert_eq!(io.spent[Flood::Settings as usize].frames, 1);
    }

    #[test]
    fn http1_is_let_go_at_once() {
        let (mut io, _) = FloodIo::new(tokio::io::empty());
        assert_eq!(io.follow_read(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(io.mode, Mode::Off);
    }

    #[test]
    fn the_frame_over_budget_is_found_and_acks_are_free() {
        let (mut io, _) = FloodIo::new(tokio::io::empty());
        let mut bytes = PREFACE.to_vec();
        for i in 0..budget(Flood::Ping) {
            bytes.extend(frame(PING, ACK, 0, &[0; 8]));
            bytes.extend(frame(PING, 0, 0, &u64::from(i).to_be_bytes()));
        }
        assert_eq!(io.follow_read(&bytes), None, "the budget itself is allowed; acknowledgements are not counted");
        let over = frame(PING, 0, 0, &[9; 8]);
        let mut more = frame(DATA, END_STREAM, 1, &[]);
        let at = more.len();
        more.extend(&over);
        assert_eq!(io.follow_read(&more), Some((at, Flood::Ping)));
    }

    #[tokio::test]
    async fn a_ping_flood_gets_goaway_enhance_your_calm_between_frames() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut io, flooded) = FloodIo::new(server);
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut flood = PREFACE.to_vec();
        for i in 0..=u64::from(budget(Flood::Ping)) {
            flood.extend(frame(PING, 0, 0, &i.to_be_bytes()));
        }
        wr.write_all(&flood).await.unwrap();
        // The server side is half-way through writing a frame when it trips.
        let ack = frame(PING, ACK, 0, &[0; 8]);
        io.write_all(&ack[..5]).await.unwrap();
        let mut got = vec![0u8; flood.len()];
        let mut n = 0;
        let err = loop {
            match io.read(&mut got[n..]).await {
                Ok(0) => panic!("EOF instead of the flood error"),
                Ok(k) => n += k,
                Err(e) => break e,
            }
            if n == flood.len() - 17 {
                // Everything before the offending PING arrived; the next
                // read waits for the frame being written to end.
                let next = tokio::time::timeout(Duration::from_millis(50), io.read(&mut got[n..])).await;
                assert!(next.is_err(), "no GOAWAY inside a frame");
                io.write_all(&ack[5..]).await.expect("the frame is finished");
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(n, flood.len() - 17, "the h2 crate never sees the frame over budget");
        assert!(io.write(b"more").await.is_err());
        let mut back = Vec::new();
        rd.read_to_end(&mut back).await.unwrap();
        assert_eq!(back[..ack.len()], ack[..]);
        let goaway = &back[ack.len()..];
        assert_eq!(goaway[3], GOAWAY);
        assert_eq!(&goaway[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
        assert_eq!(&goaway[17..], b"too many PING frames");
        tokio::time::timeout(Duration::from_secs(10), flooded.past_grace()).await.expect("the driver is told");
    }
}
