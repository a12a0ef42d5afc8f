#!/bin/sh
# Runs inside the soft-RoCE guest (ci/rdma-guest.sh --script ci/rdma-guest/transport.sh):
# the RDMA transport's end-to-end tests (tests/rdma.rs, built with --features rdma), one at
# a time. The harness passes the test executable as RDMA_TEST_BIN and copies it, the
# rdma-built precursor-dataplane and the two DPDK plugins the data plane needs.
# The data plane's DPDK port is an af_packet port on a dummy interface of its own (unused:
# the clients come over RDMA on rxe0).
set -e
# DPDK's runtime directory lives under /var/run, which this minimal root lacks.
[ -e /var/run ] || { mkdir -p /var; ln -s /run /var/run; }
/usr/sbin/ip link add prcdp0 type dummy
/usr/sbin/ip link set prcdp0 up
export PRECURSOR_RDMA_TEST_IFACE=prcdp0
exec "$RDMA_TEST_BIN" --test-threads=1 ${RDMA_TEST_ARGS:-} ${RDMA_TEST_FILTER:-}
