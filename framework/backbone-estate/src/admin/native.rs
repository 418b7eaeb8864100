//! ACLs and SCRAM credentials through librdkafka's admin API (CreateAcls, DescribeAcls,
//! DeleteAcls, AlterUserScramCredentials, DescribeUserScramCredentials), behind a small safe
//! wrapper: Rust values in, Rust values out.
//!
//! # Why this module uses `unsafe`
//!
//! rdkafka's safe admin API covers topics, partitions, records and configs, not ACLs or SCRAM
//! users; librdkafka has both, and the issue asks for them without running Java tools. So this
//! module, and nothing else in the crate, calls librdkafka's C API through `rdkafka::bindings`:
//!
//! - the handle: `Client::native_ptr()` of an [`AdminClient`] built from the estate's client
//!   configuration. The wrapper holds that client in an `Arc`, and every call moves a clone of the
//!   `Arc` into its blocking task, so the handle outlives every request made on it.
//! - per request, three objects this module creates and destroys exactly once, each owned by a guard
//!   whose `Drop` destroys it: a result queue of its own (`rd_kafka_queue_new` /
//!   `rd_kafka_queue_destroy`), the request's options (`rd_kafka_AdminOptions_new` with a request
//!   timeout / `rd_kafka_AdminOptions_destroy`) and the request's inputs (`rd_kafka_AclBinding_new`,
//!   `rd_kafka_AclBindingFilter_new`, `rd_kafka_UserScramCredential{Upsertion,Deletion}_new` /
//!   their `_destroy`). librdkafka copies options and inputs when the request is made, so the
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
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

