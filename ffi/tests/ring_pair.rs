//! Real DPDK (no mocks) on net_ring ports, without hugepages: one EAL for this
//! test binary, shared through `Eal::shared_for_tests`.

mod common;

use common::{frame, mbuf_with, no_huge_eal_args, shared_eal};
use precursor_ffi::{
    ring_port_pair, DpdkError, Eal, MbufBurst, Mempool, Port, PortConfig, SOCKET_ID_ANY,
};

const BURST: usize = 32;

fn eal() -> &'static Eal {
    static ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let args = ARGS.get_or_init(|| no_huge_eal_args("ring", &["net_ring0"]));
    shared_eal(args)
}

fn pool(name: &str, mbufs: u32) -> Mempool {
    let _ = eal();
    Mempool::create(
        name,
        mbufs,
        0,
        Mempool::DEFAULT_DATA_ROOM_BYTES,
        SOCKET_ID_ANY,
    )
    .expect("create mempool")
}

fn ring_config(descriptors: u16) -> PortConfig {
    PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: descriptors,
        tx_descriptors: descriptors,
        mtu_bytes: 1500,
        promiscuous: true,
    }
}

/// A started pair (A, B) over rings of `descriptors` entries.
fn started_pair(name: &str, descriptors: u32, pool: &Mempool) -> (Port, Port) {
    let (mut a, mut b) = ring_port_pair(eal(), name, descriptors).expect("ring port pair");
    for port in [&mut a, &mut b] {
        port.configure(&ring_config(512), pool).expect("configure");
        port.start().expect("start");
    }
    (a, b)
}

#[test]
fn ring_pair_delivers_a_burst_byte_identical() {
    let pool = pool("rp_identical", 256);
    let start_available = pool.available();
    {
        let (a, b) = started_pair("identical", 256, &pool);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.name(), "net_ring_identical_a");
        assert_eq!(b.name(), "net_ring_identical_b");
        assert!(a.link().up && b.link().up, "ring ports are up once started");

        let frames: Vec<Vec<u8>> = (0..BURST as u32)
            .map(|i| frame(i, 60 + i as usize * 37))
            .collect();
        let mut tx: MbufBurst<BURST> = MbufBurst::new();
        for f in &frames {
            tx.push(mbuf_with(&pool, f)).expect("burst has room");
        }
        assert!(tx.is_full());
        assert_eq!(a.tx_burst(0, &mut tx), BURST);
        assert!(tx.is_empty());

        let mut rx: MbufBurst<BURST> = MbufBurst::new();
        assert_eq!(b.rx_burst(0, &mut rx), BURST);
        assert_eq!(rx.len(), BURST);
        for (m, f) in rx.iter().zip(&frames) {
            assert!(m.is_contiguous());
            assert_eq!(m.len(), f.len());
            assert_eq!(m.data(), &f[..]);
        }
        // Nothing went the other way.
        let mut back: MbufBurst<BURST> = MbufBurst::new();
        assert_eq!(a.rx_burst(0, &mut back), 0);

        // And B -> A works too: echo everything back.
        assert_eq!(b.tx_burst(0, &mut rx), BURST);
        assert_eq!(a.rx_burst(0, &mut back), BURST);
        for (m, f) in back.drain().zip(&frames) {
            assert_eq!(m.data(), &f[..]);
        }
        assert!(back.is_empty());
    }
    assert_eq!(
        pool.available(),
        start_available,
        "every mbuf went back to the pool"
    );
}

