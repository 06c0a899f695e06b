//! `weft.destination.v1.Destination` over tonic, generic over any
//! [`DiscoverDestination`]: turns a watched endpoint-set view into the
//! stream of full-set-then-deltas the proto promises.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};
use mesh_api::destination::v1 as api;
use mesh_api::destination::v1::destination_server::{Destination, DestinationServer};
use mesh_index::{DestinationView, DiscoverDestination, Endpoint, ProtocolHint};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::streams::OpenStreams;

/// The gRPC face of a [`DiscoverDestination`].
#[derive(Debug, Clone)]
pub struct DestinationService<D> {
    discover: D,
    closing: watch::Receiver<bool>,
    streams: OpenStreams,
}

impl<D: DiscoverDestination> DestinationService<D> {
    /// Streams end once `closing` turns true, so a graceful shutdown is not
    /// held up by watches that would otherwise never finish; `streams`
    /// counts them while open (a closed stream drops its watch).
    pub fn new(discover: D, closing: watch::Receiver<bool>, streams: OpenStreams) -> DestinationServer<Self> {
        DestinationServer::new(Self { discover, closing, streams })
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<api::Update, Status>> + Send>>;

#[tonic::async_trait]
impl<D: DiscoverDestination> Destination for DestinationService<D> {
    type GetStream = UpdateStream;

    async fn get(&self, request: Request<api::GetDestination>) -> Result<Response<Self::GetStream>, Status> {
        let api::GetDestination { authority, context_token } = request.into_inner();
        let rx = self.discover.watch_destination(&authority).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::debug!(%authority, %context_token, "Destination.Get");
        let mut open = self.streams.open(crate::metrics::METHODS[1]);
        Ok(Response::new(Box::pin(updates(rx, self.closing.clone()).map(move |u| {
            open.sent();
            u
        }))))
    }
}

struct State {
    rx: watch::Receiver<Arc<DestinationView>>,
    closing: watch::Receiver<bool>,
    /// What the client has been told; None before the first message.
    sent: Option<Arc<DestinationView>>,
    pending: VecDeque<api::Update>,
}

/// The first message is the whole current set; then one message per kind of
/// change (removes before adds, so a moved endpoint never appears twice).
pub fn updates(
    rx: watch::Receiver<Arc<DestinationView>>,
    closing: watch::Receiver<bool>,
) -> impl Stream<Item = Result<api::Update, Status>> + Send {
    let state = State { rx, closing, sent: None, pending: VecDeque::new() };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if *st.closing.borrow() {
                return None;
            }
            if let Some(update) = st.pending.pop_front() {
                return Some((Ok(update), st));
            }
            if st.sent.is_some() && !changed(&mut st.rx, &mut st.closing).await {
                return None; // shutting down, or the index is gone: the client reconnects
            }
            let view = st.rx.borrow_and_update().clone();
            st.pending = diff(st.sent.as_deref(), &view);
            st.sent = Some(view);
        }
    })
}

/// Waits for a change; false when the stream should end instead.
pub(crate) async fn changed<T>(rx: &mut watch::Receiver<T>, closing: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        changed = rx.changed() => changed.is_ok(),
        // An error here means the server is gone too.
        _ = closing.wait_for(|closing| *closing) => false,
    }
}

/// Messages that take a client from `old` (None: nothing yet) to `new`.
pub fn diff(old: Option<&DestinationView>, new: &DestinationView) -> VecDeque<api::Update> {
    use api::update::Update as U;
    let mut out = VecDeque::new();
    if new.endpoints.is_empty() {
        if old.is_none_or(|o| !o.endpoints.is_empty() || o.exists != new.exists) {
            out.push_back(api::Update { update: Some(U::NoEndpoints(api::NoEndpoints { exists: new.exists })) });
        }
        return out;
    }
    let empty = DestinationView::default();
    let old = old.unwrap_or(&empty);
    let removed: Vec<api::SocketAddr> =
        old.endpoints.keys().filter(|a| !new.endpoints.contains_key(a)).map(|a| socket_addr(*a)).collect();
    let added: Vec<api::Endpoint> =
        new.endpoints.iter().filter(|(a, e)| old.endpoints.get(a) != Some(e)).map(|(_, e)| endpoint(e)).collect();
    if !removed.is_empty() {
        out.push_back(api::Update { update: Some(U::Remove(api::Remove { addrs: removed })) });
    }
    if !added.is_empty() {
        out.push_back(api::Update { update: Some(U::Add(api::Add { endpoints: added })) });
    }
    out
}

