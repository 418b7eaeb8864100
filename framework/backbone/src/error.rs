//! The top-level error: opaque, with the area's error inside.

use std::fmt;

/// Any error backbone returns: configuration, topics and ownership, provisioning, publishing.
///
/// Match on [`Error::kind`] or downcast with [`Error::as_config`] and friends; ask
/// [`Error::is_retriable`] whether trying again can help.
#[derive(Debug)]
pub struct Error {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Config(crate::config::ConfigError),
    Topic(crate::topic::TopicError),
    Provision(crate::provision::ProvisionError),
    Publish(crate::publish::PublishError),
    Schema(crate::schema::SchemaError),
}

/// Which area an [`Error`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Configuration ([`crate::config::ConfigError`]).
    Config,
    /// Topic declarations and ownership ([`crate::topic::TopicError`]).
    Topic,
    /// Topic provisioning ([`crate::provision::ProvisionError`]).
    Provision,
    /// Publishing ([`crate::publish::PublishError`]).
    Publish,
    /// Schemas and the registry ([`crate::schema::SchemaError`]).
    Schema,
}

impl Error {
    /// The area this error comes from.
    pub fn kind(&self) -> ErrorKind {
        match self.inner {
            Inner::Config(_) => ErrorKind::Config,
            Inner::Topic(_) => ErrorKind::Topic,
            Inner::Provision(_) => ErrorKind::Provision,
            Inner::Publish(_) => ErrorKind::Publish,
            Inner::Schema(_) => ErrorKind::Schema,
        }
    }

    /// Whether retrying the operation may succeed.
    pub fn is_retriable(&self) -> bool {
        match &self.inner {
            Inner::Config(e) => e.is_retriable(),
            Inner::Topic(e) => e.is_retriable(),
            Inner::Provision(e) => e.is_retriable(),
            Inner::Publish(e) => e.is_retriable(),
            Inner::Schema(e) => e.is_retriable(),
        }
    }

    /// The configuration error inside, if that is what this is.
    pub fn as_config(&self) -> Option<&crate::config::ConfigError> {
        match &self.inner {
            Inner::Config(e) => Some(e),
            _ => None,
        }
    }

    /// The topic error inside, if that is what this is.
    pub fn as_topic(&self) -> Option<&crate::topic::TopicError> {
        match &self.inner {
            Inner::Topic(e) => Some(e),
            _ => None,
        }
    }

    /// The provisioning error inside, if that is what this is.
    pub fn as_provision(&self) -> Option<&crate::provision::ProvisionError> {
        match &self.inner {
            Inner::Provision(e) => Some(e),
            _ => None,
        }
    }

    /// The schema error inside, if that is what this is.
    pub fn as_schema(&self) -> Option<&crate::schema::SchemaError> {
        match &self.inner {
            Inner::Schema(e) => Some(e),
            _ => None,
        }
    }

    /// The publish error inside, if that is what this is.
    pub fn as_publish(&self) -> Option<&crate::publish::PublishError> {
        match &self.inner {
            Inner::Publish(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Config(e) => e.fmt(f),
            Inner::Topic(e) => e.fmt(f),
            Inner::Provision(e) => e.fmt(f),
            Inner::Publish(e) => e.fmt(f),
            Inner::Schema(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner {
            Inner::Config(e) => Some(e),
            Inner::Topic(e) => Some(e),
            Inner::Provision(e) => Some(e),
            Inner::Publish(e) => Some(e),
            Inner::Schema(e) => Some(e),
        }
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Self {
        Self { inner: Inner::Config(e) }
    }
}

impl From<crate::topic::TopicError> for Error {
    fn from(e: crate::topic::TopicError) -> Self {
        Self { inner: Inner::Topic(e) }
    }
}

impl From<crate::provision::ProvisionError> for Error {
    fn from(e: crate::provision::ProvisionError) -> Self {
        Self { inner: Inner::Provision(e) }
    }
}

/// `Result<T, backbone::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::publish::PublishError> for Error {
    fn from(e: crate::publish::PublishError) -> Self {
        Self { inner: Inner::Publish(e) }
    }
}

impl From<crate::schema::SchemaError> for Error {
    fn from(e: crate::schema::SchemaError) -> Self {
        Self { inner: Inner::Schema(e) }
    }
}
