#!/usr/bin/env bash
# Sets up what is missing (packages, hugepages), builds, and runs every test: unit tests,
# real-DPDK tests (net_ring, net_tap, hugepages), and end-to-end tests that start the data
# plane on af_packet/veth and TAP ports with clients in network namespaces, including the
# kill -9 crash loop. Then a smoke run of the benchmarks, clippy and rustfmt. Exit status 0
# only if all pass.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/setup.sh
started=$(date +%s)
step() { echo; echo "=== ci/test: $* ($(( $(date +%s) - started )) s)"; }

step "build (release, all targets)"
cargo build --release --workspace --all-targets

step "tests"
# Release: the end-to-end tests push a million messages through the real path.
cargo test --release --workspace --no-fail-fast

step "kafka suite: librdkafka's own integration tests against one broker (ci/kafka-suite.sh)"
# About 18 minutes (librdkafka's build, then 118 tests of at most 120 s each); bounded as a
# whole. Verdicts must match ci/kafka-suite-expected.tsv (docs/kafka.md).
timeout -k 30 2100 ci/kafka-suite.sh --timeout 120

step "fuzz: every target of fuzz/ for a bounded time from its corpus (ci/fuzz.sh)"
# About four minutes; fails on any crash, hang or OOM (docs/reliability.md).
ci/fuzz.sh

step "rdma: soft-RoCE in a QEMU TCG guest (verbs layer, then the transport end to end)"
# The host kernel has no RDMA subsystem; the guest boots Debian's kernel with rdma_rxe.
# Skipped loudly only where QEMU cannot run at all. Host side first: without RDMA every
# layer says so clearly (verbs, rdma_cm, the data plane's transport, the client).
cargo test --release -p precursor-ffi --features rdma --test verbs
cargo test --release -p precursor-dataplane -p precursor-client \
  --features precursor-dataplane/rdma,precursor-client/rdma --lib rdma
cargo build --release -p precursor-ffi --features rdma --example verbs_loopback --example cm_loopback
ci/rdma-guest.sh --skip-if-unavailable --timeout 300 --hugepages 16 \
  --add ci/rdma-guest/smoke.sh \
  --add target/release/examples/verbs_loopback --add target/release/examples/cm_loopback \
  --env VERBS_LOOPBACK="$PWD/target/release/examples/verbs_loopback" \
  --env CM_LOOPBACK="$PWD/target/release/examples/cm_loopback" \
  --script ci/rdma-guest/verbs.sh
# The transport (tests/rdma.rs): a real data plane listening on rxe0, real clients over RC
# queue pairs: 100,000 messages back by fetch and by READ, many clients, vanishing clients,
# QP errors on both sides, read grants at and beyond the high-water mark, kill -9 restarts,
# the CLI. About four minutes under TCG.
ci/rdma-guest-tests.sh --skip-if-unavailable --timeout 900

step "benchmark smoke (tiny counts; proves every step runs, judges no timing)"
bash bench/run.sh --quick --out target/bench-smoke
bash bench/command-ring.sh --quick
# Replication on a local three-broker cluster: ping, acks leader/all/all-durable.
bash bench/replication.sh --quick --out target/bench-replication-smoke
# Precursor beside NATS JetStream and Redis Streams: renders into its out dir, not docs/.
bash bench/compare.sh --quick --out target/bench-compare-smoke

step "clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
cargo clippy --release --workspace --all-targets \
  --features precursor/rdma,precursor-dataplane/rdma -- -D warnings

step "rustfmt"
cargo fmt --all -- --check

step "leftovers"
# Tests clean up after themselves: no namespace, veth, TAP or DPDK file may remain.
left=$(ip netns list | grep -c '^prc-' || true)
[ "$left" -eq 0 ] || { echo "ci/test: $left network namespaces left behind"; ip netns list; exit 1; }

step "done: all passed"
