//! The poll-mode data plane: DPDK ports, the packet path, and the partition logs.
//!
//! - [`net`]: Ethernet/ARP/IPv4/ICMP/UDP headers over mbuf bytes.
//! - [`lcore`]: the burst loop that owns a port queue and its partitions.
//! - [`ipc`]: shared-memory channels of co-located clients, polled like a NIC queue.
//! - `rdma` (feature `rdma`): RC queue pairs polled like a NIC queue, one-sided READs.
//! - [`log`]: partition logs: segments in hugepage memory, the flusher, recovery.
//! - [`topics`]: the topic manifest, the lcore's topic table, the admin thread.
//! - [`service`]: serving a native frame from any transport (UDP, IPC, RDMA).
//! - [`node`]: start-up and shut-down of a whole node.
//! - [`echo`]: echo mode, the port's bare reflection (a benchmark baseline).
//! - [`control`]: the shared memory with the control plane (CnC rings, counters page).

pub mod control;
pub mod counters;
pub mod echo;
pub mod idle;
pub mod ipc;
pub mod lcore;
pub mod log;
pub mod net;
pub mod node;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod replica;
pub mod service;
pub mod topics;
