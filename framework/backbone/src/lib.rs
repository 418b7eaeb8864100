//! # backbone
//!
//! A Rust framework for building microservices on Apache Kafka: events carry state between services,
//! HTTP answers queries. The framework makes the right thing the default: durable idempotent producers,
//! partition-balanced consumer groups, schema-checked topics, private and public topics.
//!
//! This crate is being built issue by issue; see the repository README for what is here today.
