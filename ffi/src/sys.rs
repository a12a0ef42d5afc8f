//! Raw DPDK 22.11 bindings (bindgen) and the `prc_*` C shim. Nothing here is
//! safe to call without reading DPDK's documentation; use [`crate::dpdk`].

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    improper_ctypes,
    unsafe_op_in_unsafe_fn,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    rustdoc::all
)]

include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
