//! The bounds of the discovered state, with the in-memory source (no
//! network): the cap, the idle timeout, watches dropped with their entries,
//! entries in use kept, invalid authorities refused.

use bytes::Bytes;
use weft_testkit::eventually_async;

use super::*;
use crate::{
    discovery::memory::MemorySource,
    metrics::{Direction, Metrics},
};

fn bounded(src: &Arc<MemorySource>, max: usize, idle: Duration) -> (Arc<Outbound>, DiscoveryMetrics) {
    let metrics = Metrics::new();
    let gauges = metrics.discovery().clone();
    let o = Outbound::new(
        src.clone(),
        OutboundConfig {
            policy: Some(src.clone() as Arc<dyn PolicySource>),
            bounds: DiscoveryLimits { idle_timeout: idle, max_authorities: max },
            gauges: gauges.clone(),
            ..OutboundConfig::new(metrics.direction(Direction::Outbound).clone())
        },
    );
    (o, gauges)
}

async fn get(o: &Outbound, host: &str) -> Result<Response<ResponseBody>, ProxyError> {
    let req = Request::get("/").header("host", host).body(RequestBody::buffered(Bytes::new())).unwrap();
    o.send(req).await
}

/// Unknown to the control plane: answered at once (502), no sockets.
fn unknown(src: &MemorySource, authority: &str) {
    src.set_endpoints(authority, EndpointSet::default());
    src.set_outbound(authority, OutboundPolicy::default_for(authority));
}

async fn unwatched(src: &MemorySource, authority: &str) {
    eventually_async(&format!("no watch of {authority} left"), || async {
        (src.watched(authority) == (false, false)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn many_authorities_stay_under_the_cap_and_evicted_ones_drop_their_watches() {
    let src = MemorySource::new();
    let (o, gauges) = bounded(&src, 8, Duration::from_secs(3600));
    let name = |i: usize| format!("svc-{i}.test.svc.cluster.local");
    for i in 0..100 {
        unknown(&src, &format!("{}:80", name(i)));
        assert!(matches!(get(&o, &name(i)).await, Err(ProxyError::NoRoute { .. })));
        assert!(gauges.services.entries.get() <= 8 && gauges.backends.entries.get() <= 8);
    }
    // The first ones were evicted long ago; their watch tasks ended.
    for i in 0..50 {
        unwatched(&src, &format!("{}:80", name(i))).await;
    }
    assert!(gauges.services.capacity_evictions.get() >= 92, "{}", gauges.services.capacity_evictions.get());
    // The last one is still held, with both of its watches.
    assert_eq!(src.watched(&format!("{}:80", name(99))), (true, true));
}

#[tokio::test]
async fn idle_authorities_go_and_come_back_on_the_next_request() {
    let src = MemorySource::new();
    let (o, gauges) = bounded(&src, 100, Duration::from_millis(100));
    unknown(&src, "web.test:80");
    assert!(get(&o, "web.test").await.is_err());
    assert_eq!(src.watched("web.test:80"), (true, true));
    unwatched(&src, "web.test:80").await;
    assert_eq!((gauges.services.entries.get(), gauges.backends.entries.get()), (0, 0));
    assert_eq!(gauges.services.idle_evictions.get(), 1);
    // The next request resolves it again.
    assert!(matches!(get(&o, "web.test").await, Err(ProxyError::NoRoute { .. })));
    assert_eq!(src.watched("web.test:80"), (true, true));
}

#[tokio::test]
async fn a_held_target_is_never_evicted() {
    let src = MemorySource::new();
    let (o, gauges) = bounded(&src, 1, Duration::from_millis(100));
    unknown(&src, "10.0.0.1:80");
    unknown(&src, "other:80");
    let target = o.target("10.0.0.1:80");
    let _ = get(&o, "other").await;
    // "other" goes idle; the held target stays however long it is held.
    unwatched(&src, "other:80").await;
    assert!(Arc::ptr_eq(&target.service, &o.service("10.0.0.1:80")));
    assert_eq!(src.watched("10.0.0.1:80"), (false, true), "its policy watch");
    assert_eq!(gauges.services.entries.get(), 1);
    drop(target);
    unwatched(&src, "10.0.0.1:80").await;
}

#[tokio::test]
async fn invalid_authorities_get_400_without_a_watch() {
    let src = MemorySource::new();
    let (o, gauges) = bounded(&src, 8, Duration::from_secs(60));
    let long = format!("{}test", "a.".repeat(130));
    for bad in ["web:0", "web:65536", "web:http", ":80", "a..b", "-web.test", long.as_str(), "[zz]:80", "a/b"] {
        match get(&o, bad).await {
            Err(e @ ProxyError::InvalidAuthority { .. }) => {
                assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad:?}");
                assert!(e.to_string().contains("expected host:port"), "{e}");
            }
            Err(e) => panic!("{bad:?}: {e}"),
            Ok(r) => panic!("{bad:?}: {}", r.status()),
        }
    }
    assert_eq!((gauges.services.entries.get(), gauges.backends.entries.get()), (0, 0));
    // Not even a header value (hyper refuses them first), but the check holds.
    for bad in ["web\u{1}x:80", "ünï.test:80", "web :80", ""] {
        assert!(check_authority(bad).is_err(), "{bad:?}");
    }
    for good in ["web", "web.shop.svc.cluster.local:8080", "10.0.0.1:80", "[::1]:443", "my_host.test.:80", "WEB.Test"] {
        assert_eq!(check_authority(&normalize(good)), Ok(()), "{good}");
    }
}
