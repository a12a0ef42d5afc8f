//! Safe layer over DPDK 22.11: RAII owners, no `unsafe` for callers, and no heap
//! allocation on the burst path ([`Port::rx_burst`], [`Port::tx_burst`],
//! [`Mempool::alloc`], [`Mbuf`] access, [`MbufBurst`]).
//!
//! Lifetimes without lifetime parameters: every [`Mempool`] and [`Port`] holds a
//! reference count on the EAL, and `rte_eal_cleanup` runs when the last of them
//! (the [`Eal`] itself included) is dropped. A mempool dropped while some of its
//! mbufs are still out is leaked on purpose (with its EAL reference), so a late
//! `Mbuf` drop never touches freed memory.

mod burst;
mod eal;
mod error;
mod mbuf;
mod mempool;
mod port;
mod ring_pair;

pub use burst::{Drain, MbufBurst};
pub use eal::Eal;
pub use error::DpdkError;
pub use mbuf::Mbuf;
pub use mempool::{Mempool, SOCKET_ID_ANY};
pub use port::{AppliedPortConfig, LinkStatus, Port, PortConfig, PortStats};
pub use ring_pair::ring_port_pair;
