//! ACLs and SCRAM credentials through librdkafka's admin API (CreateAcls, DescribeAcls,
//! DeleteAcls, AlterUserScramCredentials, DescribeUserScramCredentials), behind a small safe
//! wrapper: Rust values in, Rust values out.
//!
//! # Why this module uses `unsafe`
//!
//! rdkafka's safe admin API covers topics, partitions, records and configs, not ACLs or SCRAM
//! users; librdkafka has both, and the issue asks for them without running Java tools. So this
//! module (`mod.rs`: the handle, requests and guards; `acl.rs`: the ACL requests and bindings;
//! `scram.rs`: the SCRAM requests), and nothing else in the crate, calls librdkafka's C API through
//! `rdkafka::bindings`:
//!
//! - the handle: `Client::native_ptr()` of an [`AdminClient`] built from the estate's client
//!   configuration. The wrapper holds that client in an `Arc`, and every call moves a clone of the
//!   `Arc` into its blocking task, so the handle outlives every request made on it.
//! - per request, three objects this module creates and destroys exactly once, each owned by a guard
//!   whose `Drop` destroys it: a result queue of its own (`rd_kafka_queue_new` /
//!   `rd_kafka_queue_destroy`), the request's options (`rd_kafka_AdminOptions_new` with a request
//!   timeout / `rd_kafka_AdminOptions_destroy`) and the request's inputs (`rd_kafka_AclBinding_new`,
//!   `rd_kafka_AclBindingFilter_new`, `rd_kafka_UserScramCredential{Upsertion,Deletion}_new` /
//!   their `_destroy`). librdkafka copies options and inputs when the request is made (checked in
//!   2.12.1's `rdkafka_admin.c`: `_copy` of each binding, filter and alteration, `rd_strdup` of
//!   each user name, a copy of the options), so the
//!   guards may drop as soon as the request call returns; they drop at the end of the function.
//! - the answer: one event taken with `rd_kafka_queue_poll` with a timeout (the request timeout and
//!   a margin: a lost answer is a [`AdminError::Timeout`], never a hang), owned by a guard that calls
//!   `rd_kafka_event_destroy`. Every pointer read from the result (bindings, per-binding errors,
//!   strings) belongs to the event; they are copied into Rust values before the guard drops, and
//!   none is destroyed by this module. If the poll times out, the queue is destroyed with the request
//!   still in flight: librdkafka counts its references, and frees the late answer itself.
//! - strings go in as `CString`s that live across the call; strings come out copied with
//!   `CStr::to_string_lossy` after a null check.
//!
//! Every call blocks (`rd_kafka_queue_poll`), so each runs on `tokio::task::spawn_blocking`.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

use super::error::AdminError;
use crate::acl::AclBinding;

mod acl;
mod scram;

const NO_ERROR: rd::rd_kafka_resp_err_t = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;

/// A SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    /// The SASL mechanism's name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn native(self) -> rd::rd_kafka_ScramMechanism_t {
        match self {
            Self::Sha256 => rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256,
            Self::Sha512 => rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
        }
    }
}

/// One SCRAM credential a user has (the broker never tells the password or salt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    /// The mechanism.
    pub mechanism: ScramMechanism,
    /// PBKDF2 iterations.
    pub iterations: i32,
}

/// Which ACLs to describe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclFilter {
    /// Every ACL.
    Any,
    /// Every ACL of one principal (`User:orders`).
    Principal(String),
}

/// ACLs and SCRAM credentials through librdkafka's admin API.
#[derive(Clone)]
pub(crate) struct NativeAdmin {
    client: Arc<AdminClient<DefaultClientContext>>,
    /// `User:<name>`, for errors.
    principal: String,
    timeout: Duration,
}

