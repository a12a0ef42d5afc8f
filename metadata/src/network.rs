//! TCP among the voters: length-prefixed JSON frames, one request and its response at a
//! time on a connection, connections pooled per peer.
//!
//! ```text
//! frame:    [u32 BE body bytes][body: JSON]          body bytes <= FRAME_BYTES_MAX
//! request:  RequestFrame  { id, request }            client -> server
//! response: ResponseFrame { id, response }           server -> client, the same id
//! ```
//!
//! A caller takes an idle connection to the peer (or dials one), writes its request, reads
//! the response, checks the id and puts the connection back; any error drops that
//! connection (the next call dials anew). The whole exchange is bounded by a per-RPC
//! timeout. A malformed or oversized frame closes its connection with a logged error.

use crate::command::{MetadataCommand, MetadataReply};
use crate::state::MetadataState;
use crate::{HeartbeatReply, TypeConfig};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, RaftNetworkFactory, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frame's body, at most, in bytes (a snapshot travels in one frame).
pub const FRAME_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Dialling a peer, at most, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 500;
/// An RPC of ours (Propose, BrokerHeartbeat) whose caller gave no deadline, at most, in
/// milliseconds.
pub const RPC_TIMEOUT_MS: u64 = 2_000;
/// Idle connections kept per peer, at most.
pub const IDLE_CONNECTIONS_PER_PEER_MAX: usize = 4;

/// Why an exchange with a peer failed. The connection it used is dropped.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("network fault switch: isolated")]
    Isolated,
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr}: timed out")]
    ConnectTimeout { addr: SocketAddr },
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("no response within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("frame of {bytes} bytes exceeds FRAME_BYTES_MAX")]
    FrameTooLarge { bytes: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("response id {got} to request {sent}")]
    IdMismatch { sent: u64, got: u64 },
    #[error("unexpected response to {0}")]
    UnexpectedResponse(&'static str),
    #[error("remote: {0}")]
    Remote(String),
}

/// The fault switch of one voter's network, for tests: isolated, it sends nothing and
/// answers nothing (incoming connections are closed), as a cut link would.
#[derive(Clone, Debug, Default)]
pub struct NetworkFault {
    isolated: Arc<AtomicBool>,
}

impl NetworkFault {
    pub fn isolate(&self) {
        self.isolated.store(true, Ordering::SeqCst);
    }
    pub fn heal(&self) {
        self.isolated.store(false, Ordering::SeqCst);
    }
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// The leader hands its leadership to the receiver (a voter about to stop).
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    Snapshot {
        vote: VoteOf<TypeConfig>,
        meta: SnapshotMetaOf<TypeConfig>,
        state: MetadataState,
    },
    Propose(MetadataCommand),
    BrokerHeartbeat {
        broker: u32,
        incarnation: u64,
    },
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::AppendEntries(_) => "AppendEntries",
            Request::Vote(_) => "Vote",
            Request::PreVote(_) => "PreVote",
            Request::TransferLeader(_) => "TransferLeader",
            Request::Snapshot { .. } => "Snapshot",
            Request::Propose(_) => "Propose",
            Request::BrokerHeartbeat { .. } => "BrokerHeartbeat",
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Propose(MetadataReply),
    BrokerHeartbeat(HeartbeatReply),
    /// Propose or BrokerHeartbeat reached a voter that does not lead.
    NotLeader {
        leader: Option<u32>,
    },
    Failed(String),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RequestFrame {
    pub id: u64,
    pub request: Request,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ResponseFrame {
    pub id: u64,
    pub response: Response,
}

pub(crate) async fn write_frame<T: Serialize>(
    stream: &mut TcpStream,
    value: &T,
) -> Result<(), TransportError> {
    let body = serde_json::to_vec(value).map_err(|e| TransportError::Malformed(e.to_string()))?;
    if body.len() > FRAME_BYTES_MAX {
        return Err(TransportError::FrameTooLarge { bytes: body.len() });
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    Ok(())
}

/// Reads one frame. `Ok(None)`: the peer closed the connection between frames.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    stream: &mut TcpStream,
) -> Result<Option<T>, TransportError> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let bytes = u32::from_be_bytes(header) as usize;
    if bytes > FRAME_BYTES_MAX {
        return Err(TransportError::FrameTooLarge { bytes });
    }
    let mut body = vec![0u8; bytes];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| TransportError::Malformed(e.to_string()))
}

/// Connections to one peer.
pub(crate) struct PeerChannel {
    pub addr: SocketAddr,
    idle: Mutex<Vec<TcpStream>>,
    next_id: AtomicU64,
    fault: NetworkFault,
}

impl PeerChannel {
    pub fn new(addr: SocketAddr, fault: NetworkFault) -> PeerChannel {
        PeerChannel {
            addr,
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            fault,
        }
    }

    /// One request and its response, within `timeout`.
    pub async fn call(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        if self.fault.is_isolated() {
            return Err(TransportError::Isolated);
        }
        let timeout_ms = timeout.as_millis() as u64;
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout { timeout_ms }),
        }
    }

    async fn exchange(&self, request: Request) -> Result<Response, TransportError> {
        let name = request.name();
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut stream = match idle {
            Some(stream) => stream,
            None => self.connect().await?,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        write_frame(&mut stream, &RequestFrame { id, request }).await?;
        let Some(frame) = read_frame::<ResponseFrame>(&mut stream).await? else {
            return Err(TransportError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: connection closed"),
            )));
        };
        if frame.id != id {
            return Err(TransportError::IdMismatch {
                sent: id,
                got: frame.id,
            });
        }
        if self.fault.is_isolated() {
            return Err(TransportError::Isolated);
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CONNECTIONS_PER_PEER_MAX {
            idle.push(stream);
        }
        Ok(frame.response)
    }

    async fn connect(&self) -> Result<TcpStream, TransportError> {
        let addr = self.addr;
        let connect = TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                Ok(stream)
            }
            Ok(Err(source)) => Err(TransportError::Connect { addr, source }),
            Err(_) => Err(TransportError::ConnectTimeout { addr }),
        }
    }
}

