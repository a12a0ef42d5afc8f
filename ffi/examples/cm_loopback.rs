//! rdma_cm end to end on one RDMA device: a listener thread and a client thread
//! in this process connect through the connection manager (private data both
//! ways), exchange checksummed messages through [`MessageBuffers`] (SEND/RECV,
//! echoed back), the client RDMA READs a [`ReadableRegion`] the server announced
//! in its accept, a READ beyond that registration fails on the device (remote
//! access error, the connection drops and every posted buffer comes back
//! flushed on both sides), and a second client that vanishes without a
//! disconnect is noticed (DISCONNECTED) and cleaned up by the server.
//!
//! ```text
//! cargo build --release -p precursor-ffi --features rdma --example cm_loopback
//! cm_loopback [ADDRESS (10.0.0.1)] [PORT (7471)] [MESSAGES (2000)]
//! ```
//! Prints `PASS` (exit 0) or `FAIL: reason` (exit 1). Runs in the soft-RoCE guest
//! (ci/rdma-guest.sh); on a host without RDMA it fails with the reason.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use precursor_ffi::verbs::{
    BufferOp, CmEvent, CmEventKind, CmId, CompletionQueue, ConnParams, EventChannel,
    MessageBuffers, ProtectionDomain, QpCaps, QueuePair, ReadableRegion, RemoteRegion, VerbsError,
    WorkCompletion,
};

/// Receive buffers per side (and messages in flight).
const RECV_BUFFERS: usize = 16;
const SEND_BUFFERS: usize = 16;
const BUFFER_BYTES: usize = 4096;
const READ_BYTES: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);
const SERVER_TOKEN: u64 = 1;
const CONNECTION_TOKEN: u64 = 2;
const HELLO: &[u8] = b"precursor cm_loopback hello";

type Result<T> = std::result::Result<T, String>;

fn verbs<T>(what: &str, r: std::result::Result<T, VerbsError>) -> Result<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn pattern(seed: u64, out: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in out {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// Waits for an event of `kind` (any other is an error).
fn expect_event(channel: &EventChannel, kind: CmEventKind) -> Result<CmEvent> {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Some(event) = verbs("next_event", channel.next_event(Duration::from_millis(100)))? {
            if event.kind == CmEventKind::TimewaitExit {
                continue;
            }
            if event.kind != kind {
                return Err(format!(
                    "expected {}, got {} (status {})",
                    kind.name(),
                    event.kind.name(),
                    event.status
                ));
            }
            return Ok(event);
        }
    }
    Err(format!("no {} within {TIMEOUT:?}", kind.name()))
}

/// One side's verbs objects: device PD, one CQ, buffers [0, RECV) for receives
/// and [RECV, RECV + SEND) for sends.
struct Side {
    pd: ProtectionDomain,
    cq: CompletionQueue,
    buffers: MessageBuffers,
}

impl Side {
    fn new(id: &CmId) -> Result<Side> {
        let ctx = verbs("cm context", id.context())?;
        let pd = verbs("alloc pd", ProtectionDomain::new(&ctx))?;
        let cq = verbs("create cq", CompletionQueue::new(&ctx, 256))?;
        let buffers = verbs(
            "buffers",
            MessageBuffers::new(&pd, RECV_BUFFERS + SEND_BUFFERS, BUFFER_BYTES, true),
        )?;
        println!(
            "{}: buffers on {}",
            ctx.name(),
            if buffers.is_hugepages() {
                "hugepages"
            } else {
                "the heap"
            }
        );
        Ok(Side { pd, cq, buffers })
    }

    fn create_qp(&self, id: &CmId) -> Result<QueuePair> {
        let caps = QpCaps {
            max_send_wr: (SEND_BUFFERS + 8) as u32,
            max_recv_wr: RECV_BUFFERS as u32,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 64,
        };
        verbs(
            "create_qp",
            id.create_qp(&self.pd, &self.cq, &self.cq, caps),
        )
    }

    fn post_receives(&mut self, qp: &QueuePair) -> Result<()> {
        for i in 0..RECV_BUFFERS {
            verbs("post_recv", self.buffers.post_recv(qp, i))?;
        }
        Ok(())
    }

    fn free_send_buffer(&self) -> Option<usize> {
        (RECV_BUFFERS..RECV_BUFFERS + SEND_BUFFERS).find(|&i| self.buffers.is_cpu_owned(i))
    }

    /// Polls once; returns the completions that returned a buffer.
    fn poll(&mut self, out: &mut Vec<precursor_ffi::verbs::Completed>) -> Result<()> {
        let mut wcs = [WorkCompletion::default(); 16];
        let n = verbs("poll_cq", self.cq.poll(&mut wcs))?;
        for wc in &wcs[..n] {
            match self.buffers.complete(wc) {
                Some(done) => out.push(done),
                None => return Err(format!("a completion of no buffer: {wc:?}")),
            }
        }
        Ok(())
    }

    /// Polls until every posted buffer came back (flushed after a disconnect).
    fn drain(&mut self, who: &str) -> Result<usize> {
        let deadline = Instant::now() + TIMEOUT;
        let mut flushed = 0;
        let mut done = Vec::new();
        while self.buffers.device_owned() > 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "{who}: {} buffers never came back after the disconnect",
                    self.buffers.device_owned()
                ));
            }
            done.clear();
            self.poll(&mut done)?;
            flushed += done.iter().filter(|d| !d.is_success()).count();
        }
        Ok(flushed)
    }
}