impl NativeAdmin {
    pub(crate) fn new(
        client: AdminClient<DefaultClientContext>,
        principal: String,
        timeout: Duration,
    ) -> Self {
        Self { client: Arc::new(client), principal, timeout }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, AdminError> + Send + 'static,
    ) -> Result<T, AdminError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| AdminError::Protocol(format!("an admin task failed: {e}")))?
    }

    /// Creates `acls`. A binding the broker refuses is reported with its own reason; an
    /// authorization refusal is [`AdminError::Unauthorized`].
    pub(crate) async fn create_acls(&self, acls: &[AclBinding]) -> Result<(), AdminError> {
        if acls.is_empty() {
            return Ok(());
        }
        let acls = acls.to_vec();
        self.blocking(move |this| this.create_acls_blocking(&acls)).await
    }

    /// The ACLs `filter` matches.
    pub(crate) async fn describe_acls(&self, filter: AclFilter) -> Result<Vec<AclBinding>, AdminError> {
        self.blocking(move |this| this.describe_acls_blocking(&filter)).await
    }

    /// Deletes exactly `acls` (one exact-match filter each); returns the bindings the broker deleted.
    pub(crate) async fn delete_acls(&self, acls: &[AclBinding]) -> Result<Vec<AclBinding>, AdminError> {
        if acls.is_empty() {
            return Ok(Vec::new());
        }
        let acls = acls.to_vec();
        self.blocking(move |this| this.delete_acls_blocking(&acls)).await
    }

    /// Sets (`Some(password)`) or deletes (`None`) one SCRAM credential of `user`.
    pub(crate) async fn alter_scram(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        password: Option<String>,
        iterations: i32,
    ) -> Result<(), AdminError> {
        let user = user.to_owned();
        self.blocking(move |this| {
            this.alter_scram_blocking(&user, mechanism, password.as_deref(), iterations)
        })
        .await
    }

    /// The SCRAM credentials of each of `users` (empty for a user without any).
    pub(crate) async fn describe_scram(
        &self,
        users: &[String],
    ) -> Result<Vec<(String, Vec<ScramCredential>)>, AdminError> {
        let users = users.to_vec();
        self.blocking(move |this| this.describe_scram_blocking(&users)).await
    }

    fn rk(&self) -> *mut rd::rd_kafka_t {
        self.client.inner().native_ptr()
    }

    /// Makes one request with `submit` on a queue of its own and returns its answer.
    fn request(
        &self,
        op: rd::rd_kafka_admin_op_t,
        what: &str,
        expected: i32,
        submit: impl FnOnce(*mut rd::rd_kafka_t, *const rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
    ) -> Result<Event, AdminError> {
        let rk = self.rk();
        // SAFETY: `rk` is the live handle of `self.client` (held by `self` for this whole call).
        let queue = Queue(unsafe { rd::rd_kafka_queue_new(rk) });
        // SAFETY: as above; the options are destroyed by their guard.
        let options = Options(unsafe { rd::rd_kafka_AdminOptions_new(rk, op) });
        if queue.0.is_null() || options.0.is_null() {
            return Err(AdminError::Protocol(format!("{what}: librdkafka could not make the request")));
        }
        let mut errstr = [0 as c_char; 256];
        let ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: live options; `errstr` is a writable buffer of the size given.
        let err = unsafe {
            rd::rd_kafka_AdminOptions_set_request_timeout(options.0, ms, errstr.as_mut_ptr(), errstr.len())
        };
        if err != NO_ERROR {
            return Err(AdminError::Invalid(format!("request timeout {ms} ms: {}", c_str(errstr.as_ptr()))));
        }
        submit(rk, options.0, queue.0);
        let wait = self.timeout + Duration::from_secs(5);
        // SAFETY: a live queue of ours; the event (if any) is ours and destroyed by its guard.
        let event = Event(unsafe {
            rd::rd_kafka_queue_poll(queue.0, i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
        });
        if event.0.is_null() {
            return Err(AdminError::Timeout { operation: what.to_owned(), after: wait });
        }
        // SAFETY: a live event.
        let err = unsafe { rd::rd_kafka_event_error(event.0) };
        if err != NO_ERROR {
            // SAFETY: a live event; the string belongs to it and is copied.
            let message = c_str(unsafe { rd::rd_kafka_event_error_string(event.0) });
            return Err(self.error(what, err, &message));
        }
        // SAFETY: a live event.
        let kind = unsafe { rd::rd_kafka_event_type(event.0) };
        if kind != expected {
            return Err(AdminError::Protocol(format!(
                "{what}: an answer of type {kind}, expected {expected}"
            )));
        }
        Ok(event)
    }

    fn error(&self, what: &str, err: rd::rd_kafka_resp_err_t, message: &str) -> AdminError {
        // SAFETY: librdkafka's static error names.
        let name = c_str(unsafe { rd::rd_kafka_err2name(err) });
        let code = err as i32;
        let retriable = if code < 0 {
            matches!(name.as_str(), "_TIMED_OUT" | "_TRANSPORT" | "_ALL_BROKERS_DOWN" | "_WAIT_COORD")
        } else {
            i16::try_from(code)
                .ok()
                .and_then(kafka_protocol::ResponseError::try_from_code)
                .is_some_and(|e| e.is_retriable())
        };
        AdminError::from_code(&self.principal, what, &name, message, retriable)
    }

    /// A per-item error (`rd_kafka_error_t` owned by the event), `None` for success.
    fn item_error(&self, error: *const rd::rd_kafka_error_t) -> Option<(String, String)> {
        if error.is_null() {
            return None;
        }
        // SAFETY: a live error owned by the live event; its strings are copied.
        let (code, name, message) = unsafe {
            (rd::rd_kafka_error_code(error), rd::rd_kafka_error_name(error), rd::rd_kafka_error_string(error))
        };
        (code != NO_ERROR).then(|| (c_str(name), c_str(message)))
    }
}

/// A result queue of ours.
struct Queue(*mut rd::rd_kafka_queue_t);

impl Drop for Queue {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by `rd_kafka_queue_new`, destroyed once, here.
            unsafe { rd::rd_kafka_queue_destroy(self.0) }
        }
    }
}

