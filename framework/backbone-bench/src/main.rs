//! Benchmarks of backbone against raw rdkafka on the same broker; the publishing issue fills it.

fn main() {}