/// openraft's view of the network: one client per target, over that peer's channel.
pub(crate) struct RaftPeers {
    pub channels: BTreeMap<u32, Arc<PeerChannel>>,
}

impl RaftNetworkFactory<TypeConfig> for RaftPeers {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> RaftPeer {
        let channel = u32::try_from(target)
            .ok()
            .and_then(|id| self.channels.get(&id).cloned());
        RaftPeer {
            channel,
            target,
            addr: node.addr.clone(),
        }
    }
}

pub(crate) struct RaftPeer {
    /// None: a target not in the configured voters (never expected).
    channel: Option<Arc<PeerChannel>>,
    target: u64,
    addr: String,
}

impl RaftPeer {
    async fn call(&self, request: Request, option: &RPCOption) -> Result<Response, TransportError> {
        let Some(channel) = &self.channel else {
            return Err(TransportError::Remote(format!(
                "voter {} at {} is not configured",
                self.target, self.addr
            )));
        };
        channel.call(request, option.hard_ttl()).await
    }
}

fn unreachable<E: std::error::Error + 'static>(error: &E) -> Unreachable<TypeConfig> {
    Unreachable::new(error)
}

fn rpc_error(error: TransportError) -> RPCError<TypeConfig> {
    match error {
        TransportError::Remote(message) => {
            RPCError::Network(NetworkError::new(&AnyError::error(message)))
        }
        other => RPCError::Unreachable(unreachable(&other)),
    }
}

impl RaftNetworkV2<TypeConfig> for RaftPeer {
    type SnapshotData = MetadataState;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::AppendEntries(rpc), &option).await {
            Ok(Response::AppendEntries(response)) => Ok(response),
            Ok(Response::Failed(message)) => Err(rpc_error(TransportError::Remote(message))),
            Ok(_) => Err(rpc_error(TransportError::UnexpectedResponse(
                "AppendEntries",
            ))),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Vote(rpc), &option).await {
            Ok(Response::Vote(response)) => Ok(response),
            Ok(Response::Failed(message)) => Err(rpc_error(TransportError::Remote(message))),
            Ok(_) => Err(rpc_error(TransportError::UnexpectedResponse("Vote"))),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::PreVote(rpc), &option).await {
            Ok(Response::Vote(response)) => Ok(response),
            Ok(Response::Failed(message)) => Err(rpc_error(TransportError::Remote(message))),
            Ok(_) => Err(rpc_error(TransportError::UnexpectedResponse("PreVote"))),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::TransferLeader(rpc), &option).await {
            Ok(Response::TransferLeader(response)) => Ok(response),
            Ok(Response::Failed(message)) => Err(rpc_error(TransportError::Remote(message))),
            Ok(_) => Err(rpc_error(TransportError::UnexpectedResponse(
                "TransferLeader",
            ))),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, MetadataState>,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            state: snapshot.snapshot,
        };
        let failed = |e: TransportError| StreamingError::Unreachable(unreachable(&e));
        match self.call(request, &option).await {
            Ok(Response::Snapshot(response)) => Ok(response),
            Ok(Response::Failed(message)) => Err(failed(TransportError::Remote(message))),
            Ok(_) => Err(failed(TransportError::UnexpectedResponse("Snapshot"))),
            Err(e) => Err(failed(e)),
        }
    }
}
