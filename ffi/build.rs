//! Binds Debian's DPDK 22.11 (see shared/notes/dpdk-and-verbs-bindings.md):
//! bindgen over `src/wrapper.h` and a C shim (`src/shim.c`) for the `static inline`
//! fast path, both with the flags of `pkg-config --cflags libdpdk` taken verbatim
//! (`-include rte_config.h` and `-march=...` matter; the pkg-config crate's parsed
//! include list drops them). Linking is dynamic, through pkg-config's libs.
//!
//! With the `rdma` feature, also binds the system rdma-core (Debian 12: v44,
//! `libibverbs-dev`, `librdmacm-dev`): bindgen over `src/verbs_shim.h`
//! (<infiniband/verbs.h>, <rdma/rdma_cma.h>) into `verbs_bindings.rs`, and a C
//! shim (`src/verbs_shim.c`) for verbs' `static inline` fast path
//! (ibv_post_send/recv, ibv_poll_cq) and the `ibv_query_port` macro.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const DPDK_VERSION_MIN: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/wrapper.h");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    if env::var_os("CARGO_FEATURE_DPDK").is_some() {
        dpdk(&out);
    }
    if env::var_os("CARGO_FEATURE_RDMA").is_some() {
        verbs(&out);
    }
}

/// Bindings, shim and link flags for DPDK (feature `dpdk`, on by default).
fn dpdk(out: &std::path::Path) {
    let cflags = dpdk_cflags();

    // Dynamic link flags (-lrte_ethdev, -lrte_mbuf, ...). EAL loads the PMDs from
    // its plugin directory by itself at rte_eal_init.
    pkg_config::Config::new()
        .atleast_version(DPDK_VERSION_MIN)
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!("libdpdk >= {DPDK_VERSION_MIN} not found by pkg-config ({e}); install: apt-get install libdpdk-dev pkg-config")
        });
    // Not part of libdpdk's public libs but called directly: rte_eth_from_rings
    // (ring PMD) and rte_vdev_uninit (vdev bus). These .so files are the same
    // inodes as the plugins EAL dlopens, so they are loaded once.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");
    println!("cargo:rustc-link-lib=dylib=rte_bus_vdev");

    let mut shim = cc::Build::new();
    shim.file("src/shim.c")
        .include("src")
        .warnings(true)
        .opt_level(3);
    for flag in &cflags {
        shim.flag(flag);
    }
    shim.compile("precursor_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("src/wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-Isrc")
        .allowlist_function("rte_.*")
        .allowlist_function("prc_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("RING_F_.*|SOCKET_ID_ANY|LCORE_ID_ANY")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed over src/wrapper.h (is libclang-dev installed?)");
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("write dpdk_bindings.rs");
}

/// rdma-core >= 44: libibverbs 1.14.44, librdmacm 1.3.44 (pkg-config versions).
const IBVERBS_VERSION_MIN: &str = "1.14";
const RDMACM_VERSION_MIN: &str = "1.3";

/// Bindings, shim and link flags for libibverbs + librdmacm (feature `rdma`).
fn verbs(out: &std::path::Path) {
    println!("cargo:rerun-if-changed=src/verbs_shim.h");
    println!("cargo:rerun-if-changed=src/verbs_shim.c");
    let mut include_paths = Vec::new();
    for (lib, min) in [
        ("libibverbs", IBVERBS_VERSION_MIN),
        ("librdmacm", RDMACM_VERSION_MIN),
    ] {
        let found = pkg_config::Config::new()
            .atleast_version(min)
            .probe(lib)
            .unwrap_or_else(|e| {
                panic!(
                    "{lib} >= {min} not found by pkg-config ({e}); the `rdma` feature needs \
                     rdma-core: apt-get install libibverbs-dev librdmacm-dev pkg-config"
                )
            });
        include_paths.extend(found.include_paths);
    }
    let include_args: Vec<String> = include_paths
        .iter()
        .map(|p| format!("-I{}", p.display()))
        .collect();

    let mut shim = cc::Build::new();
    shim.file("src/verbs_shim.c")
        .include("src")
        .includes(&include_paths)
        .warnings(true)
        .opt_level(3);
    shim.compile("precursor_verbs_shim");

    let bindings = bindgen::Builder::default()
        .header("src/verbs_shim.h")
        .clang_args(&include_args)
        .clang_arg("-Isrc")
        .allowlist_function("ibv_.*|___ibv_.*|__ibv_.*|rdma_.*|prc_ibv_.*")
        .allowlist_type("ibv_.*|rdma_.*")
        .allowlist_var("IBV_.*|RDMA_.*")
        // C enums become typed constants named as in C (IBV_QPS_RTS, ...):
        // values read from the device (completion status, port state) may be
        // outside the enum, which a Rust enum could not hold soundly.
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed over src/verbs_shim.h (are libibverbs-dev, librdmacm-dev and libclang-dev installed?)");
    bindings
        .write_to_file(out.join("verbs_bindings.rs"))
        .expect("write verbs_bindings.rs");
}

/// `pkg-config --cflags libdpdk`, split on whitespace, verbatim.
fn dpdk_cflags() -> Vec<String> {
    let output = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config (apt-get install pkg-config libdpdk-dev)");
    assert!(
        output.status.success(),
        "pkg-config --cflags libdpdk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("pkg-config output is UTF-8");
    let flags: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    assert!(
        flags.iter().any(|f| f == "rte_config.h"),
        "pkg-config --cflags libdpdk lacks `-include rte_config.h`: {text}"
    );
    flags
}
