//! What the estate's tests share: calling a service's router without a socket, and the
//! configuration for the test kit's broker and registry.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of it

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use backbone::{Config, Profile};
use backbone_testkit::{shared_kafka, shared_registry};
use serde_json::Value;
use tower::ServiceExt as _;

/// The configuration for the test kit's shared broker and registry (development profile).
pub fn config() -> Config {
    let mut config = Config::default();
    config.bootstrap_servers = shared_kafka().bootstrap_servers().to_owned();
    config.schema_registry_url = shared_registry().url().to_owned();
    config.profile = Profile::Development;
    config
}

/// One HTTP call through `router`: status and the JSON body (or Null).
pub async fn call(router: &Router, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    send(router, request.body(body).unwrap()).await
}

/// Sends `request` through `router`: status and the JSON body (or Null).
pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
}
