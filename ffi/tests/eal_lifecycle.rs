//! The EAL's own lifetime: cleanup waits for the last pool and port, and
//! happens once. Its own test binary, because it ends the process's EAL.

mod common;

use common::{frame, mbuf_with, no_huge_eal_args};
use precursor_ffi::{
    ring_port_pair, DpdkError, Eal, MbufBurst, Mempool, PortConfig, SOCKET_ID_ANY,
};

#[test]
fn eal_cleanup_waits_for_pools_and_ports_then_refuses_new_ones() {
    let err = Mempool::create("before_init", 64, 0, 2176, SOCKET_ID_ANY).expect_err("no EAL yet");
    assert!(matches!(err, DpdkError::EalNotRunning), "{err:?}");

    let args = no_huge_eal_args("life", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let eal = Eal::init(&args).expect("EAL init");
    let runtime_dir = eal.runtime_dir();
    assert!(matches!(
        Eal::init(&args),
        Err(DpdkError::AlreadyInitialized)
    ));

    let pool = Mempool::create(
        "life",
        64,
        0,
        Mempool::DEFAULT_DATA_ROOM_BYTES,
        SOCKET_ID_ANY,
    )
    .expect("pool");
    let (mut a, mut b) = ring_port_pair(&eal, "life", 32).expect("pair");
    let cfg = PortConfig {
        rx_descriptors: 32,
        tx_descriptors: 32,
        ..PortConfig::default()
    };
    for port in [&mut a, &mut b] {
        port.configure(&cfg, &pool).expect("configure");
        port.start().expect("start");
    }

    // The EAL handle goes first; pools and ports keep DPDK up.
    drop(eal);
    let mut burst: MbufBurst<4> = MbufBurst::new();
    burst.push(mbuf_with(&pool, &frame(1, 64))).expect("room");
    assert_eq!(a.tx_burst(0, &mut burst), 1);
    assert_eq!(b.rx_burst(0, &mut burst), 1);
    assert_eq!(burst.as_slice()[0].data(), &frame(1, 64)[..]);
    drop(burst);
    drop((a, b));
    assert_eq!(pool.in_use(), 0);
    drop(pool); // the last reference: rte_eal_cleanup runs here

    let err = Mempool::create("after_cleanup", 64, 0, 2176, SOCKET_ID_ANY).expect_err("EAL gone");
    assert!(matches!(err, DpdkError::EalNotRunning), "{err:?}");
    assert!(matches!(
        Eal::init(&args),
        Err(DpdkError::AlreadyInitialized)
    ));
    if let Some(dir) = runtime_dir {
        assert!(
            !dir.exists(),
            "the empty runtime dir {} is removed",
            dir.display()
        );
    }
}
