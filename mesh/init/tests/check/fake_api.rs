//! A fake Kubernetes API server: plain HTTP/1 on 127.0.0.1:0 answering from
//! recorded responses (mesh/kube/tests/fixtures/check/<dir>/routes.json), and
//! a kubeconfig pointing at it. It records every request so tests can
//! assert which API paths `weft check` used.

use std::{
    collections::HashMap,
    convert::Infallible,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One recorded answer.
#[derive(Debug, Clone)]
enum Answer {
    Fixed { status: StatusCode, content_type: String, body: String },
    /// SelfSubjectAccessReview: the review back with `status.allowed`, false for these resources.
    Review { deny: Vec<String> },
}

pub struct FakeApi {
    requests: Arc<Mutex<Vec<String>>>,
    // Dropping the runtime stops the server.
    _runtime: tokio::runtime::Runtime,
    kubeconfig: tempfile::NamedTempFile,
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/tests/fixtures/check")
}

impl FakeApi {
    /// Serves `fixtures()/dir`, with each `${NAME}` in a file replaced by its value in `vars`.
    pub fn start(dir: &str, vars: &[(&str, String)]) -> FakeApi {
        Self::start_with(dir, vars, Vec::new())
    }

    /// As [`FakeApi::start`], with some routes (`"GET /path"`) answered by the given JSON objects instead.
    pub fn start_with(dir: &str, vars: &[(&str, String)], objects: Vec<(String, Value)>) -> FakeApi {
        let mut routes = load(&fixtures().join(dir), vars);
        for (key, object) in objects {
            let answer = Answer::Fixed { status: StatusCode::OK, content_type: "application/json".into(), body: object.to_string() };
            routes.insert(key, answer);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes);
        let log = Arc::clone(&requests);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let routes = Arc::clone(&routes);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let routes = Arc::clone(&routes);
                        let log = Arc::clone(&log);
                        async move { Ok::<_, Infallible>(answer(req, &routes, &log).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        let kubeconfig = kubeconfig(&format!("http://{addr}"));
        FakeApi { requests, _runtime: runtime, kubeconfig }
    }

    pub fn kubeconfig(&self) -> &Path {
        self.kubeconfig.path()
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A kubeconfig with one context, `fake`, for `server` (also the current context).
pub fn kubeconfig(server: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         users:\n- name: fake\n  user:\n    token: weft-check-test\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n"
    );
    std::fs::write(file.path(), text).unwrap();
    file
}

fn load(dir: &Path, vars: &[(&str, String)]) -> HashMap<String, Answer> {
    let read = |name: &str| {
        let path = dir.join(name);
        let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (name, value) in vars {
            text = text.replace(&format!("${{{name}}}"), value);
        }
        text
    };
    let routes: serde_json::Map<String, Value> = serde_json::from_str(&read("routes.json")).unwrap();
    routes
        .into_iter()
        .filter(|(key, _)| !key.starts_with('_'))
        .map(|(key, value)| {
            let answer = match value {
                Value::String(file) => {
                    Answer::Fixed { status: StatusCode::OK, content_type: "application/json".into(), body: read(&file) }
                }
                Value::Object(o) if o.contains_key("deny") => Answer::Review {
                    deny: o["deny"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
                },
                Value::Object(o) => Answer::Fixed {
                    status: StatusCode::from_u16(o.get("status").and_then(Value::as_u64).unwrap_or(200) as u16).unwrap(),
                    content_type: o.get("type").and_then(Value::as_str).unwrap_or("application/json").to_owned(),
                    body: read(o["file"].as_str().unwrap()),
                },
                other => panic!("routes.json: {key}: {other}"),
            };
            (key, answer)
        })
        .collect()
}

async fn answer(req: Request<Incoming>, routes: &HashMap<String, Answer>, log: &Mutex<Vec<String>>) -> Response<Full<Bytes>> {
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let key = format!("{} {}", req.method(), req.uri().path());
    log.lock().unwrap().push(format!("{} {path_and_query}", req.method()));
    match routes.get(&key) {
        Some(Answer::Fixed { status, content_type, body }) => respond(*status, content_type, body.clone()),
        Some(Answer::Review { deny }) => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut review: Value = serde_json::from_slice(&body).unwrap();
            let resource = review["spec"]["resourceAttributes"]["resource"].as_str().unwrap_or_default().to_owned();
            let allowed = !deny.contains(&resource);
            review["status"] = if allowed {
                serde_json::json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"cluster-admin\""})
            } else {
                serde_json::json!({"allowed": false})
            };
            respond(StatusCode::CREATED, "application/json", review.to_string())
        }
        None => {
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("the server could not find the requested resource ({key})"),
                "reason": "NotFound", "code": 404
            });
            respond(StatusCode::NOT_FOUND, "application/json", status.to_string())
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
