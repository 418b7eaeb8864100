//! # backbone
//!
//! A Rust framework for building microservices on Apache Kafka: events carry state between services,
//! HTTP answers queries. The framework makes the right thing the default.
//!
//! ## Quick start: declare a service and its topics
//!
//! ```
//! use backbone::{Service, topic::TopicSpec};
//!
//! let order_created = TopicSpec::public("orders", "order-created", 1).partitions(6).build()?;
//! let orders = Service::new("orders").owns(&order_created).spec()?;
//! println!("{}", orders.to_json());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`topic`]: topics as code, the naming convention (`<owner>.public.<event>-v<N>`,
//!   `<owner>.private.<name>`) and durable defaults (replication 3, `min.insync.replicas` 2).
//! - [`service`]: a service's declaration and the ownership rules (single writer, private topics stay
//!   private), checked before anything touches Kafka.
//! - [`publish`]: durable idempotent publishing (`acks=all`, idempotence on, keyed order), with
//!   headers for event type, producer, correlation id and W3C `traceparent`.
//! - [`config`]: configuration from the environment, one clear error per bad value.

pub mod config;
pub mod error;
pub mod health;
pub mod provision;
pub mod publish;
pub mod service;
pub mod topic;
pub mod trace;

pub use config::{Config, ConfigError, Profile};
pub use error::{Error, Result};
pub use provision::{Plan, ProvisionError, Provisioner};
pub use publish::{Delivery, Outgoing, PublishError, Publisher};
pub use service::{Running, Service, ServiceSpec};
pub use topic::{TopicError, TopicSpec};
