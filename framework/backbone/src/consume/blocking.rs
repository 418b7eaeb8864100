//! Blocking librdkafka calls (commits, closing) kept off the async runtime.

/// Runs `work` on a thread of its own (not the runtime's blocking pool, whose shutdown waits for
/// it): its result, or `None` if it panicked.
pub(super) async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("backbone-blocking".into()).spawn(move || {
        let _ = done.send(work());
    });
    match spawned {
        Ok(_) => result.await.ok(),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a thread");
            None
        }
    }
}