#[test]
fn tx_burst_keeps_the_mbufs_the_queue_did_not_take() {
    const RING_ENTRIES: u32 = 16;
    let pool = pool("rp_unsent", 256);
    let start_available = pool.available();
    {
        let (a, b) = started_pair("unsent", RING_ENTRIES, &pool);
        let frames: Vec<Vec<u8>> = (0..BURST as u32).map(|i| frame(100 + i, 64)).collect();
        let mut tx: MbufBurst<BURST> = MbufBurst::new();
        for f in &frames {
            tx.push(mbuf_with(&pool, f)).expect("room");
        }

        let sent = a.tx_burst(0, &mut tx);
        assert_eq!(
            sent, RING_ENTRIES as usize,
            "the ring holds exactly its size"
        );
        assert_eq!(tx.len(), BURST - sent, "the rest stays in the burst");
        // The kept ones are the unsent tail, moved to the front, in order.
        for (m, f) in tx.iter().zip(&frames[sent..]) {
            assert_eq!(m.data(), &f[..]);
        }
        // A full ring takes nothing and keeps everything.
        assert_eq!(a.tx_burst(0, &mut tx), 0);
        assert_eq!(tx.len(), BURST - sent);

        let mut rx: MbufBurst<BURST> = MbufBurst::new();
        assert_eq!(b.rx_burst(0, &mut rx), sent);
        rx.clear();
        assert_eq!(a.tx_burst(0, &mut tx), BURST - sent);
        assert!(tx.is_empty());
        assert_eq!(b.rx_burst(0, &mut rx), BURST - sent);
        for (m, f) in rx.iter().zip(&frames[sent..]) {
            assert_eq!(m.data(), &f[..]);
        }

        // Unsent mbufs are freed with the burst; in-flight ones with the rings.
        for f in &frames[..4] {
            tx.push(mbuf_with(&pool, f)).expect("room");
        }
        assert_eq!(a.tx_burst(0, &mut tx), 4);
        for f in &frames[..3] {
            tx.push(mbuf_with(&pool, f)).expect("room");
        }
    }
    assert_eq!(pool.available(), start_available, "no mbuf leaked");
}

#[test]
fn rx_burst_fills_only_the_empty_slots() {
    let pool = pool("rp_fill", 128);
    let (a, b) = started_pair("fill", 64, &pool);
    let mut tx: MbufBurst<8> = MbufBurst::new();
    for i in 0..8 {
        tx.push(mbuf_with(&pool, &frame(i, 64))).expect("room");
    }
    assert_eq!(a.tx_burst(0, &mut tx), 8);
    let mut rx: MbufBurst<8> = MbufBurst::new();
    for i in 0..5 {
        rx.push(mbuf_with(&pool, &frame(1000 + i, 64)))
            .expect("room");
    }
    assert_eq!(b.rx_burst(0, &mut rx), 3, "only three slots were free");
    assert!(rx.is_full());
    assert_eq!(b.rx_burst(0, &mut rx), 0, "a full burst receives nothing");
    assert_eq!(rx.as_slice()[4].data(), &frame(1004, 64)[..]);
    assert_eq!(rx.as_slice()[5].data(), &frame(0, 64)[..]);
    rx.clear();
    assert_eq!(b.rx_burst(0, &mut rx), 5);
    assert_eq!(rx.pop().expect("one").data(), &frame(7, 64)[..]);
}

#[test]
fn mempool_exhaustion_returns_none_and_recovers_after_frees() {
    const MBUFS: u32 = 64;
    let _ = eal();
    let pool = Mempool::create("rp_exhaust", MBUFS, 16, 512, SOCKET_ID_ANY).expect("pool");
    let start_available = pool.available();
    assert_eq!(start_available, MBUFS);
    assert_eq!(pool.in_use(), 0);
    assert_eq!(pool.capacity(), MBUFS);

    let mut held = Vec::new();
    while let Some(m) = pool.alloc() {
        held.push(m);
        assert!(
            held.len() <= MBUFS as usize,
            "pool handed out more than it holds"
        );
    }
    assert_eq!(held.len(), MBUFS as usize);
    assert_eq!(pool.available(), 0);
    assert_eq!(pool.in_use(), MBUFS);
    assert!(pool.alloc().is_none(), "still exhausted");

    // Bulk allocation is all or nothing.
    let mut burst: MbufBurst<8> = MbufBurst::new();
    assert!(!pool.alloc_bulk(&mut burst, 4));
    assert!(burst.is_empty());

    held.truncate(40);
    assert_eq!(pool.available(), MBUFS - 40);
    assert!(pool.alloc_bulk(&mut burst, 8));
    assert!(burst.is_full());
    assert!(!pool.alloc_bulk(&mut burst, 1), "no free slot");
    drop(burst);
    drop(held);
    assert_eq!(pool.available(), start_available, "every mbuf is back");
    assert_eq!(pool.in_use(), 0);
    assert!(pool.alloc().is_some());
}

