#!/usr/bin/env bash
# Host set-up for Precursor on Debian 12, as root: installs what is missing and reserves
# hugepages. Idempotent; sourced by ci/up.sh and ci/test.sh, or run alone.
set -euo pipefail

# Packages: DPDK 22.11 and what bindgen needs; iproute2 for TAP/veth/netns; python3 for
# the benchmark's disk probe; procps for pgrep; rdma-core's headers for the verbs bindings
# (ffi feature `rdma`; the soft-RoCE guest's own packages are installed by ci/rdma-guest.sh);
# nats-server and redis-server (with redis-cli) for bench/compare.sh, e2fsprogs for its
# chattr/lsattr; Kafka clients nobody here wrote for the gateway's tests (tests/kafka.rs):
# kcat and librdkafka through python3-confluent-kafka, kafka-python; python3-venv for the
# venv below; for tests/operations.rs: chromium (the dashboard in a real browser, driven by
# playwright-core from npm below, hence nodejs and npm) and prometheus (promtool checks and
# unit-tests docs/alerts.yml).
PACKAGES=(dpdk libdpdk-dev clang libclang-dev pkg-config gcc make iproute2 procps python3 kmod
          libibverbs-dev librdmacm-dev nats-server redis-server redis-tools e2fsprogs
          kcat python3-confluent-kafka python3-kafka python3-venv
          chromium prometheus)
# A current librdkafka for the Kafka tests: the confluent-kafka wheel from PyPI bundles one
# (Debian's 2.0.2 compresses only zstd against brokers without Produce v0, see docs/kafka.md).
KAFKA_VENV=/opt/precursor-kafka-venv
CONFLUENT_KAFKA_WHEEL_VERSION=2.16.1
# playwright-core (no browsers of its own: it drives Debian's /usr/bin/chromium) for the
# dashboard test (tests/dashboard/read_dashboard.js).
PLAYWRIGHT_DIR=/opt/precursor-playwright
PLAYWRIGHT_CORE_VERSION=1.65.2
# 2 MiB pages to reserve: DPDK's mbufs plus active segments of the tests (2 GiB of 24).
HUGEPAGES_WANTED=${PRECURSOR_HUGEPAGES:-1024}

say() { echo "ci/setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "needs root (apt packages, hugepages, network namespaces); run with sudo"
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js for playwright-core: any node with npm on PATH will do. A machine may carry a newer
# nodejs from another archive that bundles npm and conflicts with Debian's npm package; only
# a machine with neither gets Debian's two packages.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  dpkg-query -W -f='${Status}' nodejs 2>/dev/null | grep -q "install ok installed" || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$KAFKA_VENV/bin/python" -c "import confluent_kafka" >/dev/null 2>&1; then
  say "installing confluent-kafka $CONFLUENT_KAFKA_WHEEL_VERSION into $KAFKA_VENV"
  /usr/bin/python3 -m venv "$KAFKA_VENV"
  "$KAFKA_VENV/bin/pip" install -q "confluent-kafka==$CONFLUENT_KAFKA_WHEEL_VERSION"
fi

if ! grep -qs "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" "$PLAYWRIGHT_DIR/node_modules/playwright-core/package.json"; then
  say "installing playwright-core $PLAYWRIGHT_CORE_VERSION into $PLAYWRIGHT_DIR"
  mkdir -p "$PLAYWRIGHT_DIR"
  (cd "$PLAYWRIGHT_DIR" && npm install --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_CORE_VERSION")
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    say "no Rust toolchain (cargo) found: install rustup's stable toolchain first"
    exit 1
  fi
fi

# cargo-fuzz (libFuzzer) for ci/fuzz.sh; it runs on the stable toolchain with
# RUSTC_BOOTSTRAP=1 (docs/reliability.md).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Hugepages: reserve and mount when fewer are there. A kernel that refuses (no memory, a
# container) is not fatal: the data plane falls back to --no-huge and /dev/shm and says so.
total=$(awk '/^HugePages_Total:/ {print $2}' /proc/meminfo)
if [ "${total:-0}" -lt "$HUGEPAGES_WANTED" ]; then
  echo "$HUGEPAGES_WANTED" > /proc/sys/vm/nr_hugepages 2>/dev/null || true
  total=$(awk '/^HugePages_Total:/ {print $2}' /proc/meminfo)
fi
if ! grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null || true
fi
if grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts && [ "${total:-0}" -gt 0 ]; then
  say "hugepages: ${total} x 2 MiB reserved, hugetlbfs at /dev/hugepages"
else
  say "warning: no hugepages (the data plane will run with --no-huge and segments in /dev/shm)"
fi

# A TAP device needs the tun driver.
if [ ! -e /dev/net/tun ]; then
  modprobe tun 2>/dev/null || true
  [ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200 2>/dev/null || true; }
fi
