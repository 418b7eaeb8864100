//! The HTTP side of a service: the limits every request and connection is held to
//! ([`HttpLimits`]), the JSON problem shape every error answers in ([`problem`]), and the server
//! loop [`crate::app::Started::serve`] runs.
//!
//! Every route a service adds with [`crate::App::routes`] is served behind:
//! - a **request timeout** ([`HttpLimits::request_timeout`]): a request not answered in time gets
//!   `503` `{"error":"timeout",…}` with `Retry-After` (tower-http's `TimeoutLayer`);
//! - a **concurrency limit** ([`HttpLimits::max_in_flight`]): a request beyond it is refused at
//!   once with `503` `{"error":"busy",…}` and `Retry-After`, never queued;
//! - a **body limit** ([`HttpLimits::max_body_bytes`]): a larger body gets `413`
//!   `{"error":"too_large","field":"body",…}` (by `Content-Length` before reading, else while
//!   reading; tower-http's `RequestBodyLimitLayer`).
//!
//! The server loop adds a **header-read timeout** ([`HttpLimits::header_read_timeout`]: a client
//! that has not sent a request's headers in time is disconnected; hyper's, which `axum::serve`
//! leaves off as it sets no timer) and a **connection limit** ([`HttpLimits::max_connections`]:
//! beyond it, new connections wait in the listen backlog).
//!
//! Axum's own rejections (a query string or path that does not parse, a body too large, no route,
//! a method not allowed) are plain text; they are rewritten into the same problem shape as the
//! services' own errors: `{"error": code, "field": …, "reason": …}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The bounds on a service's HTTP server (see the [module](self)). Defaults: requests answered
/// within 75 s (above the longest long-poll the sample services allow, 60 s), 1,024 requests in
/// progress, bodies up to 64 KiB, headers read within 10 s, 4,096 connections, 10 s to finish
/// on shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// The longest a request may take, from its headers read to its answer.
    pub request_timeout: Duration,
    /// The longest a client may take to send a request's headers (from the connection's start,
    /// or from the previous answer on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// Requests in progress at once, over all connections; more are refused (503).
    pub max_in_flight: usize,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Open connections at once; more wait to be accepted.
    pub max_connections: usize,
    /// On shutdown, how long requests in progress may still take; then their connections are
    /// closed.
    pub drain_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(75),
            header_read_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            max_body_bytes: 64 * 1024,
            max_connections: 4096,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl HttpLimits {
    /// With requests answered within `timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// With headers read within `timeout`.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// With at most `requests` in progress at once (at least 1).
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests.max(1);
        self
    }

    /// With bodies of at most `bytes`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// With requests in progress given `timeout` to finish on shutdown.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// With at most `connections` open at once (at least 1).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }
}

/// The JSON body of every error answer: `{"error": code, "field": field (if one is at fault),
/// "reason": reason}`. With the `openapi` feature it is a `utoipa` schema, for the routes' documents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A short code: `invalid`, `not_found`, `conflict`, `timeout`, `unavailable`, `internal`; from
    /// the server's limits `busy`, `too_large`, `method_not_allowed`.
    pub error: String,
    /// The field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

/// The services' error answer: a [`Problem`] with `status`, and `Retry-After: 1` on a 503.
pub fn problem(status: StatusCode, error: &str, field: Option<&str>, reason: impl Into<String>) -> Response {
    let problem = Problem { error: error.into(), field: field.map(str::to_owned), reason: reason.into() };
    HttpError { status, problem }.into_response()
}

/// An error a route answers with: its status and [`Problem`]. Routes return
/// `Result<…, HttpError>`; `?` turns a table's [`NotReady`](crate::table::NotReady) into a 503
/// (or a 500 when asking again cannot help).
///
/// ```
/// use backbone::http::HttpError;
///
/// fn quantity(n: i64) -> Result<i64, HttpError> {
///     if n < 0 { return Err(HttpError::invalid("quantity", "at least 0")) }
///     Ok(n)
/// }
/// assert_eq!(quantity(-1).unwrap_err().status(), axum::http::StatusCode::BAD_REQUEST);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    status: StatusCode,
    problem: Problem,
}

impl HttpError {
    /// An answer with `status`, code `error` and `reason`.
    pub fn new(status: StatusCode, error: &str, reason: impl Into<String>) -> Self {
        Self { status, problem: Problem { error: error.into(), field: None, reason: reason.into() } }
    }