use super::error::{AdminError, BindingFailure, is_authorization_code};
use crate::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};

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

    fn create_acls_blocking(&self, acls: &[AclBinding]) -> Result<(), AdminError> {
        let what = "create ACLs";
        let mut natives = Bindings(Vec::with_capacity(acls.len()));
        for acl in acls {
            natives.0.push(new_binding(acl, false)?);
        }
        let event = self.request(
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
            what,
            rd::RD_KAFKA_EVENT_CREATEACLS_RESULT,
            // SAFETY: live handle, options and queue; the bindings live until `natives` drops.
            |rk, opts, q| unsafe {
                rd::rd_kafka_CreateAcls(rk, natives.0.as_mut_ptr(), natives.0.len(), opts, q)
            },
        )?;
        let mut count = 0;
        // SAFETY: a live CreateAcls event; the array belongs to it.
        let results = unsafe {
            rd::rd_kafka_CreateAcls_result_acls(rd::rd_kafka_event_CreateAcls_result(event.0), &mut count)
        };
        let mut failures = Vec::new();
        for (i, acl) in acls.iter().enumerate().take(count) {
            // SAFETY: `i < count` elements of the event's array; the error belongs to the event.
            let error = unsafe { rd::rd_kafka_acl_result_error(*results.add(i)) };
            if let Some((code, message)) = self.item_error(error) {
                failures.push(BindingFailure { binding: acl.clone(), code, message });
            }
        }
        self.failures(what, failures)
    }

    fn failures(&self, what: &str, failures: Vec<BindingFailure>) -> Result<(), AdminError> {
        if let Some(f) = failures.iter().find(|f| is_authorization_code(&f.code)) {
            return Err(AdminError::from_code(&self.principal, what, &f.code, &f.message, false));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(AdminError::Bindings { operation: what.into(), failures })
        }
    }

    fn describe_acls_blocking(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, AdminError> {
        let principal = match filter {
            AclFilter::Any => None,
            AclFilter::Principal(p) => Some(cstring(p)?),
        };
        let mut errstr = [0 as c_char; 256];
        // SAFETY: NULL name/host mean any; the principal outlives the call; the filter is
        // destroyed by its guard.
        let native = Bindings(vec![unsafe {
            rd::rd_kafka_AclBindingFilter_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
                ptr::null(),
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
                principal.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
                ptr::null(),
                rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        }]);
        if native.0[0].is_null() {
            return Err(AdminError::Invalid(format!("an ACL filter: {}", c_str(errstr.as_ptr()))));
        }
        let event = self.request(
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS,
            "describe ACLs",
            rd::RD_KAFKA_EVENT_DESCRIBEACLS_RESULT,
            // SAFETY: live handle, options, queue and filter.
            |rk, opts, q| unsafe { rd::rd_kafka_DescribeAcls(rk, native.0[0], opts, q) },
        )?;
        let mut count = 0;
        // SAFETY: a live DescribeAcls event; the array belongs to it.
        let acls = unsafe {
            rd::rd_kafka_DescribeAcls_result_acls(rd::rd_kafka_event_DescribeAcls_result(event.0), &mut count)
        };
        // SAFETY: `count` bindings owned by the live event.
        Ok((0..count).filter_map(|i| unsafe { read_binding(*acls.add(i)) }).collect())
    }

    fn delete_acls_blocking(&self, acls: &[AclBinding]) -> Result<Vec<AclBinding>, AdminError> {
        let what = "delete ACLs";
        let mut natives = Bindings(Vec::with_capacity(acls.len()));
        for acl in acls {
            natives.0.push(new_binding(acl, true)?);
        }
        let event = self.request(
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS,
            what,
            rd::RD_KAFKA_EVENT_DELETEACLS_RESULT,
            // SAFETY: live handle, options and queue; the filters live until `natives` drops.
            |rk, opts, q| unsafe {
                rd::rd_kafka_DeleteAcls(rk, natives.0.as_mut_ptr(), natives.0.len(), opts, q)
            },
        )?;
        let mut count = 0;
        // SAFETY: a live DeleteAcls event; the array belongs to it.
        let responses = unsafe {
            rd::rd_kafka_DeleteAcls_result_responses(
                rd::rd_kafka_event_DeleteAcls_result(event.0),
                &mut count,
            )
        };
        let (mut deleted, mut failures) = (Vec::new(), Vec::new());
        for (i, acl) in acls.iter().enumerate().take(count) {
            // SAFETY: `i < count` responses owned by the live event.
            let response = unsafe { *responses.add(i) };
            // SAFETY: as above.
            if let Some((code, message)) =
                self.item_error(unsafe { rd::rd_kafka_DeleteAcls_result_response_error(response) })
            {
                failures.push(BindingFailure { binding: acl.clone(), code, message });
                continue;
            }
            let mut matching = 0;
            // SAFETY: as above; the matching bindings belong to the event.
            let matches =
                unsafe { rd::rd_kafka_DeleteAcls_result_response_matching_acls(response, &mut matching) };
            // SAFETY: `matching` bindings owned by the live event.
            deleted.extend((0..matching).filter_map(|j| unsafe { read_binding(*matches.add(j)) }));
        }
        self.failures(what, failures)?;
        Ok(deleted)
    }

    fn alter_scram_blocking(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        password: Option<&str>,
        iterations: i32,
    ) -> Result<(), AdminError> {
        let what = if password.is_some() { "upsert a SCRAM credential" } else { "delete a SCRAM credential" };
        let name = cstring(user)?;
        // SAFETY: a NUL-terminated user name and a password slice that live across the call; no
        // salt (librdkafka makes a random one). The alteration is destroyed by its guard.
        let alteration = unsafe {
            match password {
                Some(p) => rd::rd_kafka_UserScramCredentialUpsertion_new(
                    name.as_ptr(),
                    mechanism.native(),
                    iterations,
                    p.as_ptr(),
                    p.len(),
                    ptr::null(),
                    0,
                ),
                None => rd::rd_kafka_UserScramCredentialDeletion_new(name.as_ptr(), mechanism.native()),
            }
        };
        let mut alterations = Alterations(vec![alteration]);
        if alteration.is_null() {
            return Err(AdminError::Invalid(format!("a SCRAM credential for {user}")));
        }
        let event = self.request(
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
            what,
            rd::RD_KAFKA_EVENT_ALTERUSERSCRAMCREDENTIALS_RESULT,
            // SAFETY: live handle, options, queue and alteration.
            |rk, opts, q| unsafe {
                rd::rd_kafka_AlterUserScramCredentials(rk, alterations.0.as_mut_ptr(), 1, opts, q)
            },
        )?;
        let mut count = 0;
        // SAFETY: a live AlterUserScramCredentials event; the array belongs to it.
        let responses = unsafe {
            rd::rd_kafka_AlterUserScramCredentials_result_responses(
                rd::rd_kafka_event_AlterUserScramCredentials_result(event.0),
                &mut count,
            )
        };
        for i in 0..count {
            // SAFETY: `i < count` responses owned by the live event.
            let error =
                unsafe { rd::rd_kafka_AlterUserScramCredentials_result_response_error(*responses.add(i)) };
            if let Some((code, message)) = self.item_error(error) {
                return Err(AdminError::from_code(
                    &self.principal,
                    &format!("{what} of {user}"),
                    &code,
                    &message,
                    false,
                ));
            }
        }
        Ok(())
    }

    fn describe_scram_blocking(
        &self,
        users: &[String],
    ) -> Result<Vec<(String, Vec<ScramCredential>)>, AdminError> {
        let names = users.iter().map(|u| cstring(u)).collect::<Result<Vec<_>, _>>()?;
        let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let event = self.request(
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEUSERSCRAMCREDENTIALS,
            "describe SCRAM credentials",
            rd::RD_KAFKA_EVENT_DESCRIBEUSERSCRAMCREDENTIALS_RESULT,
            // SAFETY: live handle, options and queue; the names live until `names` drops.
            |rk, opts, q| unsafe {
                rd::rd_kafka_DescribeUserScramCredentials(rk, pointers.as_mut_ptr(), pointers.len(), opts, q)
            },
        )?;
        let mut count = 0;
        // SAFETY: a live DescribeUserScramCredentials event; the array belongs to it.
        let descriptions = unsafe {
            rd::rd_kafka_DescribeUserScramCredentials_result_descriptions(
                rd::rd_kafka_event_DescribeUserScramCredentials_result(event.0),
                &mut count,
            )
        };
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: `i < count` descriptions owned by the live event, and what they hold.
            unsafe {
                let d = *descriptions.add(i);
                let user = c_str(rd::rd_kafka_UserScramCredentialsDescription_user(d));
                if let Some((code, message)) =
                    self.item_error(rd::rd_kafka_UserScramCredentialsDescription_error(d))
                {
                    if code == "RESOURCE_NOT_FOUND" {
                        out.push((user, Vec::new()));
                        continue;
                    }
                    return Err(AdminError::from_code(
                        &self.principal,
                        "describe SCRAM credentials",
                        &code,
                        &message,
                        false,
                    ));
                }
                let n = rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(d);
                let credentials = (0..n)
                    .filter_map(|j| {
                        let info = rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo(d, j);
                        let mechanism = match rd::rd_kafka_ScramCredentialInfo_mechanism(info) {
                            rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256 => {
                                ScramMechanism::Sha256
                            }
                            rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512 => {
                                ScramMechanism::Sha512
                            }
                            _ => return None,
                        };
                        Some(ScramCredential {
                            mechanism,
                            iterations: rd::rd_kafka_ScramCredentialInfo_iterations(info),
                        })
                    })
                    .collect();
                out.push((user, credentials));
            }
        }
        Ok(out)
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

/// A binding (or, with `filter`, an exact-match filter) for `acl`.
fn new_binding(acl: &AclBinding, filter: bool) -> Result<*mut rd::rd_kafka_AclBinding_t, AdminError> {
    let (name, principal, host) =
        (cstring(&acl.resource_name)?, cstring(&acl.principal)?, cstring(&acl.host)?);
    let mut errstr = [0 as c_char; 256];
    let args = (
        resource_type(acl.resource_type),
        pattern_type(acl.pattern_type),
        operation(acl.operation),
        permission(acl.permission),
    );
    // SAFETY: NUL-terminated strings that live across the call (librdkafka copies them) and a
    // writable error buffer of the size given.
    let made = unsafe {
        let new = if filter { rd::rd_kafka_AclBindingFilter_new } else { rd::rd_kafka_AclBinding_new };
        new(
            args.0,
            name.as_ptr(),
            args.1,
            principal.as_ptr(),
            host.as_ptr(),
            args.2,
            args.3,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if made.is_null() {
        return Err(AdminError::Invalid(format!("ACL {acl}: {}", c_str(errstr.as_ptr()))));
    }
    Ok(made)
}

/// A binding the broker reported, as a value; `None` (and a warning) for kinds this crate does not
/// model (`CLUSTER_ACTION`, …).
///
/// # Safety
/// `b` is a live binding owned by a live event.
unsafe fn read_binding(b: *const rd::rd_kafka_AclBinding_t) -> Option<AclBinding> {
    use rd::rd_kafka_AclOperation_t as O;
    use rd::rd_kafka_ResourceType_t as R;
    // SAFETY: as the caller promises.
    let (rt, name, pt, principal, host, op, perm) = unsafe {
        (
            rd::rd_kafka_AclBinding_restype(b),
            c_str(rd::rd_kafka_AclBinding_name(b)),
            rd::rd_kafka_AclBinding_resource_pattern_type(b),
            c_str(rd::rd_kafka_AclBinding_principal(b)),
            c_str(rd::rd_kafka_AclBinding_host(b)),
            rd::rd_kafka_AclBinding_operation(b),
            rd::rd_kafka_AclBinding_permission_type(b),
        )
    };
    let resource_type = match rt {
        R::RD_KAFKA_RESOURCE_TOPIC => Some(ResourceType::Topic),
        R::RD_KAFKA_RESOURCE_GROUP => Some(ResourceType::Group),
        R::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => Some(ResourceType::TransactionalId),
        R::RD_KAFKA_RESOURCE_BROKER => Some(ResourceType::Cluster),
        _ => None,
    };
    let pattern_type = match pt {
        rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL => Some(PatternType::Literal),
        rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => Some(PatternType::Prefixed),
        _ => None,
    };
    let operation = match op {
        O::RD_KAFKA_ACL_OPERATION_ALL => Some(Operation::All),
        O::RD_KAFKA_ACL_OPERATION_READ => Some(Operation::Read),
        O::RD_KAFKA_ACL_OPERATION_WRITE => Some(Operation::Write),
        O::RD_KAFKA_ACL_OPERATION_CREATE => Some(Operation::Create),
        O::RD_KAFKA_ACL_OPERATION_DELETE => Some(Operation::Delete),
        O::RD_KAFKA_ACL_OPERATION_ALTER => Some(Operation::Alter),
        O::RD_KAFKA_ACL_OPERATION_DESCRIBE => Some(Operation::Describe),
        O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS => Some(Operation::DescribeConfigs),
        O::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS => Some(Operation::AlterConfigs),
        O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE => Some(Operation::IdempotentWrite),
        _ => None,
    };
    let permission = match perm {
        rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW => Some(Permission::Allow),
        rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY => Some(Permission::Deny),
        _ => None,
    };
    match (resource_type, pattern_type, operation, permission) {
        (Some(resource_type), Some(pattern_type), Some(operation), Some(permission)) => Some(AclBinding {
            resource_type,
            resource_name: name,
            pattern_type,
            principal,
            host,
            operation,
            permission,
        }),
        _ => {
            tracing::warn!(
                resource = name,
                principal,
                ?rt,
                ?pt,
                ?op,
                ?perm,
                "an ACL of a kind the estate does not model is left out (and never pruned)"
            );
            None
        }
    }
}

fn resource_type(r: ResourceType) -> rd::rd_kafka_ResourceType_t {
    use rd::rd_kafka_ResourceType_t as R;
    match r {
        ResourceType::Topic => R::RD_KAFKA_RESOURCE_TOPIC,
        ResourceType::Group => R::RD_KAFKA_RESOURCE_GROUP,
        ResourceType::TransactionalId => R::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
        // librdkafka calls Kafka's CLUSTER resource type (4) BROKER.
        ResourceType::Cluster => R::RD_KAFKA_RESOURCE_BROKER,
    }
}

fn pattern_type(p: PatternType) -> rd::rd_kafka_ResourcePatternType_t {
    match p {
        PatternType::Literal => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        PatternType::Prefixed => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
    }
}

fn operation(o: Operation) -> rd::rd_kafka_AclOperation_t {
    use rd::rd_kafka_AclOperation_t as O;
    match o {
        Operation::All => O::RD_KAFKA_ACL_OPERATION_ALL,
        Operation::Read => O::RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => O::RD_KAFKA_ACL_OPERATION_WRITE,
        Operation::Create => O::RD_KAFKA_ACL_OPERATION_CREATE,
        Operation::Delete => O::RD_KAFKA_ACL_OPERATION_DELETE,
        Operation::Alter => O::RD_KAFKA_ACL_OPERATION_ALTER,
        Operation::Describe => O::RD_KAFKA_ACL_OPERATION_DESCRIBE,
        Operation::DescribeConfigs => O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
        Operation::AlterConfigs => O::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS,
        Operation::IdempotentWrite => O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
    }
}

fn permission(p: Permission) -> rd::rd_kafka_AclPermissionType_t {
    match p {
        Permission::Allow => rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
        Permission::Deny => rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY,
    }
}
