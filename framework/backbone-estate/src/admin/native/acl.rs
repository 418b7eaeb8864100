//! ACL requests: CreateAcls, DescribeAcls, DeleteAcls, and ACL bindings to and from librdkafka's.

use std::ffi::c_char;
use std::ptr;

use rdkafka::bindings as rd;

use super::{AclFilter, Bindings, NativeAdmin, c_str, cstring};
use crate::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use crate::admin::error::{AdminError, BindingFailure, is_authorization_code};

impl NativeAdmin {
    pub(super) fn create_acls_blocking(&self, acls: &[AclBinding]) -> Result<(), AdminError> {
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

    pub(super) fn describe_acls_blocking(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, AdminError> {
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

    pub(super) fn delete_acls_blocking(&self, acls: &[AclBinding]) -> Result<Vec<AclBinding>, AdminError> {
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
