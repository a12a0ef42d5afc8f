#!/usr/bin/env bash
# Sets up what is missing (packages, hugepages), builds, and starts a single-node broker on
# its embedded default in the foreground: `precursor up` runs the control plane (admin
# socket /run/precursor/precursor.sock, metrics on 127.0.0.1:9464) and supervises the data
# plane (a DPDK TAP port prc0: kernel side 10.77.0.1/24, data plane 10.77.0.2 UDP 9190),
# data under ./data. Ctrl-C stops both cleanly.
# Extra arguments go to `precursor up`, e.g. `ci/up.sh --config config/examples/precursor.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/setup.sh
echo "ci/up: building (release)" >&2
cargo build --release --workspace --quiet
echo "ci/up: starting; in another terminal: target/release/precursor status" >&2
exec target/release/precursor up "$@"
