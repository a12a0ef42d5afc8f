//! `precursor-bench`: the benchmark harness that puts Precursor beside its peers.
//!
//! - [`limits`]: the machine's limit, measured in the same run (memcpy bandwidth, a bare
//!   shared-memory ping-pong between two pinned cores).
//! - [`harness`]: throughput and fixed-rate latency runs with coordinated-omission
//!   correction ([`latency`]), the same for every system.
//! - [`peers`]: NATS JetStream and Redis Streams adapters at matched durability.
//! - [`kafka`]: Precursor through its Kafka gateway, driven by librdkafka.
//! - [`metadata`]: the metadata quorum's commit latency against the partitions it holds.
//! - [`result`]: the one JSON schema every run prints (Precursor's CLI prints it too).
//! - [`report`], [`plot`]: docs/benchmarks.md tables, SVG plots, the one-line summary.
//!
//! bench/compare.sh drives it; docs/benchmarks.md explains the method.

pub mod harness;
pub mod kafka;
pub mod latency;
pub mod limits;
pub mod metadata;
pub mod peers;
pub mod plot;
pub mod report;
pub mod result;
