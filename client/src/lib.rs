//! Precursor client: a producer and a consumer speaking the native protocol
//! (`precursor_protocol::frame`) to a data plane over kernel UDP sockets.
//!
//! - [`Producer`]: batches messages per partition into Kafka RecordBatch v2, sends each batch
//!   as one Produce frame, retransmits until acknowledged; idempotent (producer id +
//!   per-partition sequence numbers) so retransmits never duplicate.
//! - [`Consumer`]: fetches whole batches per assigned partition, retransmits lost fetches,
//!   decodes records and keeps positions.
//! - [`ping`]: is the broker there, and how far away.
//! - [`bench_payload`]: self-checking payloads and an in-order verifier for benchmarks.
//!
//! Everything is blocking-free unless a call says it waits; nothing needs an async runtime.
//!
//! ```no_run
//! use std::time::Duration;
//! use precursor_client::{
//!     ConsumedRecord, Consumer, ConsumerConfig, Producer, ProducerConfig, StartOffset,
//! };
//!
//! # fn main() -> Result<(), precursor_client::ClientError> {
//! let mut producer = Producer::new(ProducerConfig::default())?;
//! producer.send("orders", None, Some(b"customer-7"), b"hello")?;
//! producer.flush(Duration::from_secs(5))?;
//! producer.drain_deliveries(|d| println!("{:?} -> {:?} {:?}", d.id, d.offset, d.error));
//!
//! let mut consumer = Consumer::new(ConsumerConfig::default())?;
//! consumer.assign("orders", None, StartOffset::Earliest)?;
//! let mut records: Vec<ConsumedRecord> = Vec::new();
//! while !consumer.caught_up() {
//!     consumer.poll(Duration::from_millis(100), &mut records)?;
//! }
//! # Ok(())
//! # }
//! ```

pub mod bench_payload;
mod consumer;
mod error;
pub mod ipc;
mod leaders;
pub mod log_map;
mod metadata;
pub mod partitioner;
mod producer;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod retransmit;
mod transport;

use std::net::SocketAddr;
use std::time::Duration;

use precursor_protocol::frame::{FrameHeader, Opcode};

pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset, StartOffset};
pub use error::{BrokerAddress, ClientError};
pub use ipc::{IpcConfig, IpcSession};
pub use precursor_protocol::compression::Compression;
pub use precursor_protocol::frame::{Acks, ErrorCode};
pub use producer::{Delivery, MessageId, Producer, ProducerConfig, ProducerStats};
pub use transport::{TransportStats, BROKERS_MAX};

use retransmit::RetransmitSchedule;
use transport::{BrokerSlot, Transport};

/// The data plane's address in the embedded default configuration (its TAP port).
pub const DEFAULT_BROKER: &str = "10.77.0.2:9190";

/// The transport a client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// Kernel UDP socket to `ClientConfig::broker` (the data plane's DPDK port).
    Udp,
    /// Shared-memory channel to a data plane on this host: no system call per message.
    Ipc(IpcConfig),
    /// An RDMA reliable connection (feature `rdma`): frames as SEND/RECV.
    #[cfg(feature = "rdma")]
    Rdma(rdma::RdmaConfig),
}

/// How to reach a broker, and how patiently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How frames travel: UDP to `broker`, or an IPC channel.
    pub transport: TransportKind,
    /// The data plane's UDP address: the bootstrap broker. Metadata from a broker of a
    /// cluster names each partition's leader and where it is; producer and consumer send
    /// each partition's requests there (UDP only: IPC and RDMA reach this host's data plane).
    pub broker: SocketAddr,
    /// More bootstrap brokers, asked in turn when `broker` does not answer (UDP only).
    pub bootstrap_brokers: Vec<SocketAddr>,
    /// Local address to bind; `None` lets the kernel choose.
    pub bind: Option<SocketAddr>,
    /// Wait this long for an answer before the first retransmission; doubles per try.
    pub request_timeout_ms: u64,
    /// The longest wait between two retransmissions.
    pub retransmit_backoff_max_ms: u64,
    /// Give up on a request (report an error) this long after it was made.
    pub delivery_timeout_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            transport: TransportKind::Udp,
            broker: DEFAULT_BROKER
                .parse()
                .expect("DEFAULT_BROKER is an address"),
            bootstrap_brokers: Vec::new(),
            bind: None,
            request_timeout_ms: 20,
            retransmit_backoff_max_ms: 500,
            delivery_timeout_ms: 10_000,
        }
    }
}

/// Payload of a Ping: eight bytes the Pong must echo.
const PING_PAYLOAD_BYTES: usize = 8;

/// Sends a Ping (to `config.broker`) and returns the round trip of the transmission that was answered.
/// Retransmits on the config's schedule; `ClientError::NoAnswer` when nobody answers.
pub fn ping(config: &ClientConfig) -> Result<Duration, ClientError> {
    let mut transport = Transport::open(config)?;
    let schedule = RetransmitSchedule::from_config(config);
    let nonce = producer::random_positive_i64() as u64;
    let payload = nonce.to_le_bytes();
    let request = FrameHeader::new(Opcode::Ping, 0, 0, PING_PAYLOAD_BYTES);
    let (answer, round_trip) = transport.exchange(
        BrokerSlot(0),
        &schedule,
        "ping",
        &request,
        &payload,
        &mut |_, _, _| {},
    )?;
    if answer.header.error != 0 || answer.header.opcode != Opcode::Pong {
        return Err(ClientError::from_broker(
            "ping",
            answer.header.error,
            &answer.payload,
        ));
    }
    if answer.payload != payload {
        return Err(ClientError::Protocol {
            detail: "pong does not echo the ping's payload".to_string(),
        });
    }
    Ok(round_trip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn default_config_points_at_the_embedded_data_plane() {
        let config = ClientConfig::default();
        assert_eq!(config.broker.to_string(), DEFAULT_BROKER);
        assert!(config.request_timeout_ms <= config.retransmit_backoff_max_ms);
        assert!(config.retransmit_backoff_max_ms <= config.delivery_timeout_ms);
    }

    /// A socket that receives and never answers: the client must say "no answer", with the
    /// number of tries and a hint, instead of hanging or failing obscurely.
    #[test]
    fn ping_to_a_silent_socket_says_no_answer() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let config = ClientConfig {
            transport: TransportKind::Udp,
            broker: silent.local_addr().unwrap(),
            bootstrap_brokers: Vec::new(),
            bind: Some("127.0.0.1:0".parse().unwrap()),
            request_timeout_ms: 5,
            retransmit_backoff_max_ms: 10,
            delivery_timeout_ms: 60,
        };
        let error = ping(&config).unwrap_err();
        match &error {
            ClientError::NoAnswer { broker, tries } => {
                assert_eq!(*broker, BrokerAddress::Udp(config.broker));
                assert!(*tries >= 1);
            }
            other => panic!("expected NoAnswer, got {other:?}"),
        }
        let text = error.to_string();
        assert!(text.contains("no answer from 127.0.0.1:"), "{text}");
        assert!(text.contains("is the data plane running?"), "{text}");
        // The datagrams did go out, and they are Ping frames.
        let mut buf = [0u8; 128];
        silent.set_nonblocking(true).unwrap();
        let n = silent.recv(&mut buf).unwrap();
        let (header, payload) = precursor_protocol::frame::decode_frame(&buf[..n]).unwrap();
        assert_eq!(header.opcode, Opcode::Ping);
        assert_eq!(payload.len(), PING_PAYLOAD_BYTES);
    }
}
