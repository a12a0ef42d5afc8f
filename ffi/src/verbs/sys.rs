//! Raw rdma-core 44 bindings (bindgen over <infiniband/verbs.h> and
//! <rdma/rdma_cma.h>) and the `prc_ibv_*` C shim. Nothing here is safe to call
//! without reading the verbs man pages; use [`crate::verbs`].

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

include!(concat!(env!("OUT_DIR"), "/verbs_bindings.rs"));
