//! RC loopback over one RDMA device: two queue pairs in this process, connected
//! to each other; SEND/RECV of checksummed messages (two-SGE gather), an RDMA
//! WRITE, an RDMA READ of a registered buffer (scattered into two SGEs), and a
//! READ outside the peer's registration (must fail on the device, not here).
//!
//! ```text
//! cargo build --release -p precursor-ffi --features rdma --example verbs_loopback
//! verbs_loopback [DEVICE (rxe0)] [GID_INDEX (1)] [MESSAGES (2000)]
//! ```
//! Prints `PASS` (exit 0) or `FAIL: reason` (exit 1). Runs in the soft-RoCE guest
//! (ci/rdma-guest.sh); on a host without RDMA it fails with the reason.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use precursor_ffi::verbs::{
    Access, CompletionQueue, Context, MemoryRegion, ProtectionDomain, QpCaps, QueuePair,
    SendRequest, VerbsError, WcOpcode, WorkCompletion,
};

const PORT: u8 = 1;
/// Receive slots (and messages in flight).
const SLOTS: usize = 32;
const HEADER_BYTES: usize = 16;
const BODY_MAX: usize = 4096;
const SLOT_BYTES: usize = HEADER_BYTES + BODY_MAX;
const READ_BYTES: usize = 1 << 20;
const READ_CHUNK: usize = 64 << 10;
const TIMEOUT: Duration = Duration::from_secs(60);

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

/// Polls `cq` until `want` completions arrived (all must succeed) or the timeout.
fn wait(
    cq: &CompletionQueue,
    want: usize,
    what: &str,
    out: &mut Vec<WorkCompletion>,
) -> Result<()> {
    out.clear();
    let mut buf = [WorkCompletion::default(); 16];
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < want {
        let n = verbs("ibv_poll_cq", cq.poll(&mut buf))?;
        for wc in &buf[..n] {
            verbs(what, wc.result())?;
            out.push(*wc);
        }
        if n == 0 && Instant::now() > deadline {
            return Err(format!(
                "{what}: {} of {want} completions after {TIMEOUT:?}",
                out.len()
            ));
        }
    }
    Ok(())
}

