//! The verbs layer on a host without RDMA (ours): no devices, and clear errors.
//! Real-device tests run in the soft-RoCE guest (examples/verbs_loopback.rs,
//! through ci/rdma-guest.sh). Run with `cargo test -p precursor-ffi --features rdma`.

#![cfg(feature = "rdma")]

use precursor_ffi::verbs::{
    self, Context, Endpoint, Gid, Mtu, RemoteRegion, VerbsError, NO_RDMA_SUBSYSTEM,
};

#[test]
fn no_rdma_subsystem_means_no_devices() {
    if verbs::rdma_subsystem_present() {
        eprintln!("skipped: this kernel has an RDMA subsystem (the no-RDMA path is for hosts without one)");
        return;
    }
    let devs = verbs::devices().expect("devices() must not fail without RDMA");
    assert!(devs.is_empty(), "{devs:?}");

    let err = verbs::require_devices().expect_err("no devices");
    assert!(matches!(err, VerbsError::NoRdmaSubsystem), "{err:?}");
    assert_eq!(err.to_string(), NO_RDMA_SUBSYSTEM);
    assert!(err.to_string().contains("ci/rdma-guest.sh"));

    let err = Context::open("rxe0").expect_err("no device to open");
    assert!(matches!(err, VerbsError::NoRdmaSubsystem), "{err:?}");

    // The connection manager says the same instead of a bare errno.
    let err = verbs::EventChannel::new().expect_err("no rdma_cm without RDMA");
    assert!(matches!(err, VerbsError::NoRdmaSubsystem), "{err:?}");
}

#[test]
fn cm_event_kinds_have_librdmacm_names() {
    use verbs::CmEventKind;
    assert_eq!(CmEventKind::Established.name(), "RDMA_CM_EVENT_ESTABLISHED");
    assert_eq!(
        CmEventKind::ConnectRequest.name(),
        "RDMA_CM_EVENT_CONNECT_REQUEST"
    );
    assert_eq!(
        CmEventKind::Disconnected.name(),
        "RDMA_CM_EVENT_DISCONNECTED"
    );
}

#[test]
fn devices_lists_what_the_kernel_has() {
    // On any host: devices() either lists devices or is empty, never an error
    // for a missing subsystem.
    let devs = verbs::devices().expect("devices()");
    for d in &devs {
        assert!(!d.name.is_empty());
    }
    match Context::open("precursor-no-such-device") {
        Err(VerbsError::NoRdmaSubsystem | VerbsError::NoDevices) => assert!(devs.is_empty()),
        Err(VerbsError::DeviceNotFound { available, .. }) => assert!(!available.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn endpoint_and_remote_region_round_trip() {
    let mut gid = [0u8; 16];
    gid[10] = 0xff;
    gid[11] = 0xff;
    gid[12..].copy_from_slice(&[10, 0, 0, 1]);
    let ep = Endpoint {
        qp_num: 0x11,
        psn: 0xab_cdef,
        lid: 7,
        gid: Gid(gid),
        port_num: 1,
        gid_index: 1,
    };
    assert_eq!(Endpoint::from_bytes(&ep.to_bytes()), ep);
    assert_eq!(
        Gid(gid).to_string(),
        "0000:0000:0000:0000:0000:ffff:0a00:0001"
    );
    let r = RemoteRegion {
        addr: 0x7f00_0000_1000,
        rkey: 0x1234,
        len: 1 << 20,
    };
    assert_eq!(RemoteRegion::from_bytes(&r.to_bytes()), r);
    assert_eq!(r.at(16).addr, 0x7f00_0000_1010);
    assert_eq!(Mtu::M1024.bytes(), 1024);
    assert_eq!(Mtu::M4096.bytes(), 4096);
    assert_eq!(Mtu::from_raw(3), Mtu::M1024);
}
