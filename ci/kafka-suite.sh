#!/usr/bin/env bash
# librdkafka's own integration tests (2.15.0, quick mode, ../shared/kafka-suites) against ONE
# long-lived broker, as a user's broker runs: every test of the suite's broker list, one
# test-runner per test, then the verdicts compared with ci/kafka-suite-expected.tsv (every
# test that is allowed not to pass, and why; docs/kafka.md keeps the same table). Fails on a
# test that newly fails, and on a listed failure that now passes (so the list stays true).
#
#   ci/kafka-suite.sh [--suite DIR] [--out DIR] [--timeout S] [--tests "0001 0002 ..."]
#
# The broker: `precursor up` on a TAP port of its own (prs0, 10.78.0.0/24), gateway on
# 127.0.0.1:19092, its own admin socket, metrics port, DPDK file prefix and data directory
# under a temporary directory; `topics.default_partitions = 4` as the suite assumes. The
# suite's directory is found beside this checkout (../shared/kafka-suites) or given; where
# it is absent the step says so and passes (a clean clone without the shared tree).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SUITE=${PRECURSOR_KAFKA_SUITE:-$root/../shared/kafka-suites}
OUT=$root/target/kafka-suite
TMO=120
TESTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE=$2; shift ;; --out) OUT=$2; shift ;; --timeout) TMO=$2; shift ;;
    --tests) TESTS=$2; shift ;;
    *) echo "ci/kafka-suite: unknown argument $1" >&2; exit 2 ;;
  esac; shift
done
say() { echo "ci/kafka-suite: $*" >&2; }
if [ ! -x "$SUITE/librdkafka.sh" ]; then
  say "no librdkafka suite at $SUITE (set PRECURSOR_KAFKA_SUITE): skipped"
  exit 0
fi

work=$(mktemp -d /tmp/precursor-kafka-suite.XXXXXX)
broker=""
cleanup() {
  if [ -n "$broker" ] && kill -0 "$broker" 2>/dev/null; then
    kill -INT "$broker"
    for _ in $(seq 100); do kill -0 "$broker" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$broker" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/suite.toml" <<EOF
[node]
data_dir = "$work/data"

[dataplane]
file_prefix = "kafka-suite"

[port]
iface = "prs0"
address = "10.78.0.2"
kernel_address = "10.78.0.1/24"

[controlplane]
admin_socket = "$work/admin.sock"
metrics_listen = "127.0.0.1:19464"

[gateway]
listen = "127.0.0.1:19092"

[topics]
default_partitions = 4
EOF
target/release/precursor up --config "$work/suite.toml" >"$OUT.broker.log" 2>&1 &
broker=$!
mkdir -p "$OUT"
for _ in $(seq 300); do
  # The data plane attached (not only the control plane up): a test that starts first
  # otherwise meets REQUEST_TIMED_OUT "the data plane is not running".
  if target/release/precursor status --json --config "$work/suite.toml" 2>/dev/null |
       grep -q '"dataplane_alive":true' &&
     (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null; then
    break
  fi
  kill -0 "$broker" 2>/dev/null || { say "the broker exited:"; tail -20 "$OUT.broker.log"; exit 1; }
  sleep 0.2
done
started=$(date +%s)
args=(--bootstrap 127.0.0.1:19092 --out "$OUT" --timeout "$TMO")
[ -z "$TESTS" ] || args+=(--tests "$TESTS")
"$SUITE/librdkafka.sh" "${args[@]}" | tail -1
say "suite ran in $(( $(date +%s) - started )) s against one broker"
kill -0 "$broker" 2>/dev/null || { say "the broker died during the suite"; tail -20 "$OUT.broker.log"; exit 1; }

python3 - "$OUT/summary.tsv" ci/kafka-suite-expected.tsv "$TESTS" <<'PY'
import sys
summary, expected_path, only = sys.argv[1], sys.argv[2], sys.argv[3].split()
expected = {}
for line in open(expected_path):
    if line.strip() and not line.startswith("#"):
        number, verdict, why = line.rstrip("\n").split("\t", 2)
        expected[number] = (verdict, why)
bad = []
seen = set()
for line in open(summary):
    fields = line.rstrip("\n").split("\t")
    number, name, verdict = fields[0], fields[1], fields[2]
    first = fields[3] if len(fields) > 3 else ""
    seen.add(number)
    allowed = expected.get(number, ("PASS", ""))[0]
    if allowed == "ANY":
        print(f"ci/kafka-suite: {number} {name}: {verdict} (listed ANY)", file=sys.stderr)
        continue
    if verdict == "SKIP" and allowed != "FAIL":
        continue  # skipped by the suite itself (needs a feature or a Kafka version)
    if verdict != allowed:
        bad.append(f"{number} {name}: {verdict}, expected {allowed} {expected.get(number, ('', ''))[1]} {first}")
for number, (verdict, why) in expected.items():
    if verdict == "FAIL" and number not in seen and (not only or number in only):
        bad.append(f"{number}: listed as failing ({why}) but did not run")
for line in bad:
    print("ci/kafka-suite: " + line, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
say "verdicts as expected (ci/kafka-suite-expected.tsv)"
