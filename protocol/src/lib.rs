//! Precursor wire formats. Pure functions over byte slices: no I/O, no allocation on the
//! decode paths the data plane uses.
//!
//! - [`frame`]: the native frame (DESIGN.md §4) carried over UDP, RDMA SEND and IPC rings.
//! - [`record_batch`]: Kafka RecordBatch v2, the unit stored, replicated and served.
//! - [`varint`]: zig-zag varints as Kafka's record format uses them.
//! - [`compression`]: the codecs a batch's attributes may name.
//! - [`rdma`]: the RDMA transport's connection handshake (rdma_cm private data).
//! - [`replication`]: ReplicaFetch / ReplicaData, partition replication between data planes.
//! - [`command`]: commands and events of the `cnc` rings between the planes.
//! - [`topic_config`]: the Kafka topic configurations supported, parsed and validated.
//! - [`counter_kind`]: kinds of the shared counters and their Prometheus names.

pub mod command;
pub mod compression;
pub mod counter_kind;
pub mod frame;
pub mod rdma;
pub mod record_batch;
pub mod replication;
pub mod topic_config;
pub mod varint;
