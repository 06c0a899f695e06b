//! Waiting in tests for something that should happen: poll a check until it
//! holds, and fail naming what never happened. One patience for every crate,
//! raised on slow machines with `WEFT_TEST_PATIENCE_SECS`.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a check is polled.
const POLL: Duration = Duration::from_millis(20);

/// How long any wait in a test may take: `WEFT_TEST_PATIENCE_SECS`, or 20 s.
pub fn patience() -> Duration {
    let secs = std::env::var("WEFT_TEST_PATIENCE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// Polls `check` until it returns `Some`, panicking after [`patience`] with `what`.
#[track_caller]
pub fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    eventually_for(what, patience(), check)
}

/// Polls `check` until it returns `Some`, panicking after `patience` with `what`.
#[track_caller]
pub fn eventually_for<T>(
    what: &str,
    patience: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {patience:?} waiting for: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// The async form of [`eventually`], for tests on a tokio runtime.
pub async fn eventually_async<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let patience = patience();
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {patience:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_some() {
        let mut calls = 0;
        let v = eventually_for("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for: never")]
    fn names_what_never_happened() {
        eventually_for("never", Duration::from_millis(50), || None::<()>);
    }

    #[tokio::test]
    async fn async_form_polls_too() {
        let mut calls = 0;
        let v = eventually_async("the second call", || {
            calls += 1;
            let n = calls;
            async move { (n == 2).then_some(n) }
        })
        .await;
        assert_eq!(v, 2);
    }
}