    /// `400` `invalid`: `field` is wrong, and why.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", reason).field(field)
    }

    /// `404` `not_found`.
    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", reason)
    }

    /// `409` `conflict`.
    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", reason)
    }

    /// `504` `timeout`: what was waited for did not happen in time.
    pub fn timeout(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", reason)
    }

    /// `503` `unavailable`, with `Retry-After`: asking again later may work.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", reason)
    }

    /// `500` `internal`: not the client's fault, and asking again does not help.
    pub fn internal(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", reason)
    }

    /// Names the field at fault.
    pub fn field(mut self, field: &str) -> Self {
        self.problem.field = Some(field.to_owned());
        self
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body answered.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.problem.error, self.problem.reason)
    }
}

impl std::error::Error for HttpError {}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.problem)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<crate::table::NotReady> for HttpError {
    fn from(e: crate::table::NotReady) -> Self {
        if e.is_retriable() { Self::unavailable(e.to_string()) } else { Self::internal(e.to_string()) }
    }
}

impl From<crate::PublishError> for HttpError {
    /// A write that failed is worth trying again: `503` `unavailable`.
    fn from(e: crate::PublishError) -> Self {
        Self::unavailable(format!("the write failed: {e}"))
    }
}

impl IntoResponse for crate::table::NotReady {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}

/// Whether `s` is blank as an OpenAPI document's `pattern: "[^ \t\n\r\x0b\x0c]"` (one other
/// character) sees it: nothing but ASCII spaces, tabs and line breaks. `str::trim` also drops
/// Unicode spaces such as U+0085, which JSON Schema's `\s` does not, so a check with it disagrees
/// with the document a client (or a fuzzer) reads.
pub fn is_blank(s: &str) -> bool {
    s.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
}

/// A JSON number as a whole number, as JSON Schema's `integer` admits it: `2`, and also `2.0` and
/// `2e3`. Floats beyond 2^53 are not exact, so not admitted.
pub fn json_whole(n: &serde_json::Number) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT).map(|f| f as i64))
}

/// `routes` behind the request timeout, the concurrency limit and the body limit.
pub(crate) fn limit<S: Clone + Send + Sync + 'static>(routes: Router<S>, limits: &HttpLimits) -> Router<S> {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let max = limits.max_in_flight;
    routes
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limits.max_body_bytes))
        // The extractors' own limit (`Bytes`, `Json`; axum's default is 2 MiB) is the same bound.
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(move |request: Request<Body>, next: Next| {
            let in_flight = in_flight.clone();
            async move {
                match in_flight.try_acquire_owned() {
                    Ok(_permit) => next.run(request).await,
                    Err(_) => problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        None,
                        format!("{max} requests are in progress; try again"),
                    ),
                }
            }
        }))
        // An empty 503 on timeout (nothing else answers one): [`problems`] says why.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
}

/// Rewrites plain-text (or empty) error answers (axum's rejections, the timeout's) into the JSON
/// problem shape; answers already in JSON pass untouched.
pub(crate) fn problems<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limits: &HttpLimits,
) -> Router<S> {
    let timeout = limits.request_timeout;
    router.layer(axum::middleware::from_fn(move |request: Request<Body>, next: Next| async move {
        let response = next.run(request).await;
        let status = response.status();
        let is_json =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.starts_with("application/json") || v.starts_with("application/problem+json")
            });
        if !(status.is_client_error() || status.is_server_error()) || is_json {
            return response;
        }
        let allow = response.headers().get(header::ALLOW).cloned();
        // Rejections are a line of text; anything longer is cut.
        let text = match axum::body::to_bytes(response.into_body(), 4096).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
            Err(_) => String::new(),
        };
        let mut answer = rewrite(status, &text, timeout);
        if let Some(allow) = allow {
            answer.headers_mut().insert(header::ALLOW, allow);
        }
        answer
    }))
}

/// The problem for a plain-text error answer with `status` and `text`.
fn rewrite(status: StatusCode, text: &str, timeout: Duration) -> Response {
    let reason = |fallback: &str| if text.is_empty() { fallback.to_owned() } else { text.to_owned() };
    match status {
        StatusCode::SERVICE_UNAVAILABLE if text.is_empty() => problem(
            status,
            "timeout",
            None,
            format!("not answered within {} ms; try again", timeout.as_millis()),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            problem(status, "too_large", Some("body"), reason("the body is too large"))
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => problem(
            status,
            "unsupported_media_type",
            Some("content-type"),
            reason("unsupported content type"),
        ),
        StatusCode::NOT_FOUND => problem(status, "not_found", None, reason("no such resource")),
        StatusCode::METHOD_NOT_ALLOWED => {
            problem(status, "method_not_allowed", None, reason("method not allowed"))
        }
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            problem(status, "invalid", rejected_field(text), reason("the request is malformed"))
        }
        _ if status.is_server_error() => problem(status, "unavailable", None, reason("the service failed")),
        _ => problem(status, "invalid", None, reason("the request was refused")),
    }
}

