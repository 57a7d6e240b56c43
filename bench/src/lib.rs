//! fjord-bench: load generation and benchmarks for fjord.
//!
//! `fjord-bench engine ...` drives the storage engine in process, with no
//! network or Kafka protocol in the way: every append is issued on the shard
//! that owns its partition, so the figures describe the engine, not the
//! cross-shard mesh. `fjord-bench produce|consume` speak the Kafka protocol
//! to any Kafka-compatible broker. `fjord-bench run` runs `OpenMessaging`-
//! Benchmark-style workloads (producers and consumers, target rates,
//! publish and end-to-end latency) and `compare` sets results side by side.
//! Results print as text and optionally as JSON.

#![allow(
    clippy::cast_precision_loss,
    reason = "byte counts and durations become f64 only for reporting"
)]

pub mod engine;
pub mod error;
pub mod latency;
pub mod load;
pub mod system;
pub mod wire;
pub mod workload;

pub use error::Error;
