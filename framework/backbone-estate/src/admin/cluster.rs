//! A connection to the cluster the estate is applied to: its ACLs, SCRAM users and client quotas,
//! read, planned against and changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use backbone::service::Quotas;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use super::error::AdminError;
use super::native::{AclFilter, NativeAdmin, ScramCredential, ScramMechanism};
use super::plan::{Current, Plan, QuotaChange, is_estate_acl, is_estate_user};
use super::quota;
use super::wire::{Connection, Settings};
use crate::acl::AclBinding;

/// How long one admin request may take before it fails with [`AdminError::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster, as an administrator sees it. Connect with the same [`backbone::Config`] the CLI
/// and services use ([`Cluster::connect`]); the principal needs ALTER and DESCRIBE on the cluster
/// (or to be a super user).
pub struct Cluster {
    native: NativeAdmin,
    settings: Settings,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.settings.bootstrap)
            .field("principal", &self.settings.principal())
            .finish()
    }
}

impl Cluster {
    /// Connects with `config`'s bootstrap servers and security (through
    /// [`backbone::Config::client_config`], so every property it sets applies), and checks that the
    /// brokers answer and accept the credentials: a wrong password fails here, naming the principal.
    pub async fn connect(config: &backbone::Config) -> Result<Self, AdminError> {
        Self::connect_with(config.client_config("backbone-estate"), DEFAULT_TIMEOUT).await
    }

    /// Connects with librdkafka properties (`bootstrap.servers`, `security.protocol`, `sasl.*`,
    /// `ssl.ca.location`, …), each request bounded by `timeout`.
    pub async fn connect_with(client: rdkafka::ClientConfig, timeout: Duration) -> Result<Self, AdminError> {
        let settings = Settings::from_client_config(&client, timeout)?;
        // Reach a broker and authenticate now, so a bad address or password is a clear error at once.
        drop(Connection::open(&settings).await?);
        let admin: AdminClient<DefaultClientContext> = client
            .create()
            .map_err(|e| AdminError::Invalid(format!("an admin client from the configuration: {e}")))?;
        Ok(Self { native: NativeAdmin::new(admin, settings.principal(), timeout), settings })
    }

    /// The bytes each partition takes on disk (the largest of its replicas), by topic and
    /// partition, asking each of `brokers` (`host:port`, as metadata advertises them) with
    /// `DescribeLogDirs`. The principal needs DESCRIBE on the cluster.
    pub async fn partition_sizes(
        &self,
        brokers: &[String],
    ) -> Result<BTreeMap<(String, i32), i64>, AdminError> {
        super::log_dirs::sizes(&self.settings, brokers).await
    }

    /// The principal this connection authenticated as (`User:<name>`).
    pub fn principal(&self) -> String {
        self.settings.principal()
    }

    /// Creates `acls` (creating an existing one changes nothing).
    pub async fn create_acls(&self, acls: &[AclBinding]) -> Result<(), AdminError> {
        self.native.create_acls(acls).await
    }

    /// The ACLs that `filter` matches. A principal that may not describe them gets
    /// [`AdminError::Unauthorized`], never an empty list.
    pub async fn describe_acls(&self, filter: AclFilter) -> Result<Vec<AclBinding>, AdminError> {
        quota::probe_describe_acls(&self.settings).await?;
        self.native.describe_acls(filter).await
    }

    /// Deletes exactly `acls`; returns those the cluster had.
    pub async fn delete_acls(&self, acls: &[AclBinding]) -> Result<Vec<AclBinding>, AdminError> {
        self.native.delete_acls(acls).await
    }

    /// Creates or replaces `user`'s SCRAM credential for `mechanism` (a random salt per call).
    pub async fn upsert_scram_credentials(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        password: &str,
        iterations: i32,
    ) -> Result<(), AdminError> {
        self.native.alter_scram(user, mechanism, Some(password.to_owned()), iterations).await
    }

    /// Deletes `user`'s SCRAM credential for `mechanism`.
    pub async fn delete_scram_credentials(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<(), AdminError> {
        self.native.alter_scram(user, mechanism, None, 0).await
    }

    /// The SCRAM credentials (mechanism and iterations) of each of `users`; empty for a user
    /// without any.
    pub async fn describe_scram_credentials(
        &self,
        users: &[String],
    ) -> Result<BTreeMap<String, Vec<ScramCredential>>, AdminError> {
        Ok(self.native.describe_scram(users).await?.into_iter().collect())
    }

    /// Every user's client quotas (users without any are absent).
    pub async fn describe_quotas(&self) -> Result<BTreeMap<String, Quotas>, AdminError> {
        quota::describe(&self.settings).await
    }

    /// Sets or removes quotas.
    pub async fn alter_quotas(&self, changes: &[QuotaChange]) -> Result<(), AdminError> {
        quota::alter(&self.settings, changes).await
    }

    /// What the cluster has that concerns the estate whose services are `prefixes` (`orders`, or
    /// `orders.`): ACLs of its principals or on its resources, and its users' quotas.
    pub async fn current(&self, prefixes: &[String]) -> Result<Current, AdminError> {
        let acls: BTreeSet<AclBinding> = self
            .describe_acls(AclFilter::Any)
            .await?
            .into_iter()
            .filter(|acl| is_estate_acl(acl, prefixes))
            .collect();
        let mut quotas = self.describe_quotas().await?;
        quotas.retain(|user, _| is_estate_user(user, prefixes));
        Ok(Current { acls, quotas })
    }

    /// The plan that brings the cluster to the desired ACLs and quotas ([`Plan::compute`] against
    /// everything the cluster has: a desired ACL or quota outside the estate's prefixes is seen
    /// too, so it is not planned again once applied; pruning still touches only the estate's).
    pub async fn plan(
        &self,
        desired_acls: &BTreeSet<AclBinding>,
        desired_quotas: &BTreeMap<String, Quotas>,
        prefixes: &[String],
        prune: bool,
    ) -> Result<Plan, AdminError> {
        let current = Current {
            acls: self.describe_acls(AclFilter::Any).await?.into_iter().collect(),
            quotas: self.describe_quotas().await?,
        };
        Ok(Plan::compute(desired_acls, desired_quotas, &current, prefixes, prune))
    }

    /// Applies `plan`: ACLs are created first (a service never loses access it keeps), then stale
    /// ones deleted, then quotas changed. Stops at the first error; what was done stays done, and
    /// planning again shows what is left.
    pub async fn apply(&self, plan: &Plan) -> Result<(), AdminError> {
        self.create_acls(&plan.create_acls).await?;
        self.delete_acls(&plan.delete_acls).await?;
        self.alter_quotas(&plan.quotas).await
    }
}
