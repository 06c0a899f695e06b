//! Running async work (the load generator, readiness probes, conformance
//! requests) with its sockets inside a pod's network namespace: a Linux
//! primitive any substrate with namespaces uses (`netns` today).
//!
//! A network namespace belongs to a thread, and threads inherit it from the
//! thread that creates them. So the work gets its own OS thread, which enters
//! the namespace and only then builds a tokio runtime: every worker thread,
//! and so every socket the work opens, is in the pod. `bench`'s own runtime
//! never changes namespace.

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

/// Why the work could not run in the namespace.
#[derive(Debug, thiserror::Error)]
#[error("cannot run inside network namespace {ns}: {detail}")]
pub struct EnterError {
    pub ns: PathBuf,
    pub detail: String,
}

/// Run `work()` on a fresh runtime of `threads` workers inside the network
/// namespace `ns` (a `/run/netns/NAME` path) and return its output.
/// Dropping the returned future cancels the work (its runtime is dropped,
/// closing its sockets).
pub async fn run_in<F, Fut, T>(ns: &Path, threads: usize, work: F) -> Result<T, EnterError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let err = |detail: String| EnterError {
        ns: ns.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(ns).map_err(|e| err(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("weft-in-netns".into())
        .spawn(move || {
            let result = (|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns: {e}"))?;
                let rt = match threads {
                    0 | 1 => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build(),
                    n => tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(n)
                        .enable_all()
                        .build(),
                }
                .map_err(|e| format!("start a runtime: {e}"))?;
                Ok(rt.block_on(async move {
                    tokio::select! {
                        out = work() => Some(out),
                        // The caller went away (Ctrl-C, timeout): stop.
                        _ = cancel_rx => None,
                    }
                }))
            })();
            let _ = tx.send(result);
        })
        .map_err(|e| err(format!("start a thread: {e}")))?;
    let _cancel_on_drop = cancel_tx;
    match rx.await {
        Ok(Ok(Some(out))) => Ok(out),
        Ok(Ok(None)) => Err(err("cancelled".into())),
        Ok(Err(detail)) => Err(err(detail)),
        Err(_) => Err(err("the work panicked".into())),
    }
}

/// [`run_in`] when `ns` is given; else `work()` on the caller's runtime.
pub async fn maybe_in<F, Fut, T>(ns: Option<&Path>, threads: usize, work: F) -> Result<T, EnterError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    match ns {
        None => Ok(work().await),
        Some(ns) => run_in(ns, threads, work).await,
    }
}
