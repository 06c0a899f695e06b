//! Attacks by numbers: many idle connections, many distinct Hosts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::conn::{read_to_close, End, Target};
use super::Finding;
use record::hostile::Outcome;

/// Connections opened at once while ramping up.
const CONNECT_CONCURRENCY: usize = 256;

/// Open `n` TCP connections that never send a byte and hold them for
/// `window`: how many the proxy accepted, closed, and when.
pub async fn idle_connections(t: &Target, n: u32, window: Duration) -> Finding {
    let started = Instant::now();
    let deadline = started + window;
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("never closed");
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let conn = tokio::time::timeout(Duration::from_secs(5), t.connect_raw()).await;
            drop(permit);
            match conn {
                Ok(Ok(mut s)) => {
                    let (_, end) = read_to_close(&mut s, started, deadline).await;
                    Ok(end)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connect timed out after 5 s".to_owned()),
            }
        }));
    }
    let mut open = 0u32;
    let mut closed = 0u32;
    let mut last_close = Duration::ZERO;
    let mut failed: BTreeMap<String, u32> = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(Ok(End::Open)) => open += 1,
            Ok(Ok(End::Eof(d) | End::Reset(d))) => {
                closed += 1;
                last_close = last_close.max(d);
            }
            Ok(Err(e)) => *failed.entry(e).or_default() += 1,
            Err(e) => *failed.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let connected = open + closed;
    let mut detail = format!("{connected} of {n} connected; {closed} closed by the proxy, {open} still open after {:.0} s", window.as_secs_f64());
    for (why, count) in &failed {
        detail.push_str(&format!("; {count} failed: {why}"));
    }
    let outcome = match (connected, open) {
        (0, _) => Outcome::Error,
        (_, 0) => Outcome::Closed,
        _ => Outcome::Absorbed,
    };
    Finding {
        outcome,
        status: None,
        detail,
        closed_after: (open == 0 && closed > 0).then_some(last_close),
    }
}

/// Send `n` requests, each naming a different Host, through the discovering
/// outbound proxy (4 keep-alive connections, 16 in flight), within `limit`.
pub async fn distinct_hosts(t: &Target, n: u32, limit: Duration) -> Finding {
    let started = Instant::now();
    let deadline = started + limit;
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let t = t.clone();
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            let mut statuses: BTreeMap<String, u32> = BTreeMap::new();
            let mut sender = None;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline {
                    break;
                }
                if sender.is_none() {
                    sender = match connect_h1(&t).await {
                        Ok(s) => Some(s),
                        Err(e) => {
                            *statuses.entry(format!("connect: {e}")).or_default() += 1;
                            continue;
                        }
                    };
                }
                let host = format!("hostile-{i}.bench.svc.cluster.local");
                let req = http::Request::get("/hostile")
                    .header(http::header::HOST, &host)
                    .body(Empty::<Bytes>::new())
                    .expect("valid request");
                let s = sender.as_mut().expect("connected above");
                let key = match tokio::time::timeout_at(deadline, s.send_request(req)).await {
                    Ok(Ok(resp)) => {
                        let status = resp.status().as_u16().to_string();
                        let _ = resp.into_body().collect().await;
                        status
                    }
                    Ok(Err(e)) => {
                        sender = None;
                        format!("error: {e}")
                    }
                    Err(_) => {
                        sender = None;
                        "no answer".to_owned()
                    }
                };
                *statuses.entry(key).or_default() += 1;
            }
            statuses
        }));
    }
    let mut statuses: BTreeMap<String, u32> = BTreeMap::new();
    for w in workers {
        for (k, v) in w.await.unwrap_or_default() {
            *statuses.entry(k).or_default() += v;
        }
    }
    let answered: u32 = statuses.iter().filter(|(k, _)| k.parse::<u16>().is_ok()).map(|(_, v)| v).sum();
    let sent: u32 = statuses.values().sum();
    let list: Vec<String> = statuses.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    let detail = format!("{sent} of {n} Hosts sent in {:.1} s, answered: {}", started.elapsed().as_secs_f64(), list.join(", "));
    let outcome = match (sent, answered) {
        (0, _) => Outcome::Error,
        (s, a) if a == s && s == n => Outcome::Served,
        _ => Outcome::Hung,
    };
    Finding { outcome, status: None, detail, closed_after: None }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect_h1(t: &Target) -> Result<Sender, String> {
    let io = t.connect().await.map_err(|e| e.to_string())?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}
