//! A Kubernetes API server that knows only what the propagation harness
//! needs, on 127.0.0.1:0 in plain HTTP: lists of every kind mesh-control's
//! Kubernetes backend follows (Services and EndpointSlices from the harness,
//! the other kinds empty), watches that stay open, and one EndpointSlice
//! watch into which the harness pushes `MODIFIED` events. Real sockets and
//! kube-rs's real watcher on mesh-control's side: what is timed is an event
//! leaving the API server until a proxy's stream says so.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Dropping it stops the server and closes its connections.
pub struct FakeApi {
    addr: SocketAddr,
    events: mpsc::UnboundedSender<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

/// Objects the lists answer with, as JSON.
pub struct Objects {
    pub services: Vec<serde_json::Value>,
    pub endpoint_slices: Vec<serde_json::Value>,
}

impl FakeApi {
    pub async fn start(objects: Objects) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (events, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State { objects, slice_events: Mutex::new(Some(rx)) });
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the task closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(req, Arc::clone(&state)));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Self { addr, events, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig naming this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\nusers:\n- name: harness\n  user: {{token: harness}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: harness}}\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Sends `slice` as a `MODIFIED` event on the EndpointSlice watch.
    pub fn modify_slice(&self, slice: &serde_json::Value) {
        let mut line = serde_json::json!({"type": "MODIFIED", "object": slice}).to_string();
        line.push('\n');
        // The receiver lives as long as the server.
        let _ = self.events.send(Bytes::from(line));
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    objects: Objects,
    /// Taken by the first EndpointSlice watch; later ones (a reconnect)
    /// stay open and silent.
    slice_events: Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>,
}

async fn answer(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let watch = req.uri().query().unwrap_or_default().split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let (kind, items) = match path {
        "/api/v1/services" => ("ServiceList", state.objects.services.as_slice()),
        "/apis/discovery.k8s.io/v1/endpointslices" => ("EndpointSliceList", state.objects.endpoint_slices.as_slice()),
        "/api/v1/namespaces"
        | "/api/v1/pods"
        | "/apis/gateway.networking.k8s.io/v1/httproutes"
        | "/apis/gateway.networking.k8s.io/v1/grpcroutes"
        | "/apis/policy.weft.io/v1alpha1/authorizationpolicies" => ("List", &[][..]),
        _ => {
            let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                "reason": "NotFound", "message": format!("{path}: not served by the propagation harness")});
            return Ok(json(StatusCode::NOT_FOUND, status.to_string()));
        }
    };
    if !watch {
        let list = serde_json::json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items});
        return Ok(json(StatusCode::OK, list.to_string()));
    }
    let events = match path {
        "/apis/discovery.k8s.io/v1/endpointslices" => state.slice_events.lock().unwrap_or_else(|p| p.into_inner()).take(),
        _ => None,
    };
    let frames = futures_util::stream::unfold(events, |events| async move {
        match events {
            Some(mut rx) => rx.recv().await.map(|line| (Ok(Frame::data(line)), Some(rx))),
            // Nothing ever changes: the watch stays open.
            None => std::future::pending().await,
        }
    });
    let body = BodyExt::boxed(StreamBody::new(frames));
    Ok(Response::builder().header("content-type", "application/json").body(body).expect("static response parts"))
}

fn json(code: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body))))
        .expect("static response parts")
}