#[test]
fn mempool_rejects_bad_parameters_with_a_reason() {
    let _ = eal();
    let too_long = "a-mempool-name-that-is-far-too-long";
    let err = Mempool::create(too_long, 64, 0, 2176, SOCKET_ID_ANY).expect_err("name too long");
    assert!(err.to_string().contains("1..=26 bytes"), "{err}");
    let err = Mempool::create("rp_bad_cache", 64, 600, 2176, SOCKET_ID_ANY).expect_err("cache");
    assert!(err.to_string().contains("cache_size"), "{err}");
    let err = Mempool::create("rp_bad_room", 64, 0, 100, SOCKET_ID_ANY).expect_err("room");
    assert!(err.to_string().contains("headroom"), "{err}");

    let _first = pool("rp_dup", 32);
    let err = Mempool::create("rp_dup", 32, 0, 2176, SOCKET_ID_ANY).expect_err("duplicate");
    assert_eq!(err.errno(), Some(libc_eexist()), "{err}");
    assert!(err.to_string().contains("unique"), "{err}");
}

fn libc_eexist() -> i32 {
    17
}

#[test]
fn mbuf_edits_follow_dpdk() {
    let pool = pool("rp_mbuf", 8);
    let mut m = pool.alloc().expect("mbuf");
    assert!(m.is_empty());
    assert_eq!(m.headroom(), Mempool::HEADROOM_BYTES as usize);
    let room = m.tailroom();
    assert_eq!(room, 2048);

    m.append(10).expect("fits").copy_from_slice(b"0123456789");
    assert_eq!(m.data(), b"0123456789");
    assert_eq!(m.len(), 10);
    assert_eq!(m.tailroom(), room - 10);
    m.prepend(2).expect("headroom").copy_from_slice(b"ab");
    assert_eq!(m.data(), b"ab0123456789");
    assert!(m.adj(3));
    assert!(m.trim(4));
    assert_eq!(m.data(), b"12345");
    m.data_mut()[0] = b'X';
    assert_eq!(m.data(), b"X2345");
    assert!(!m.trim(6), "cannot trim more than there is");
    assert!(!m.adj(6));
    assert!(m.append(room).is_none(), "beyond the tailroom");
    assert!(m.append(70_000).is_none(), "beyond u16");
    assert_eq!(m.data_len(), 5);
    assert_eq!(m.segments(), 1);

    m.reset();
    assert!(m.is_empty());
    assert_eq!(m.headroom(), Mempool::HEADROOM_BYTES as usize);
    assert_eq!(m.tailroom(), room);

    // into_raw / from_raw round trip keeps ownership.
    let raw = m.into_raw();
    assert_eq!(pool.in_use(), 1);
    // SAFETY: raw came from into_raw just above and is owned by nobody else.
    let m = unsafe { precursor_ffi::Mbuf::from_raw(raw) };
    drop(m);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn burst_drain_retain_and_drop_free_what_they_should() {
    let pool = pool("rp_burst", 64);
    let start = pool.available();
    let mut burst: MbufBurst<16> = MbufBurst::new();
    for i in 0..16 {
        burst
            .push(mbuf_with(&pool, &frame(i, 20 + i as usize)))
            .expect("room");
    }
    let extra = mbuf_with(&pool, &frame(99, 64));
    let extra = burst
        .push(extra)
        .expect_err("full burst gives the mbuf back");
    drop(extra);

    burst.retain(|m| m.len() % 2 == 0);
    assert_eq!(burst.len(), 8);
    assert!(burst.iter().all(|m| m.len() % 2 == 0));
    assert_eq!(pool.in_use(), 8);

    for m in burst.iter_mut() {
        m.data_mut()[13] = 0xee;
    }
    assert!(burst.iter().all(|m| m.data()[13] == 0xee));

    // Take three, let the Drain free the rest.
    let taken: Vec<_> = burst.drain().take(3).collect();
    assert!(burst.is_empty());
    assert_eq!(taken.len(), 3);
    assert_eq!(pool.in_use(), 3);
    drop(taken);

    for i in 0..5 {
        burst.push(mbuf_with(&pool, &frame(i, 64))).expect("room");
    }
    drop(burst);
    assert_eq!(pool.available(), start);
}

#[test]
fn unknown_port_name_is_a_clear_error() {
    let err = Port::by_name(eal(), "net_nosuchdev9").expect_err("no such port");
    assert!(matches!(err, DpdkError::PortNotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("net_nosuchdev9"), "{text}");
    assert!(text.contains("--vdev"), "says how to create one: {text}");
    assert!(
        text.contains("net_ring0"),
        "lists the ports present: {text}"
    );

    let err = Port::from_id(31).expect_err("no port 31");
    assert!(matches!(err, DpdkError::PortNotFound { .. }), "{err:?}");
}

#[test]
fn second_eal_init_is_already_initialized() {
    let _ = eal();
    let err = Eal::init(&["--no-huge"]).expect_err("one EAL per process");
    assert!(matches!(err, DpdkError::AlreadyInitialized), "{err:?}");
    assert!(err.to_string().contains("one rte_eal_init per process"));
}

#[test]
fn eal_reports_clock_and_lcores() {
    let eal = eal();
    assert!(Eal::tsc_hz() > 0);
    let t0 = Eal::tsc();
    let t1 = Eal::tsc();
    assert!(t1 >= t0);
    assert_eq!(Eal::main_lcore(), 0, "-l 0");
    // Test threads are not EAL lcores (unless this one ran rte_eal_init).
    let id = Eal::lcore_id();
    assert!(id == 0 || id == u32::MAX, "lcore id {id}");
    assert!(eal.port_count() >= 1);
    assert!(eal.port_names().iter().any(|n| n == "net_ring0"));
}

#[test]
fn port_stats_count_packets() {
    let pool = pool("rp_stats", 128);
    let (a, b) = started_pair("stats", 128, &pool);
    let before_a = a.stats();
    assert_eq!(before_a.tx_packets, 0);
    let mut tx: MbufBurst<BURST> = MbufBurst::new();
    for round in 0..3u32 {
        for i in 0..10 {
            tx.push(mbuf_with(&pool, &frame(round * 10 + i, 64)))
                .expect("room");
        }
        assert_eq!(a.tx_burst(0, &mut tx), 10);
    }
    let mut rx: MbufBurst<BURST> = MbufBurst::new();
    assert_eq!(b.rx_burst(0, &mut rx), 30);
    assert_eq!(a.stats().tx_packets, 30);
    assert_eq!(b.stats().rx_packets, 30);
    assert_eq!(b.stats().tx_packets, 0);
    b.reset_stats().expect("reset");
    assert_eq!(b.stats().rx_packets, 0);
}

#[test]
fn vdev_ring_port_by_name_loops_back_and_is_owned_once() {
    let eal = eal();
    let pool = pool("rp_vdev", 128);
    let mut port = Port::by_name(eal, "net_ring0").expect("net_ring0 from --vdev");
    let err = Port::by_name(eal, "net_ring0").expect_err("already owned");
    assert!(matches!(err, DpdkError::PortInUse { .. }), "{err:?}");
    assert_eq!(port.name(), "net_ring0");

    let mut tx: MbufBurst<4> = MbufBurst::new();
    tx.push(mbuf_with(&pool, &frame(7, 64))).expect("room");
    assert_eq!(port.tx_burst(0, &mut tx), 0, "not started: nothing sent");
    assert_eq!(tx.len(), 1, "and nothing lost");
    assert!(port.start().is_err(), "start before configure is refused");

    port.configure(&ring_config(128), &pool).expect("configure");
    let applied = *port.applied_config().expect("applied");
    assert!(!applied.mtu_enforced, "net_ring has no MTU setting");
    assert_eq!(applied.mtu_bytes, 1500);
    port.start().expect("start");
    assert!(port.is_started());
    assert!(port.link().up);
    assert_eq!(
        port.mac_address(),
        [0; 6],
        "net_ring has no MAC address of its own"
    );
    assert!(
        port.configure(&ring_config(128), &pool).is_err(),
        "configure needs stop"
    );

    // One ring both ways: what the port sends, it receives.
    assert_eq!(port.tx_burst(0, &mut tx), 1);
    assert_eq!(port.tx_burst(1, &mut tx), 0, "queue 1 is not configured");
    let mut rx: MbufBurst<4> = MbufBurst::new();
    assert_eq!(port.rx_burst(1, &mut rx), 0, "queue 1 is not configured");
    assert_eq!(port.rx_burst(0, &mut rx), 1);
    assert_eq!(rx.as_slice()[0].data(), &frame(7, 64)[..]);

    port.stop().expect("stop");
    assert_eq!(port.rx_burst(0, &mut rx), 0);
}

#[test]
fn ring_pair_names_are_reusable_after_drop() {
    let pool = pool("rp_reuse", 64);
    for round in 0..3u32 {
        let (a, b) = started_pair("reuse", 32, &pool);
        let mut tx: MbufBurst<2> = MbufBurst::new();
        tx.push(mbuf_with(&pool, &frame(round, 64))).expect("room");
        assert_eq!(b.tx_burst(0, &mut tx), 1);
        // Left in flight on purpose: the pair frees it on drop.
        drop((a, b));
    }
    assert_eq!(pool.in_use(), 0);
    let err = ring_port_pair(eal(), "", 32).expect_err("empty name");
    assert!(matches!(err, DpdkError::InvalidArgument { .. }));
}

#[test]
fn configure_rejects_what_the_device_cannot_do() {
    let pool = pool("rp_limits", 64);
    let (mut a, _b) = ring_port_pair(eal(), "limits", 32).expect("pair");
    let err = a
        .configure(
            &PortConfig {
                rx_queues: 2,
                ..ring_config(64)
            },
            &pool,
        )
        .expect_err("ring pair ports have one RX queue");
    assert!(
        err.to_string().contains("rx_queues 2 must be 1..=1"),
        "{err}"
    );
    // Descriptor counts are clamped, not refused.
    a.configure(&ring_config(u16::MAX), &pool).expect("clamped");
}

#[test]
fn threads_can_leave_the_main_lcore() {
    let _ = eal();
    std::thread::spawn(|| {
        precursor_ffi::set_current_thread_affinity(&[0]).expect("pin to core 0");
        assert_eq!(
            precursor_ffi::current_thread_affinity().expect("read"),
            vec![0]
        );
        precursor_ffi::unpin_current_thread().expect("unpin");
        let cores = precursor_ffi::current_thread_affinity().expect("read");
        assert!(cores.contains(&0));
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(cores.len() >= online.min(2).min(cores.len()));
        let err = precursor_ffi::set_current_thread_affinity(&[]).expect_err("empty set");
        assert!(matches!(err, DpdkError::InvalidArgument { .. }));
    })
    .join()
    .expect("thread");
}

#[test]
fn an_mbuf_outliving_its_pool_stays_valid() {
    let pool = pool("rp_outlive", 16);
    let mut m = mbuf_with(&pool, &frame(5, 64));
    drop(pool); // leaked on purpose (with a message): one mbuf is still out
    m.data_mut()[20] = 1;
    assert_eq!(m.len(), 64);
    drop(m); // back into the leaked pool, which is still mapped
}