/// The part of the request axum's rejection text blames.
fn rejected_field(text: &str) -> Option<&'static str> {
    if text.contains("query string") {
        Some("query")
    } else if text.contains("path param") || text.contains("URI") || text.contains("URL") {
        Some("path")
    } else if text.contains("body") || text.contains("JSON") || text.contains("Content-Type") {
        Some("body")
    } else {
        None
    }
}

/// Serves `router` on `listener` within `limits` until `stop` turns true, then closes idle
/// connections and lets the requests in progress finish within the drain timeout (then closes
/// theirs too).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let connections_allowed = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = connections_allowed.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stop.clone();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
        connections.spawn(async move {
            let _permit = permit;
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::trace!(error = %e, "connection ended");
                    }
                }
                () = stopped(&mut stopping) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            drain_timeout = ?limits.drain_timeout,
            "requests still in progress after the drain timeout: their connections are closed"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::extract::Query;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tower::ServiceExt as _;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Wait {
        #[allow(dead_code)]
        n: u64,
    }

    /// `/hold`'s: notified when a request arrives, answering once released.
    #[derive(Default)]
    struct Hold {
        entered: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    /// A router as `App` builds it: routes within `limits`, errors in the problem shape. `/hold`
    /// answers once `hold` is released (or never).
    fn router(limits: &HttpLimits, hold: Arc<Hold>) -> Router {
        let routes = Router::new()
            .route(
                "/hold",
                get(move || async move {
                    hold.entered.notify_one();
                    hold.release.notified().await
                }),
            )
            .route("/query", get(|Query(_): Query<Wait>| async { "ok" }))
            .route("/json", post(|axum::Json(_): axum::Json<serde_json::Value>| async { "ok" }))
            .route("/bytes", post(|body: axum::body::Bytes| async move { body.len().to_string() }));
        problems(limit(routes, limits).route("/healthz", get(|| async { "ok" })), limits)
    }

    async fn call(
        router: &Router,
        request: Request<Body>,
    ) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, retry, json)
    }

    fn get_(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[test]
    fn rejections_name_the_part_at_fault() {
        assert_eq!(rejected_field("Failed to deserialize query string: invalid digit"), Some("query"));
        assert_eq!(rejected_field("Failed to buffer the request body: length limit exceeded"), Some("body"));
        assert_eq!(rejected_field("Invalid URL: Cannot parse `x` to a `u64`"), Some("path"));
    }

    #[tokio::test]
    async fn item_6_a_request_not_answered_in_time_gets_a_503_timeout_problem() {
        let limits = HttpLimits::default().request_timeout(Duration::from_millis(200));
        let router = router(&limits, Arc::default());
        let started = Instant::now();
        let (status, retry, body) = call(&router, get_("/hold")).await;
        assert_eq!((status, retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")), "{body}");
        assert_eq!(body["error"], "timeout", "{body}");
        assert!(body["reason"].as_str().unwrap().contains("200 ms"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn item_6_requests_beyond_the_concurrency_limit_are_refused_at_once() {
        let limits = HttpLimits::default().max_in_flight(1);
        let hold = Arc::new(Hold::default());
        let router = router(&limits, hold.clone());
        let held = tokio::spawn({
            let router = router.clone();
            async move { call(&router, get_("/hold")).await.0 }
        });
        // The held request has its place once it is waiting to be released.
        let mut refused = None;
        for _ in 0..1000 {
            let (status, retry, body) = call(&router, get_("/query?n=1")).await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                refused = Some((retry, body));
                break;
            }
            tokio::task::yield_now().await;
        }
        let (retry, body) = refused.expect("a second request while one is in progress is refused");
        assert_eq!((retry.as_deref(), &body["error"]), (Some("1"), &serde_json::json!("busy")), "{body}");
        // Health is not limited: a busy service is not a dead one.
        assert_eq!(call(&router, get_("/healthz")).await.0, StatusCode::OK);
        hold.release.notify_one();
        assert_eq!(held.await.unwrap(), StatusCode::OK);
        assert_eq!(call(&router, get_("/query?n=1")).await.0, StatusCode::OK, "the place came back");
    }

    #[tokio::test]
    async fn item_6_a_body_over_the_limit_is_a_413_problem_with_or_without_a_length() {
        let limits = HttpLimits::default().max_body_bytes(1024);
        let router = router(&limits, Arc::default());
        let ok = Request::post("/bytes").body(Body::from(vec![b'x'; 1024])).unwrap();
        assert_eq!(call(&router, ok).await.0, StatusCode::OK);

        let sized = Request::post("/bytes").body(Body::from(vec![b'x'; 1025])).unwrap();
        let (status, _, body) = call(&router, sized).await;
        assert_eq!(
            (status, &body["error"], &body["field"]),
            (StatusCode::PAYLOAD_TOO_LARGE, &"too_large".into(), &"body".into()),
            "{body}"
        );

        // Streamed, no Content-Length: cut while reading.
        let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'; 512])));
        let streamed =
            Request::post("/bytes").body(Body::from_stream(futures::stream::iter(chunks))).unwrap();
        let (status, _, body) = call(&router, streamed).await;
        assert_eq!((status, &body["error"]), (StatusCode::PAYLOAD_TOO_LARGE, &"too_large".into()), "{body}");
    }

    #[tokio::test]
    async fn item_6_axum_rejections_answer_in_the_problem_shape() {
        let router = router(&HttpLimits::default(), Arc::default());
        let (status, _, body) = call(&router, get_("/query?n=x")).await;
        assert_eq!(
            (status, &body["error"], &body["field"]),
            (StatusCode::BAD_REQUEST, &"invalid".into(), &"query".into()),
            "{body}"
        );
        assert!(body["reason"].as_str().unwrap().contains("query string"), "{body}");

        let untyped = Request::post("/json").body(Body::from("{}")).unwrap();
        let (status, _, body) = call(&router, untyped).await;
        assert_eq!(
            (status, &body["field"]),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, &"content-type".into()),
            "{body}"
        );

        let bad =
            Request::post("/json").header("content-type", "application/json").body(Body::from("{")).unwrap();
        let (status, _, body) = call(&router, bad).await;
        assert_eq!(
            (status, &body["error"], &body["field"]),
            (StatusCode::BAD_REQUEST, &"invalid".into(), &"body".into()),
            "{body}"
        );

        let (status, _, body) = call(&router, get_("/nowhere")).await;
        assert_eq!((status, &body["error"]), (StatusCode::NOT_FOUND, &"not_found".into()), "{body}");

        let response =
            router.clone().oneshot(Request::delete("/query").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.headers().contains_key(header::ALLOW), "Allow is kept");
        let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }

    /// Serves `router` on an ephemeral port; the stop sender ends it.
    async fn serving(
        router: Router,
        limits: HttpLimits,
    ) -> (std::net::SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopping) = watch::channel(false);
        (addr, stop, tokio::spawn(serve(listener, router, limits, stopping)))
    }

    /// Reads until the server closes the connection (or 10 s, a broken bound): what it sent.
    async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Result<String, &'static str> {
        let mut answer = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await {
            Ok(_) => Ok(String::from_utf8_lossy(&answer).into_owned()),
            Err(_) => Err("still open after 10 s"),
        }
    }

    #[tokio::test]
    async fn item_6_a_slowloris_is_disconnected_within_the_header_read_timeout() {
        let limits = HttpLimits::default().header_read_timeout(Duration::from_millis(500));
        let (addr, stop, server) = serving(router(&limits, Arc::default()), limits).await;

        // Headers begun, never finished.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        slow.write_all(b"GET /query?n=1 HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        let answer = read_to_close(&mut slow).await.expect("disconnected");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "closed after {took:?}: {answer}"
        );
        assert!(!answer.contains("200 OK"), "{answer}");

        // A client that sends its headers in time is answered.
        let mut prompt = tokio::net::TcpStream::connect(addr).await.unwrap();
        prompt.write_all(b"GET /query?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        assert!(read_to_close(&mut prompt).await.unwrap().starts_with("HTTP/1.1 200 OK"));

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops").unwrap().unwrap();
    }

    #[tokio::test]
    async fn item_6_shutdown_waits_for_requests_in_progress_no_longer_than_the_drain_timeout() {
        let limits = HttpLimits::default().drain_timeout(Duration::from_millis(300));
        let hold = Arc::new(Hold::default());
        let (addr, stop, server) = serving(router(&limits, hold.clone()), limits).await;
        let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
        held.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        hold.entered.notified().await;

        let started = Instant::now();
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops").unwrap().unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "stopped after {took:?}"
        );
        assert!(read_to_close(&mut held).await.is_ok(), "the held connection is closed");
    }

    #[tokio::test]
    async fn item_6_connections_beyond_the_limit_wait_to_be_accepted() {
        let limits = HttpLimits::default().max_connections(1);
        let (addr, stop, server) = serving(router(&limits, Arc::default()), limits).await;

        // The one connection: open, kept alive, answered.
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        first.write_all(b"GET /query?n=1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = first.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));

        // A second one is not served while the first is open…
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second.write_all(b"GET /query?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
        assert!(waited.is_err(), "answered beyond the connection limit");
        // …and is once the first closes.
        drop(first);
        assert!(read_to_close(&mut second).await.unwrap().starts_with("HTTP/1.1 200 OK"));

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops").unwrap().unwrap();
    }
}