fn run(device: &str, gid_index: u8, messages: usize) -> Result<()> {
    let ctx = verbs("open device", Context::open(device))?;
    let port = verbs("port_attr", ctx.port_attr(PORT))?;
    let gid = verbs("gid", ctx.gid(PORT, u32::from(gid_index)))?;
    println!(
        "device {device} port {PORT}: active={} mtu={} link={:?} lid={} gid[{gid_index}]={gid}",
        port.is_active(),
        port.active_mtu.bytes(),
        port.link_layer,
        port.lid
    );
    if !port.is_active() {
        return Err(format!(
            "port {PORT} of {device} is not ACTIVE (state {})",
            port.state
        ));
    }

    let pd = verbs("alloc pd", ProtectionDomain::new(&ctx))?;
    let cq_a = verbs("create cq a", CompletionQueue::new(&ctx, 256))?;
    let cq_b = verbs("create cq b", CompletionQueue::new(&ctx, 256))?;
    let caps = QpCaps {
        max_send_wr: 64,
        max_recv_wr: 64,
        max_send_sge: 2,
        max_recv_sge: 2,
        max_inline_data: 0,
    };
    let qp_a = verbs("create qp a", QueuePair::new_rc(&pd, &cq_a, &cq_a, caps))?;
    let qp_b = verbs("create qp b", QueuePair::new_rc(&pd, &cq_b, &cq_b, caps))?;
    let ep_a = verbs("endpoint a", qp_a.endpoint(PORT, gid_index, 0x1000))?;
    let ep_b = verbs("endpoint b", qp_b.endpoint(PORT, gid_index, 0x2000))?;
    verbs("connect a", qp_a.connect(&ep_a, &ep_b))?;
    verbs("connect b", qp_b.connect(&ep_b, &ep_a))?;
    println!(
        "qp {} <-> qp {} connected (RTS/RTS: {:?}/{:?})",
        ep_a.qp_num,
        ep_b.qp_num,
        qp_a.state().ok(),
        qp_b.state().ok()
    );

    // SEND/RECV: A gathers a header (seq, checksum) and a body from two regions;
    // B receives each into one slot.
    let mut a_hdr = verbs(
        "reg a_hdr",
        MemoryRegion::alloc(&pd, SLOTS * HEADER_BYTES, Access::NONE),
    )?;
    let mut a_body = verbs(
        "reg a_body",
        MemoryRegion::alloc(&pd, SLOTS * BODY_MAX, Access::NONE),
    )?;
    let b_recv = verbs(
        "reg b_recv",
        MemoryRegion::alloc(&pd, SLOTS * SLOT_BYTES, Access::LOCAL_WRITE),
    )?;
    let mut wcs = Vec::with_capacity(SLOTS);
    let mut body = vec![0u8; BODY_MAX];
    let mut got = vec![0u8; SLOT_BYTES];
    let mut sent = 0usize;
    let mut bytes = 0usize;
    let started = Instant::now();
    while sent < messages {
        let batch = SLOTS.min(messages - sent);
        for slot in 0..batch {
            let sge = verbs("sge", b_recv.sge(slot * SLOT_BYTES, SLOT_BYTES))?;
            verbs("post_recv", qp_b.post_recv(slot as u64, &[sge]))?;
        }
        for slot in 0..batch {
            let seq = (sent + slot) as u64;
            let len = 1 + (seq as usize * 997) % BODY_MAX;
            pattern(seq, &mut body[..len]);
            let mut hdr = [0u8; HEADER_BYTES];
            hdr[..8].copy_from_slice(&seq.to_le_bytes());
            hdr[8..].copy_from_slice(&fnv1a(&body[..len]).to_le_bytes());
            verbs("write hdr", a_hdr.write(slot * HEADER_BYTES, &hdr))?;
            verbs("write body", a_body.write(slot * BODY_MAX, &body[..len]))?;
            let sges = [
                verbs("sge", a_hdr.sge(slot * HEADER_BYTES, HEADER_BYTES))?,
                verbs("sge", a_body.sge(slot * BODY_MAX, len))?,
            ];
            verbs("post_send", qp_a.post_send(&SendRequest::send(seq, &sges)))?;
            bytes += HEADER_BYTES + len;
        }
        wait(&cq_a, batch, "SEND", &mut wcs)?;
        wait(&cq_b, batch, "RECV", &mut wcs)?;
        for wc in &wcs {
            if wc.opcode() != WcOpcode::Recv {
                return Err(format!("expected a RECV completion, got {wc:?}"));
            }
            let slot = wc.wr_id() as usize;
            let n = wc.byte_len() as usize;
            if !(HEADER_BYTES + 1..=SLOT_BYTES).contains(&n) {
                return Err(format!("slot {slot}: received {n} bytes"));
            }
            verbs("read", b_recv.read(slot * SLOT_BYTES, &mut got[..n]))?;
            let seq = u64::from_le_bytes(got[..8].try_into().expect("8"));
            let sum = u64::from_le_bytes(got[8..16].try_into().expect("8"));
            let body = &got[HEADER_BYTES..n];
            let want_len = 1 + (seq as usize * 997) % BODY_MAX;
            if seq as usize != sent + slot || body.len() != want_len || fnv1a(body) != sum {
                return Err(format!(
                    "message in slot {slot}: seq {seq} (want {}), {} bytes (want {want_len}), \
                     checksum {}",
                    sent + slot,
                    body.len(),
                    if fnv1a(body) == sum { "ok" } else { "BAD" }
                ));
            }
        }
        sent += batch;
    }
    println!(
        "SEND/RECV: {messages} checksummed messages ({bytes} bytes) verified in {:?}",
        started.elapsed()
    );

    // RDMA WRITE: A writes 64 KiB into B's region; B checks it.
    let mut a_src = verbs(
        "reg a_src",
        MemoryRegion::alloc(&pd, READ_CHUNK, Access::NONE),
    )?;
    let b_dst = verbs(
        "reg b_dst",
        MemoryRegion::alloc(&pd, READ_CHUNK, Access::LOCAL_WRITE | Access::REMOTE_WRITE),
    )?;
    let mut expect = vec![0u8; READ_CHUNK];
    pattern(0xdead, &mut expect);
    verbs("write", a_src.write(0, &expect))?;
    let remote = verbs("remote", b_dst.remote(0, READ_CHUNK))?;
    let sge = verbs("sge", a_src.sge(0, READ_CHUNK))?;
    verbs(
        "post WRITE",
        qp_a.post_send(&SendRequest::write(1, &[sge], remote.at(0))),
    )?;
    wait(&cq_a, 1, "RDMA WRITE", &mut wcs)?;
    let mut seen = vec![0u8; READ_CHUNK];
    verbs("read", b_dst.read(0, &mut seen))?;
    if seen != expect {
        return Err("RDMA WRITE: bytes differ".into());
    }
    println!("RDMA WRITE: {READ_CHUNK} bytes verified");

    // RDMA READ: B exposes 1 MiB (REMOTE_READ); A reads it in 64 KiB requests,
    // each scattered into two SGEs, and compares.
    let mut b_src = verbs(
        "reg b_src",
        MemoryRegion::alloc(&pd, READ_BYTES, Access::REMOTE_READ),
    )?;
    let mut source = vec![0u8; READ_BYTES];
    pattern(0x5eed, &mut source);
    verbs("write", b_src.write(0, &source))?;
    let region = verbs("remote", b_src.remote(0, READ_BYTES))?;
    let a_dst = verbs(
        "reg a_dst",
        MemoryRegion::alloc(&pd, READ_BYTES, Access::LOCAL_WRITE),
    )?;
    let started = Instant::now();
    let chunks = READ_BYTES / READ_CHUNK;
    for i in 0..chunks {
        let off = i * READ_CHUNK;
        let half = READ_CHUNK / 2;
        let sges = [
            verbs("sge", a_dst.sge(off, half))?,
            verbs("sge", a_dst.sge(off + half, half))?,
        ];
        verbs(
            "post READ",
            qp_a.post_send(&SendRequest::read(i as u64, &sges, region.at(off as u64))),
        )?;
    }
    wait(&cq_a, chunks, "RDMA READ", &mut wcs)?;
    // SAFETY: every READ into a_dst has completed (polled above) and nothing
    // else targets it, so the device does not write it while the slice lives.
    let read_back = unsafe { a_dst.as_slice() };
    if read_back != source.as_slice() {
        let at = read_back.iter().zip(&source).position(|(a, b)| a != b);
        return Err(format!("RDMA READ: bytes differ (first at {at:?})"));
    }
    println!(
        "RDMA READ: {READ_BYTES} bytes in {chunks} reads verified in {:?}",
        started.elapsed()
    );

    // A READ past the end of B's registration fails on the device (remote
    // access error) and moves A's QP to the error state.
    let sge = verbs("sge", a_dst.sge(0, 4096))?;
    let beyond = region.at(READ_BYTES as u64 - 1024);
    verbs(
        "post READ",
        qp_a.post_send(&SendRequest::read(99, &[sge], beyond)),
    )?;
    let mut buf = [WorkCompletion::default(); 4];
    let deadline = Instant::now() + TIMEOUT;
    let wc = loop {
        let n = verbs("ibv_poll_cq", cq_a.poll(&mut buf))?;
        if n > 0 {
            break buf[0];
        }
        if Instant::now() > deadline {
            return Err("out-of-bounds READ: no completion".into());
        }
    };
    if wc.is_success() {
        return Err("a READ beyond the registration succeeded".into());
    }
    println!(
        "out-of-bounds READ refused by the device: {} (QP now {:?})",
        wc.status_text(),
        qp_a.state().ok()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let device = args.get(1).map_or("rxe0", String::as_str);
    let gid_index = match args.get(2).map_or(Ok(1), |s| s.parse::<u8>()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("usage: verbs_loopback [DEVICE] [GID_INDEX] [MESSAGES]: {e}");
            return ExitCode::from(2);
        }
    };
    let messages = match args.get(3).map_or(Ok(2000), |s| s.parse::<usize>()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("usage: verbs_loopback [DEVICE] [GID_INDEX] [MESSAGES]: {e}");
            return ExitCode::from(2);
        }
    };
    match run(device, gid_index, messages) {
        Ok(()) => {
            println!("PASS");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
