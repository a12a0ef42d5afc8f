//! A failed `Eal::init` reports the decoded error, and there is no second try
//! (DPDK cannot re-run rte_eal_init reliably). Its own binary: it leaves the
//! process without an EAL.

use precursor_ffi::{DpdkError, Eal};

#[test]
fn bad_eal_argument_is_decoded_and_not_retried() {
    let err = Eal::init(&["--no-such-eal-option"]).expect_err("bad argument");
    match &err {
        DpdkError::Call { call, errno, .. } => {
            assert_eq!(*call, "rte_eal_init");
            assert_eq!(*errno, 22, "EINVAL");
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("rte_eal_init failed: Invalid argument"),
        "{text}"
    );
    assert!(
        text.contains("EAL argument is invalid"),
        "tells what to check: {text}"
    );
    let again = Eal::init(&["--no-huge"]).expect_err("no retry");
    assert!(matches!(again, DpdkError::AlreadyInitialized), "{again:?}");
}