/// The listener: serves two connections, then reports.
fn server(addr: SocketAddr, ready: mpsc::Sender<()>) -> Result<String> {
    let channel = verbs("event channel", EventChannel::new())?;
    let listener = verbs("create_id", channel.create_id(SERVER_TOKEN))?;
    verbs("reuse addr", listener.set_reuse_addr())?;
    verbs("bind", listener.bind(addr))?;
    verbs("listen", listener.listen(8))?;
    let mut side = Side::new(&listener)?;
    let mut readable_bytes = vec![0u8; READ_BYTES];
    pattern(42, &mut readable_bytes);
    let readable = verbs(
        "register readable",
        ReadableRegion::register(&side.pd, readable_bytes.as_ptr() as usize, READ_BYTES),
    )?;
    let _ = ready.send(());
    let mut report = String::new();
    for round in 1..=2 {
        let request = expect_event(&channel, CmEventKind::ConnectRequest)?;
        if request.token != SERVER_TOKEN {
            return Err(format!(
                "request token {} (listener's expected)",
                request.token
            ));
        }
        if !request.private_data.as_bytes().starts_with(HELLO) {
            return Err("the connect request lacks the client's private data".into());
        }
        let id = request.request.ok_or("CONNECT_REQUEST without an id")?;
        id.set_token(CONNECTION_TOKEN);
        let qp = side.create_qp(&id)?;
        side.post_receives(&qp)?;
        let announce = readable.remote().to_bytes();
        verbs(
            "accept",
            id.accept(&ConnParams {
                private_data: &announce,
                ..ConnParams::default()
            }),
        )?;
        let established = expect_event(&channel, CmEventKind::Established)?;
        if established.token != CONNECTION_TOKEN {
            return Err(format!("ESTABLISHED token {}", established.token));
        }
        // Echo every message until the connection goes down.
        let mut echoed = 0u64;
        let mut done = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if Instant::now() > deadline {
                return Err(format!("round {round}: the client never disconnected"));
            }
            if let Some(event) = verbs("next_event", channel.next_event(Duration::ZERO))? {
                if event.kind == CmEventKind::Disconnected && event.token == CONNECTION_TOKEN {
                    break;
                }
                if event.kind == CmEventKind::TimewaitExit {
                    continue;
                }
                return Err(format!("unexpected {} while serving", event.kind.name()));
            }
            done.clear();
            side.poll(&mut done)?;
            for c in &done {
                match (c.op, c.is_success()) {
                    (BufferOp::Recv, true) => {
                        let Some(send) = side.free_send_buffer() else {
                            return Err("no send buffer free for an echo".into());
                        };
                        let message = side.buffers.data(c.index).ok_or("received buffer")?;
                        let message = message.to_vec();
                        verbs(
                            "fill",
                            side.buffers.fill(send, |b| {
                                b[..message.len()].copy_from_slice(&message);
                                message.len()
                            }),
                        )?;
                        verbs("post_send", side.buffers.post_send(&qp, send, true))?;
                        verbs("repost", side.buffers.post_recv(&qp, c.index))?;
                        echoed += 1;
                    }
                    (BufferOp::Send, true) => {}
                    // The connection failed (round 1: the client's bad READ):
                    // what is left is flushed; DISCONNECTED follows.
                    (_, false) => {}
                    (op, true) => return Err(format!("unexpected {op:?} completion")),
                }
            }
        }
        verbs("disconnect", id.disconnect()).or_else(|e| {
            // Already disconnected by the peer: the QP is in error anyway.
            if e.contains("errno 22") {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let flushed = side.drain("server")?;
        // Posted buffers are back: now the QP and id may go.
        drop(qp);
        drop(id);
        report.push_str(&format!(
            "server round {round}: echoed {echoed}, {flushed} receives flushed after DISCONNECTED; "
        ));
    }
    drop(readable);
    Ok(report)
}

fn connect(addr: SocketAddr) -> Result<(EventChannel, CmId, Side, QueuePair, RemoteRegion)> {
    let channel = verbs("event channel", EventChannel::new())?;
    let id = verbs("create_id", channel.create_id(7))?;
    verbs(
        "resolve_addr",
        id.resolve_addr(addr, Duration::from_secs(2)),
    )?;
    expect_event(&channel, CmEventKind::AddrResolved)?;
    verbs("resolve_route", id.resolve_route(Duration::from_secs(2)))?;
    expect_event(&channel, CmEventKind::RouteResolved)?;
    let mut side = Side::new(&id)?;
    let qp = side.create_qp(&id)?;
    side.post_receives(&qp)?;
    verbs(
        "connect",
        id.connect(&ConnParams {
            private_data: HELLO,
            ..ConnParams::default()
        }),
    )?;
    let established = expect_event(&channel, CmEventKind::Established)?;
    let data = established.private_data.as_bytes();
    if data.len() < RemoteRegion::WIRE_BYTES {
        return Err(format!(
            "accept carried {} bytes of private data",
            data.len()
        ));
    }
    let remote = RemoteRegion::from_bytes(data[..RemoteRegion::WIRE_BYTES].try_into().unwrap());
    Ok((channel, id, side, qp, remote))
}

/// Round 1: messages, READs, a READ beyond the registration.
fn client_round_one(addr: SocketAddr, messages: u64) -> Result<String> {
    let (channel, id, mut side, qp, remote) = connect(addr)?;
    if remote.len != READ_BYTES as u64 {
        return Err(format!("announced region of {} bytes", remote.len));
    }
    // SEND/RECV: at most RECV_BUFFERS in flight (the server's receives).
    let mut sent = 0u64;
    let mut echoed = 0u64;
    let mut done = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while echoed < messages {
        if Instant::now() > deadline {
            return Err(format!("only {echoed} of {messages} echoes"));
        }
        while sent < messages && sent - echoed < RECV_BUFFERS as u64 {
            let Some(send) = side.free_send_buffer() else {
                break;
            };
            let seq = sent;
            verbs(
                "fill",
                side.buffers.fill(send, |b| {
                    let len = 16 + (seq as usize * 37) % (BUFFER_BYTES - 16);
                    pattern(seq, &mut b[16..len]);
                    let sum = fnv1a(&b[16..len]);
                    b[..8].copy_from_slice(&seq.to_le_bytes());
                    b[8..16].copy_from_slice(&sum.to_le_bytes());
                    len
                }),
            )?;
            verbs("post_send", side.buffers.post_send(&qp, send, true))?;
            sent += 1;
        }
        done.clear();
        side.poll(&mut done)?;
        for c in &done {
            if !c.is_success() {
                return Err(format!("{:?} failed with status {}", c.op, c.status));
            }
            if c.op == BufferOp::Recv {
                let m = side.buffers.data(c.index).ok_or("received buffer")?;
                let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
                let sum = u64::from_le_bytes(m[8..16].try_into().unwrap());
                if seq != echoed || fnv1a(&m[16..]) != sum {
                    return Err(format!(
                        "echo {echoed}: got seq {seq}, checksum ok: {}",
                        fnv1a(&m[16..]) == sum
                    ));
                }
                echoed += 1;
                verbs("repost", side.buffers.post_recv(&qp, c.index))?;
            }
        }
    }
    // RDMA READ of the whole announced region, one buffer at a time.
    let mut expected = vec![0u8; READ_BYTES];
    pattern(42, &mut expected);
    let read_buffer = side.free_send_buffer().ok_or("no buffer for READs")?;
    for chunk in 0..READ_BYTES / BUFFER_BYTES {
        let offset = chunk * BUFFER_BYTES;
        verbs(
            "post_read",
            side.buffers
                .post_read(&qp, read_buffer, BUFFER_BYTES, remote.at(offset as u64)),
        )?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            done.clear();
            side.poll(&mut done)?;
            if let Some(c) = done.iter().find(|c| c.index == read_buffer) {
                if !c.is_success() || c.op != BufferOp::Read || c.len != BUFFER_BYTES {
                    return Err(format!("READ at {offset}: {c:?}"));
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("READ at {offset} never completed"));
            }
        }
        if side.buffers.data(read_buffer) != Some(&expected[offset..offset + BUFFER_BYTES]) {
            return Err(format!("READ at {offset}: bytes differ from the server's"));
        }
    }
    // A READ that ends past the registration: the device refuses it.
    verbs(
        "post_read beyond",
        side.buffers.post_read(
            &qp,
            read_buffer,
            BUFFER_BYTES,
            remote.at(remote.len - (BUFFER_BYTES as u64) / 2),
        ),
    )?;
    let deadline = Instant::now() + TIMEOUT;
    let mut flushed_early = 0;
    let status = loop {
        done.clear();
        side.poll(&mut done)?;
        flushed_early += done.iter().filter(|c| c.is_flushed()).count();
        if let Some(c) = done.iter().find(|c| c.index == read_buffer) {
            break c.status;
        }
        if Instant::now() > deadline {
            return Err("the READ beyond the region never completed".into());
        }
    };
    if status != precursor_ffi::verbs::sys::IBV_WC_REM_ACCESS_ERR {
        return Err(format!(
            "READ beyond the region: status {status}, expected a remote access error (10)"
        ));
    }
    // The QP is in error now: every posted receive comes back flushed.
    let flushed = flushed_early + side.drain("client")?;
    if flushed != RECV_BUFFERS {
        return Err(format!(
            "{flushed} receives flushed after the QP error, {RECV_BUFFERS} were posted"
        ));
    }
    verbs("disconnect", id.disconnect())?;
    expect_event(&channel, CmEventKind::Disconnected)?;
    drop(qp);
    drop(id);
    Ok(format!(
        "client round 1: {echoed} echoes verified, {} KiB READ and verified, READ beyond the region refused (remote access error), {flushed} receives flushed; ",
        READ_BYTES >> 10
    ))
}

/// Round 2: a few messages, then the client vanishes without disconnecting.
fn client_round_two(addr: SocketAddr) -> Result<String> {
    let (channel, id, mut side, qp, _) = connect(addr)?;
    let send = side.free_send_buffer().ok_or("no send buffer")?;
    verbs(
        "fill",
        side.buffers.fill(send, |b| {
            b[..16].fill(0);
            16
        }),
    )?;
    verbs("post_send", side.buffers.post_send(&qp, send, true))?;
    let deadline = Instant::now() + TIMEOUT;
    let mut done = Vec::new();
    while !done
        .iter()
        .any(|c: &precursor_ffi::verbs::Completed| c.op == BufferOp::Recv)
    {
        side.poll(&mut done)?;
        if Instant::now() > deadline {
            return Err("round 2: no echo".into());
        }
    }
    // Abrupt: the QP and id go away with receives still posted (the kernel
    // tears the connection down; the device drops the posted requests).
    drop(qp);
    drop(id);
    drop(side);
    drop(channel);
    Ok("client round 2: vanished without a disconnect; ".into())
}

fn run() -> Result<String> {
    let args: Vec<String> = std::env::args().collect();
    let ip: IpAddr = args
        .get(1)
        .map_or("10.0.0.1", String::as_str)
        .parse()
        .map_err(|e| format!("address: {e}"))?;
    let port: u16 = args
        .get(2)
        .map_or(Ok(7471), |p| p.parse())
        .map_err(|e| format!("port: {e}"))?;
    let messages: u64 = args
        .get(3)
        .map_or(Ok(2000), |m| m.parse())
        .map_err(|e| format!("messages: {e}"))?;
    let addr = SocketAddr::new(ip, port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = thread::spawn(move || server(addr, ready_tx));
    if ready_rx.recv_timeout(TIMEOUT).is_err() {
        return match server.join() {
            Ok(Err(e)) => Err(format!("server: {e}")),
            _ => Err("server did not start".into()),
        };
    }
    let one = client_round_one(addr, messages);
    let two = one.as_ref().ok().map(|_| client_round_two(addr));
    let served = server.join().map_err(|_| "server panicked".to_string())?;
    let mut report = one.map_err(|e| format!("client: {e}"))?;
    report.push_str(
        &two.expect("ran after round one")
            .map_err(|e| format!("client: {e}"))?,
    );
    report.push_str(&served.map_err(|e| format!("server: {e}"))?);
    Ok(report)
}

fn main() -> ExitCode {
    match run() {
        Ok(report) => {
            println!("{report}");
            println!("PASS");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("FAIL: {reason}");
            ExitCode::FAILURE
        }
    }
}
