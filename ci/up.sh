#!/usr/bin/env bash
# Sets up what is missing (packages, hugepages), builds, and starts a single-node broker on
# its embedded default in the foreground: a DPDK TAP port prc0 (kernel side 10.77.0.1/24,
# data plane 10.77.0.2 UDP 9190), data under ./data. Ctrl-C stops it cleanly.
# Extra arguments go to the data plane, e.g. `ci/up.sh --config config/examples/precursor.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/setup.sh
echo "ci/up: building (release)" >&2
cargo build --release --workspace --quiet
echo "ci/up: starting the data plane; in another terminal: target/release/precursor produce t" >&2
exec target/release/precursor dataplane "$@"
