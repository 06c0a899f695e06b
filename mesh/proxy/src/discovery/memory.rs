//! An in-memory source: values are set by the owner (tests, embedders) and
//! watched by the proxy exactly like the gRPC source's.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

use super::{DestinationSource, EndpointSet, InboundWatch, OutboundWatch, PolicySource, Resolution};
use crate::discovery::policy::{InboundPolicy, OutboundPolicy};

type Slots<K, V> = Mutex<HashMap<K, watch::Sender<Option<Arc<V>>>>>;

/// Endpoint sets and policies held in memory.
#[derive(Debug, Default)]
pub struct MemorySource {
    destinations: Slots<String, EndpointSet>,
    outbound: Slots<String, OutboundPolicy>,
    inbound: Slots<u16, InboundPolicy>,
}

fn slot<K: std::hash::Hash + Eq, V>(slots: &Slots<K, V>, key: K) -> watch::Sender<Option<Arc<V>>> {
    let mut map = slots.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key).or_insert_with(|| watch::Sender::new(None)).clone()
}

impl MemorySource {
    /// An empty source: every watch starts (and stays) unknown until set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the endpoints of `authority`.
    pub fn set_endpoints(&self, authority: &str, set: EndpointSet) {
        slot(&self.destinations, authority.to_owned()).send_replace(Some(Arc::new(set)));
    }

    /// Replaces the outbound policy of `authority`.
    pub fn set_outbound(&self, authority: &str, policy: OutboundPolicy) {
        slot(&self.outbound, authority.to_owned()).send_replace(Some(Arc::new(policy)));
    }

    /// Which of `authority`'s values (endpoints, outbound policy) somebody
    /// watches: what the gRPC source would keep a stream open for.
    pub fn watched(&self, authority: &str) -> (bool, bool) {
        fn held<V>(slots: &Slots<String, V>, authority: &str) -> bool {
            slots.lock().unwrap_or_else(|e| e.into_inner()).get(authority).is_some_and(|tx| tx.receiver_count() > 0)
        }
        (held(&self.destinations, authority), held(&self.outbound, authority))
    }

    /// Replaces the inbound policy of `port`.
    pub fn set_inbound(&self, port: u16, policy: InboundPolicy) {
        slot(&self.inbound, port).send_replace(Some(Arc::new(policy)));
    }
}

impl DestinationSource for MemorySource {
    fn resolve(&self, authority: &str) -> Resolution {
        slot(&self.destinations, authority.to_owned()).subscribe()
    }
}

impl PolicySource for MemorySource {
    fn outbound(&self, authority: &str) -> OutboundWatch {
        slot(&self.outbound, authority.to_owned()).subscribe()
    }

    fn inbound(&self, port: u16) -> InboundWatch {
        slot(&self.inbound, port).subscribe()
    }
}
