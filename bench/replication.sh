#!/usr/bin/env bash
# Replication's cost (issue 11, docs/benchmarks.md "Replication"): a local three-broker
# cluster (`precursor cluster up`, root), one partition with three replicas, 100-byte
# messages through the native client over each broker's DPDK af_packet port, and in the
# same run, on the same ports:
#   - the bare round trip: `bench ping` to the leader (window 1)
#   - acks=leader, acks=all (ISR memory), acks=all-durable (ISR disk): throughput
#   - the same three at a fixed 5,000 msgs/s: produce->ack latency (CO-corrected)
# R runs of each, medians reported. Three data planes share the two cores: every lcore
# parks when idle (the balanced preset's `backoff`, parks up to
# dataplane.idle_park_us_max), so latencies include wake-ups; say so beside any number.
#
#   sudo bench/replication.sh             # R=3, about 3 minutes
#   sudo bench/replication.sh --quick     # tiny counts, R=1: proves every step works
#   options: --runs R  --messages N (throughput rows, default 1000000)  --out DIR
#            (default target/bench-replication)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs=3
messages=1000000
rate_messages=20000
out="$repo/target/bench-replication"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) runs=1; messages=20000; rate_messages=2000 ;;
        --runs) runs="$2"; shift ;;
        --messages) messages="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "bench/replication.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || { echo "bench/replication.sh: needs root (namespaces, hugepages)" >&2; exit 1; }

precursor="$repo/target/release/precursor"
[ -x "$precursor" ] && [ -x "$repo/target/release/precursor-dataplane" ] || {
    echo "bench/replication.sh: build first: cargo build --release --workspace" >&2; exit 1; }
mkdir -p "$out"
dir=$(mktemp -d /tmp/precursor-bench-replication.XXXXXX)
name="brep$$"
name=${name:0:8}
cleanup() { "$precursor" cluster down --dir "$dir" --purge >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$precursor" cluster up --nodes 3 --dir "$dir" --name "$name" --subnet 10.81.0.0/24 >"$out/cluster-up.txt"
socket="$dir/node-1/precursor.sock"
"$precursor" topic create rep --partitions 1 --replication-factor 3 --min-insync-replicas 2 \
    --socket "$socket" >/dev/null
leader=""
for _ in $(seq 1 100); do
    leader=$("$precursor" topic describe rep --json --socket "$socket" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["partitions"][0]["leader"])')
    [ "$leader" != "0" ] && break
    sleep 0.1
done
[ -n "$leader" ] && [ "$leader" != "0" ] || { echo "bench/replication.sh: no leader" >&2; exit 1; }
broker="10.81.0.2$leader:9190"
echo "cluster of 3 in $dir, partition rep-0 led by broker $leader ($broker)"

results="$out/results.jsonl"
: >"$results"
row() { # label, then the bench arguments
    local label="$1"
    shift
    local json
    json=$("$precursor" bench "$@" --broker "$broker" --json)
    echo "{\"row\": \"$label\", \"result\": $json}" >>"$results"
    echo "  $label: $(echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f msgs/s, p50 %.1f us, p99 %.1f us" % (r["msgs_per_sec"], r["p50_us"], r["p99_us"]))')"
}
for run in $(seq 1 "$runs"); do
    echo "run $run of $runs"
    row "ping (bare round trip)" ping --messages 20000 --window 1
    for acks in leader all all-durable; do
        row "produce acks=$acks" produce --topic rep --acks "$acks" --messages "$messages"
    done
    for acks in leader all all-durable; do
        row "latency acks=$acks at 5000/s" produce --topic rep --acks "$acks" \
            --messages "$rate_messages" --rate 5000
    done
done

python3 - "$results" "$out/summary.md" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    entry = json.loads(line)
    rows.setdefault(entry["row"], []).append(entry["result"])
def median(label, key):
    return statistics.median(r[key] for r in rows[label])
lines = ["| row | runs | msgs/s (median) | p50 us | p99 us |", "|---|---:|---:|---:|---:|"]
for label, results in rows.items():
    lines.append("| %s | %d | %.0f | %.1f | %.1f |" % (label, len(results),
        median(label, "msgs_per_sec"), median(label, "p50_us"), median(label, "p99_us")))
rtt = median("ping (bare round trip)", "p50_us")
leader = median("latency acks=leader at 5000/s", "p50_us")
all_ = median("latency acks=all at 5000/s", "p50_us")
tput = median("produce acks=all", "msgs_per_sec") / median("produce acks=leader", "msgs_per_sec")
lines.append("")
lines.append("acks=all p50 - acks=leader p50 = %.1f us = %.2f x the bare round trip (%.1f us); "
             "aim <= 1.5x" % (all_ - leader, (all_ - leader) / rtt if rtt else float("nan"), rtt))
lines.append("acks=all throughput = %.2f x acks=leader (aim >= 0.8)" % tput)
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
