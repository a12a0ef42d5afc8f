#!/usr/bin/env bash
# The Kafka gateway's aim: one librdkafka producer on loopback, 100-byte messages, as fast
# as it goes (docs/benchmarks.md, "The Kafka gateway"), beside the native IPC path on the
# same data plane in the same run (root: hugepages, a TAP port).
#
#   sudo bench/kafka.sh                 # R=5 runs of each, about 2 minutes
#   sudo bench/kafka.sh --quick         # tiny counts, R=1: proves every step works
#   options: --runs R  --messages N (per run, default 5000000)  --out DIR
#            (default target/bench-kafka)  --idle backoff|spin (default backoff)
#            --fetch direct|ipc (default direct: the gateway's Fetch reads the shared log
#            maps; ipc removes <cnc_dir>/paths so that it asks the data plane over IPC,
#            the path before issue 5, for a comparison)
#
# Unlike bench/compare.sh, where every client shares core 0 with the broker's other threads
# because a spinning lcore owns core 1, here the lcore parks when idle (`idle = "backoff"`)
# and nothing is pinned but the lcore: the client gets what a Kafka client gets on a
# machine whose broker does not reserve a core. `--idle spin` measures the other setting.
# Per run, in turn: native IPC produce (precursor bench produce --transport ipc, the
# client library, acks=leader), Kafka produce acks=1, Kafka produce acks=all + idempotence,
# Kafka consume of the acks=1 topic (every payload verified).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
runs=5
messages=5000000
idle=backoff
fetch=direct
out="$repo/target/bench-kafka"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) runs=1; messages=20000 ;;
        --runs) runs="$2"; shift ;;
        --messages) messages="$2"; shift ;;
        --idle) idle="$2"; shift ;;
        --fetch) fetch="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "bench/kafka.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
out=$(realpath -m "$out")
for n in "$runs" "$messages"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench/kafka.sh: $n is not a positive whole number" >&2; exit 2; }
done
case "$idle" in backoff|spin) ;; *) echo "bench/kafka.sh: --idle backoff or spin" >&2; exit 2 ;; esac
case "$fetch" in direct|ipc) ;; *) echo "bench/kafka.sh: --fetch direct or ipc" >&2; exit 2 ;; esac
if [ "$(id -u)" != 0 ]; then
    echo "bench/kafka.sh: needs root (hugepages, a TAP port): sudo $0" >&2
    exit 1
fi

bench_build "$repo"
pb="$bin/precursor-bench"
bench_wait_for_quiet_machine bench/kafka.sh
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

prefix="bench-kafka-$$"
work="$out/run-$$"
results="$out/results"
memory_dir=$(bench_memory_dir "precursor-$prefix")
gateway_pid=""
cleanup() {
    bench_stop_gateway 2>/dev/null || true
    bench_stop_dataplane 2>/dev/null || true
    rm -rf "$memory_dir" "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work" "$results"
rm -f "$results"/*.json

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
gateway="127.0.0.1:$port"
config="$work/precursor.toml"
cat > "$config" <<EOF
[node]
data_dir = "$work/data"
memory_dir = "$memory_dir"
[dataplane]
file_prefix = "$prefix"
lcore = $(( $(nproc) - 1 ))
idle = "$idle"
[port]
kind = "tap"
iface = "pk$$"
address = "10.79.$(( $$ % 250 )).2"
kernel_address = "10.79.$(( $$ % 250 )).1/24"
[controlplane]
admin_socket = "$work/admin.sock"
metrics_listen = "127.0.0.1:0"
[gateway]
listen = "$gateway"
EOF

bench_start_dataplane "$config" "" "$work/dataplane.log"
if [ "$fetch" = ipc ]; then
    # Without it the gateway cannot find the log maps and fetches over IPC.
    rm -f "/dev/shm/precursor-$prefix/paths"
fi
bench_start_gateway "$config" "$work/gateway.log" "$port"

# $1: result name; rest: the command (one JSON line).
record() {
    local name="$1"
    shift
    "$@" > "$results/$name.json" || echo "   $name: exit $? (errors counted)" >&2
    python3 - "$results/$name.json" <<'EOF' >&2
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(f"   {sys.argv[1].rsplit('/', 1)[-1]:<28} {r['msgs_per_sec']:>12,.0f} msgs/s  errors {r['errors']}")
EOF
}
kafka() { "$pb" kafka "$@" --bootstrap "$gateway"; }
ipc="/dev/shm/precursor-$prefix"
for r in $(seq "$runs"); do
    echo "== run $r of $runs ($messages messages of 100 bytes each)" >&2
    record "ipc-produce-$r" "$bin/precursor" bench produce --transport ipc --ipc-dir "$ipc" \
        --topic "i$r" --acks leader --messages "$messages" --json --quiet
    record "kafka-produce-leader-$r" kafka produce --topic "k$r" --durability leader \
        --messages "$messages" --window 65536
    record "kafka-produce-durable-$r" kafka produce --topic "d$r" --durability durable \
        --messages "$messages" --window 65536
    record "kafka-consume-$r" kafka consume --topic "k$r" --durability leader \
        --messages "$messages"
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$results" "$runs" "$idle" "$load_start" "$load_end" "$fetch" <<'EOF'
import glob, json, statistics, sys
results, runs, idle, load_start, load_end, fetch = sys.argv[1:]
def rows(name):
    return [json.loads(open(f).readline()) for f in sorted(glob.glob(f"{results}/{name}-*.json"))]
def median(name):
    rs = rows(name)
    return statistics.median(r["msgs_per_sec"] for r in rs), sum(r["errors"] for r in rs)
ipc, ipc_errors = median("ipc-produce")
print(f"bench/kafka.sh: medians of {runs} runs, lcore idle={idle}, fetch={fetch}, load {load_start} -> {load_end}")
print(f"  native IPC produce, acks=leader          {ipc:>12,.0f} msgs/s  errors {ipc_errors}")
for name, label in [("kafka-produce-leader", "Kafka produce, acks=1"),
                    ("kafka-produce-durable", "Kafka produce, acks=all + idempotence"),
                    ("kafka-consume", "Kafka consume, every payload verified")]:
    m, errors = median(name)
    print(f"  {label:<40} {m:>12,.0f} msgs/s  errors {errors}  ({m / ipc:.2f}x native IPC)")
EOF
echo "results: $results" >&2