pub fn socket_addr(addr: SocketAddr) -> api::SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    api::SocketAddr { ip, port: u32::from(addr.port()) }
}

fn endpoint(e: &Endpoint) -> api::Endpoint {
    api::Endpoint {
        addr: Some(socket_addr(e.addr)),
        weight: e.weight,
        identity: e.identity.clone().unwrap_or_default(),
        protocol_hint: match e.hint {
            ProtocolHint::Unknown => api::ProtocolHint::Unknown,
            ProtocolHint::H2 => api::ProtocolHint::H2,
            ProtocolHint::Opaque => api::ProtocolHint::Opaque,
        } as i32,
        labels: e.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::update::Update as U;
    use futures_util::StreamExt;
    use std::collections::BTreeMap;

    fn view(exists: bool, addrs: &[(&str, Option<&str>)]) -> DestinationView {
        DestinationView {
            exists,
            endpoints: addrs
                .iter()
                .map(|(a, id)| {
                    let addr: SocketAddr = a.parse().unwrap();
                    let e = Endpoint {
                        addr,
                        weight: 10_000,
                        identity: id.map(str::to_owned),
                        hint: if id.is_some() { ProtocolHint::H2 } else { ProtocolHint::Unknown },
                        labels: BTreeMap::new(),
                    };
                    (addr, e)
                })
                .collect(),
        }
    }

    fn kinds(updates: &VecDeque<api::Update>) -> Vec<String> {
        updates
            .iter()
            .map(|u| match u.update.as_ref().unwrap() {
                U::Add(a) => format!("add {}", a.endpoints.len()),
                U::Remove(r) => format!("remove {}", r.addrs.len()),
                U::NoEndpoints(n) => format!("none exists={}", n.exists),
            })
            .collect()
    }

    #[test]
    fn diffs() {
        let two = view(true, &[("10.0.0.1:80", None), ("10.0.0.2:80", None)]);
        assert_eq!(kinds(&diff(None, &two)), ["add 2"]);
        assert_eq!(kinds(&diff(None, &view(false, &[]))), ["none exists=false"]);
        assert_eq!(kinds(&diff(None, &view(true, &[]))), ["none exists=true"]);
        assert!(diff(Some(&two), &two).is_empty());
        let moved = view(true, &[("10.0.0.2:80", None), ("10.0.0.3:80", None)]);
        assert_eq!(kinds(&diff(Some(&two), &moved)), ["remove 1", "add 1"]);
        // New metadata for the same address is an Add (replace).
        let meshed = view(true, &[("10.0.0.1:80", Some("spiffe://td/ns/a/sa/b")), ("10.0.0.2:80", None)]);
        assert_eq!(kinds(&diff(Some(&two), &meshed)), ["add 1"]);
        assert_eq!(kinds(&diff(Some(&two), &view(true, &[]))), ["none exists=true"]);
        assert_eq!(kinds(&diff(Some(&view(true, &[])), &view(false, &[]))), ["none exists=false"]);
        assert!(diff(Some(&view(false, &[])), &view(false, &[])).is_empty());
    }

    #[tokio::test]
    async fn stream_starts_with_the_full_set_then_follows() {
        let (tx, rx) = watch::channel(Arc::new(view(true, &[("10.0.0.1:80", None)])));
        let (close, closing) = watch::channel(false);
        let mut s = Box::pin(updates(rx, closing.clone()));
        let first = s.next().await.unwrap().unwrap();
        assert!(matches!(first.update, Some(U::Add(ref a)) if a.endpoints.len() == 1));
        tx.send(Arc::new(view(true, &[("10.0.0.2:80", None)]))).unwrap();
        assert!(matches!(s.next().await.unwrap().unwrap().update, Some(U::Remove(_))));
        assert!(matches!(s.next().await.unwrap().unwrap().update, Some(U::Add(_))));
        drop(tx);
        assert!(s.next().await.is_none());

        // Shutting down ends a stream that is waiting for changes.
        let (_tx, rx) = watch::channel(Arc::new(view(true, &[("10.0.0.1:80", None)])));
        let mut s = Box::pin(updates(rx, closing));
        assert!(s.next().await.is_some());
        close.send(true).unwrap();
        assert!(s.next().await.is_none());
    }
}
