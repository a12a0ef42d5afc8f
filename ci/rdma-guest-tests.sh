#!/usr/bin/env bash
# Builds the RDMA transport (the data plane and the client with --features rdma) and its
# end-to-end tests (tests/rdma.rs), then runs them inside the soft-RoCE QEMU guest
# (ci/rdma-guest.sh): a real precursor-dataplane listening on rxe0 with rdma_cm, real
# clients over RC queue pairs. Bounded by --timeout (default 900 s, boot included).
#
#   ci/rdma-guest-tests.sh [--skip-if-unavailable] [--timeout S] [TEST_NAME_FILTER]
#
# Exit status: the tests' (0 = all passed); see ci/rdma-guest.sh for 124/125/77.
set -euo pipefail
cd "$(dirname "$0")/.."
SKIP=()
TIMEOUT=900
FILTER=
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-if-unavailable) SKIP=(--skip-if-unavailable) ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift ;;
    -*) echo "ci/rdma-guest-tests: unknown option $1" >&2; exit 2 ;;
    *) FILTER=$1 ;;
  esac
  shift
done

cargo build --release -p precursor-dataplane --features rdma
# The test executable's path, from cargo's JSON messages.
bin=$(cargo test --release --features rdma --test rdma --no-run --message-format=json 2>/dev/null |
  grep '"kind":\["test"\]' | grep '"name":"rdma"' |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "ci/rdma-guest-tests: no test executable built" >&2; exit 1; }

# The guest has no DPDK plugin directory: the two plugins the data plane's (unused) port
# needs are copied to their usual place, under their versioned names EAL loads.
pmds=/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0
exec ci/rdma-guest.sh "${SKIP[@]}" --timeout "$TIMEOUT" --mem 2G --hugepages 256 \
  --env RDMA_TEST_BIN="$bin" --env RDMA_TEST_FILTER="$FILTER" --env RDMA_TEST_ARGS="${RDMA_TEST_ARGS:-}" \
  --add "$bin" --add target/release/precursor-dataplane --add target/release/precursor \
  --add "$pmds/librte_mempool_ring.so.23.0" --add "$pmds/librte_net_af_packet.so.23.0" \
  --script ci/rdma-guest/transport.sh