/// A request's options.
struct Options(*mut rd::rd_kafka_AdminOptions_t);

impl Drop for Options {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by `rd_kafka_AdminOptions_new`, destroyed once, here.
            unsafe { rd::rd_kafka_AdminOptions_destroy(self.0) }
        }
    }
}

/// An answer taken from a queue.
struct Event(*mut rd::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: returned by `rd_kafka_queue_poll`, destroyed once, here.
            unsafe { rd::rd_kafka_event_destroy(self.0) }
        }
    }
}

/// ACL bindings or filters (the same C type) made for one request.
struct Bindings(Vec<*mut rd::rd_kafka_AclBinding_t>);

impl Drop for Bindings {
    fn drop(&mut self) {
        for b in self.0.drain(..).filter(|b| !b.is_null()) {
            // SAFETY: created by `rd_kafka_AclBinding(Filter)_new`, destroyed once, here.
            unsafe { rd::rd_kafka_AclBinding_destroy(b) }
        }
    }
}

/// SCRAM credential alterations made for one request.
struct Alterations(Vec<*mut rd::rd_kafka_UserScramCredentialAlteration_t>);

impl Drop for Alterations {
    fn drop(&mut self) {
        for a in self.0.drain(..).filter(|a| !a.is_null()) {
            // SAFETY: created by `rd_kafka_UserScramCredential*_new`, destroyed once, here.
            unsafe { rd::rd_kafka_UserScramCredentialAlteration_destroy(a) }
        }
    }
}

fn cstring(s: &str) -> Result<CString, AdminError> {
    CString::new(s).map_err(|_| AdminError::Invalid(format!("`{s}` contains a NUL byte")))
}

/// A C string copied (empty for null).
fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: a non-null, NUL-terminated string that librdkafka keeps alive across this copy.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
