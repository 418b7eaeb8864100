//! Client quotas per user (`DescribeClientQuotas`, `AlterClientQuotas`) over a [`Connection`] of
//! our own: librdkafka has no client-quota API.

use std::collections::BTreeMap;

use backbone::service::Quotas;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;

use super::error::AdminError;
use super::plan::{QuotaChange, QuotaKey};
use super::wire::{Connection, Settings};

/// `match_type` 2: every entity with a name of this type (not the default entity).
const MATCH_SPECIFIED: i8 = 2;

/// The quotas of every user that has one (the default user's quota aside), per user name.
pub(crate) async fn describe(settings: &Settings) -> Result<BTreeMap<String, Quotas>, AdminError> {
    let mut conn = Connection::open(settings).await?;
    let request = DescribeClientQuotasRequest::default()
        .with_components(vec![
            ComponentData::default()
                .with_entity_type(StrBytes::from_static_str("user"))
                .with_match_type(MATCH_SPECIFIED)
                .with_match(None),
        ])
        // Entities of exactly one component: a user, not a user and client id together.
        .with_strict(true);
    let answer = conn.call(&request).await?;
    if answer.error_code != 0 {
        return Err(conn.broker_error(
            "describe client quotas",
            answer.error_code,
            answer.error_message.as_ref(),
        ));
    }
    let mut out: BTreeMap<String, Quotas> = BTreeMap::new();
    for entry in answer.entries.unwrap_or_default() {
        let [entity] = entry.entity.as_slice() else { continue };
        let (Some(user), true) = (&entity.entity_name, entity.entity_type.as_str() == "user") else {
            continue;
        };
        let quotas = out.entry(user.to_string()).or_default();
        for value in &entry.values {
            match QuotaKey::from_name(value.key.as_str()) {
                Some(key) => key.set(quotas, Some(value.value)),
                None => tracing::debug!(user = %user, key = %value.key, "a quota the estate does not model"),
            }
        }
    }
    out.retain(|_, q| !q.is_unlimited());
    Ok(out)
}

/// Sets or removes quotas, one entry per user. Every user's result is checked: the first refusal
/// is returned (an authorization refusal as [`AdminError::Unauthorized`]).
pub(crate) async fn alter(settings: &Settings, changes: &[QuotaChange]) -> Result<(), AdminError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut per_user: BTreeMap<&str, Vec<OpData>> = BTreeMap::new();
    for c in changes {
        if let Some(v) = c.to
            && !(v.is_finite() && v > 0.0)
        {
            return Err(AdminError::Invalid(format!(
                "quota {} of {}: {v} is not a positive number",
                c.key.name(),
                c.user
            )));
        }
        per_user.entry(&c.user).or_default().push(
            OpData::default()
                .with_key(StrBytes::from_static_str(c.key.name()))
                .with_value(c.to.unwrap_or_default())
                .with_remove(c.to.is_none()),
        );
    }
    let entries = per_user
        .into_iter()
        .map(|(user, ops)| {
            EntryData::default()
                .with_entity(vec![
                    EntityData::default()
                        .with_entity_type(StrBytes::from_static_str("user"))
                        .with_entity_name(Some(StrBytes::from_string(user.to_owned()))),
                ])
                .with_ops(ops)
        })
        .collect();
    let mut conn = Connection::open(settings).await?;
    let answer = conn.call(&AlterClientQuotasRequest::default().with_entries(entries)).await?;
    for entry in &answer.entries {
        if entry.error_code != 0 {
            let user = entry.entity.first().and_then(|e| e.entity_name.as_ref()).map(|n| n.to_string());
            let what = format!("alter the client quotas of user {}", user.unwrap_or_default());
            return Err(conn.broker_error(&what, entry.error_code, entry.error_message.as_ref()));
        }
    }
    Ok(())
}

/// Whether the connection's principal may describe ACLs: a DescribeAcls that matches nothing,
/// checked for its error code. librdkafka 2.12.1 drops that code (`rd_kafka_DescribeAclsResponse_parse`
/// reads it and returns success with no ACLs), so without this probe a principal without DESCRIBE
/// on the cluster would see an empty cluster rather than a refusal.
pub(crate) async fn probe_describe_acls(settings: &Settings) -> Result<(), AdminError> {
    use kafka_protocol::messages::DescribeAclsRequest;
    let mut conn = Connection::open(settings).await?;
    // Resource type ANY (1), pattern ANY (1), operation ANY (1), permission ANY (1), and a
    // principal no one has.
    let request = DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1)
        .with_principal_filter(Some(StrBytes::from_static_str("User:backbone-estate-probe/none")));
    let answer = conn.call(&request).await?;
    if answer.error_code != 0 {
        return Err(conn.broker_error("describe ACLs", answer.error_code, answer.error_message.as_ref()));
    }
    Ok(())
}
