//! The admin API: newline-delimited JSON over a Unix socket (`controlplane.admin_socket`).
//!
//! - [`request`]: the CLI's blocking client, one request per connection.
//! - [`AdminServer`]: the control plane's side. List, describe and status are answered from
//!   the shared counters file (its labels name every topic and partition); create, delete
//!   and alter are validated here, then carried out by the data plane through the command
//!   ring ([`crate::link::Link`]).

mod client;
mod server;
mod types;

pub use client::{request, AdminError, CLIENT_RESPONSE_TIMEOUT_MS};
pub use server::{bind, handle, serve, AdminServer};
pub use types::{
    codes, LcoreStatus, NodeStatus, PartitionInfo, PortStatus, Request, Response, TopicDescription,
    TopicSummary,
};

/// Longest request line the server reads, in bytes.
pub const REQUEST_BYTES_MAX: usize = 64 << 10;
/// Longest response line the client reads, in bytes (a status of many partitions).
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
