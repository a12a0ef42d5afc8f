//! The admin API: newline-delimited JSON over a Unix socket (`controlplane.admin_socket`).
//!
//! - [`request`]: the CLI's blocking client, one request per connection.
//! - [`AdminServer`]: the control plane's side. List, describe and status are answered from
//!   the shared counters file (its labels name every topic and partition); create, delete
//!   and alter are validated here, then carried out by the data plane through the command
//!   ring ([`crate::link::Link`]).
//! - [`serve_cluster`]: the same protocol on TCP (`controlplane.cluster_listen`), for the
//!   other brokers of a cluster; [`ask_broker`] is their side: `cluster_create_topic` and
//!   `cluster_delete_topic` reach every broker through it.

mod client;
mod forward;
mod server;
mod types;

pub use client::{request, request_within, AdminError, CLIENT_RESPONSE_TIMEOUT_MS};
pub use forward::{ask_broker, ForwardError, CONNECT_TIMEOUT_MS};
pub use server::{
    bind, bind_cluster_listener, handle, serve, serve_cluster, set_configs_here, AdminServer,
};
pub use types::{
    codes, unpack_broker_ids, AssignedTopic, BrokerAnswer, ClusterVerdict, GroupDescription,
    GroupMember, GroupPartition, GroupSummary, LcoreStatus, NodeStatus, PartitionInfo, PortStatus,
    QuorumView, Request, Response, TopicConfigEntry, TopicDescription, TopicSummary,
    UserCredentialInfo, UserSummary,
};

/// Longest request line the server reads, in bytes.
pub const REQUEST_BYTES_MAX: usize = 64 << 10;
/// Longest response line the client reads, in bytes (a status of many partitions).
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
