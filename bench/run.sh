#!/usr/bin/env bash
# Precursor benchmarks, all measured in one run on this machine (root: namespaces, veth).
#
#   sudo bench/run.sh            # the full run (about 3-4 minutes on 2 cores), R=5
#   sudo bench/run.sh --quick    # a smoke run with tiny counts (CI); asserts no timing
#   options: --runs R  --no-tap  --out DIR (default target/bench)
#
# What it measures, for 100-byte messages (docs/benchmarks.md explains each number):
#   echo-ping-w1/w64   bench ping against `precursor-dataplane --echo` (the port's bare
#                      reflection over af_packet/veth): the raw limit of this path
#   ping-w1/w64        bench ping through the real data plane (Pong, no log)
#   produce-leader     bench produce --acks leader
#   produce-durable    bench produce --acks durable (acked after fdatasync)
#   consume            bench consume of a produce-leader topic, verifying every payload
#   disk-*             fdatasync of 4 KiB writes, sequential write+fdatasync throughput,
#                      on the data directory's filesystem
#   tap-*              the embedded default TAP port, data plane and client in one netns
# Each is repeated R times after a warm-up; the tables show medians.
#
# Pinning: the data plane's lcore polls the last core; its other threads (flusher, admin,
# EAL interrupts) and every client are pinned to core 0.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
runs=5
quick=0
tap=1
out="$repo/target/bench"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --runs) runs="$2"; shift ;;
        --no-tap) tap=0 ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "bench/run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh: needs root (network namespaces, veth, hugepages): sudo bench/run.sh" >&2
    exit 1
fi

# Counts: messages per measured run. Quick mode only proves every step works.
if [ "$quick" = 1 ]; then
    runs=1
    ping_w1=500; ping_wide=2000; produce=5000; durable=5000; disk_syncs=50; disk_mib=8
    warmup=100
else
    ping_w1=20000; ping_wide=200000; produce=300000; durable=100000; disk_syncs=1000; disk_mib=64
    warmup=1000
fi
window=64
cores=$(nproc)
lcore=$((cores - 1))

bench_build "$repo"

bench_wait_for_quiet_machine bench/run.sh

tag="b$$"
ns="prc-bench-$$"
ns_tap="prc-btap-$$"
outer="pv${tag}a"
inner="pv${tag}b"
client_ip=10.78.200.1
broker_ip=10.78.200.2
broker="$broker_ip:9190"
work="$out/run-$$"
data_dir="${PRECURSOR_BENCH_DATA_DIR:-$work/data}"
memory_dir=$(bench_memory_dir "precursor-bench-$$")
raw="$out/raw.tsv"
dp_pid=""

cleanup() {
    stop_dataplane 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ip netns del "$ns_tap" 2>/dev/null || true
    ip link del "$outer" 2>/dev/null || true
    rm -rf "$memory_dir" "$memory_dir-tap" "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$out" "$work"
: > "$raw"

bench_make_client_netns "$ns" "$outer" "$inner" "$client_ip"

# $1: config file; $2: namespace to run in ("" for the root one); $3...: extra arguments.
start_dataplane() {
    local config="$1" inside="$2"
    shift 2
    bench_start_dataplane "$config" "$inside" "$work/dataplane.log" "$@"
}

stop_dataplane() {
    bench_stop_dataplane
}

# $1: namespace; $2: label; rest: precursor arguments. Appends "label<TAB>json" to $raw.
measure() {
    local inside="$1" label="$2"
    shift 2
    local json
    json=$(ip netns exec "$inside" taskset -c 0 "$bin/precursor" "$@" --json --quiet)
    printf '%s\t%s\n' "$label" "$json" >> "$raw"
    printf '   %-16s %s\n' "$label" "$json" >&2
}

# $1: namespace; $2: label prefix; $3: broker. Warm-up, then R runs of ping at window 1 and wide.
measure_pings() {
    local inside="$1" prefix="$2" to="$3"
    ip netns exec "$inside" taskset -c 0 "$bin/precursor" bench ping -b "$to" \
        --messages "$warmup" --warmup "$warmup" --quiet >/dev/null
    for _ in $(seq "$runs"); do
        measure "$inside" "${prefix}ping-w1" bench ping -b "$to" --messages "$ping_w1" \
            --window 1 --warmup "$warmup"
        measure "$inside" "${prefix}ping-w$window" bench ping -b "$to" --messages "$ping_wide" \
            --window "$window" --warmup "$warmup"
    done
}

config="$work/precursor.toml"
cat > "$config" <<EOF
[node]
data_dir = "$data_dir"
memory_dir = "$memory_dir"
[dataplane]
file_prefix = "bench-$$"
lcore = $lcore
idle = "spin"
[port]
kind = "af_packet"
iface = "$outer"
address = "$broker_ip"
EOF

echo "== (a) echo baseline: precursor-dataplane --echo on af_packet/veth" >&2
start_dataplane "$config" "" --echo
measure_pings "$ns" "echo-" "$broker"
stop_dataplane

echo "== (b-e) the data plane on af_packet/veth: ping, produce, consume" >&2
start_dataplane "$config" ""
measure_pings "$ns" "" "$broker"
ip netns exec "$ns" taskset -c 0 "$bin/precursor" bench produce -b "$broker" --topic warmup \
    --messages "$durable" --acks leader --quiet >/dev/null
for i in $(seq "$runs"); do
    measure "$ns" produce-leader bench produce -b "$broker" --topic "leader-$i" \
        --messages "$produce" --size 100 --acks leader
    measure "$ns" produce-durable bench produce -b "$broker" --topic "durable-$i" \
        --messages "$durable" --size 100 --acks durable
    measure "$ns" consume bench consume -b "$broker" --topic "leader-$i" --messages "$produce"
done
stop_dataplane

echo "== disk: fdatasync of 4 KiB writes, sequential write + fdatasync, in $data_dir" >&2
for _ in $(seq "$runs"); do
    python3 - "$data_dir" "$disk_syncs" "$disk_mib" >> "$raw" <<'EOF'
import json, os, sys, time
directory, syncs, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(directory, exist_ok=True)
path = os.path.join(directory, "disk-bench.tmp")
block = os.urandom(4096)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
latencies = []
for _ in range(syncs):
    t0 = time.perf_counter_ns()
    os.write(fd, block)
    os.fdatasync(fd)
    latencies.append((time.perf_counter_ns() - t0) / 1e3)
os.close(fd)
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
chunk = os.urandom(1 << 20)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
t0 = time.perf_counter()
for _ in range(mib):
    os.write(fd, chunk)
os.fdatasync(fd)
seconds = time.perf_counter() - t0
os.close(fd)
os.unlink(path)
print("disk-fdatasync-4k\t" + json.dumps({"messages": syncs, "size": 4096,
      "msgs_per_sec": syncs / (sum(latencies) / 1e6), "p50_us": q(0.5), "p99_us": q(0.99),
      "p999_us": q(0.999), "max_us": latencies[-1], "errors": 0}))
print("disk-sequential\t" + json.dumps({"messages": mib, "size": 1 << 20, "seconds": seconds,
      "mb_per_sec": mib * (1 << 20) / seconds / 1e6, "errors": 0}))
EOF
done
tail -n 2 "$raw" | sed 's/^/   /' >&2

if [ "$tap" = 1 ] && [ -e /dev/net/tun ]; then
    echo "== TAP: the embedded default port (prc0, 10.77.0.2) inside a namespace" >&2
    ip netns add "$ns_tap"
    ip -n "$ns_tap" link set lo up
    tap_config="$work/tap.toml"
    cat > "$tap_config" <<EOF
[node]
data_dir = "$data_dir-tap"
memory_dir = "$memory_dir-tap"
[dataplane]
file_prefix = "bench-tap-$$"
lcore = $lcore
idle = "spin"
EOF
    start_dataplane "$tap_config" "$ns_tap"
    measure_pings "$ns_tap" "tap-" "10.77.0.2:9190"
    for i in $(seq "$runs"); do
        measure "$ns_tap" tap-produce-leader bench produce -b 10.77.0.2:9190 --topic "tap-$i" \
            --messages "$produce" --size 100 --acks leader
    done
    stop_dataplane
    rm -rf "$data_dir-tap"
fi

echo "== medians of $runs runs" >&2
python3 - "$raw" "$runs" "$window" <<'EOF' | tee "$out/results.md"
import json, statistics, sys, os, platform, subprocess
raw, runs, window = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = {}
for line in open(raw):
    label, text = line.rstrip("\n").split("\t", 1)
    rows.setdefault(label, []).append(json.loads(text))
def med(label, field):
    values = [r[field] for r in rows.get(label, []) if r.get(field) is not None]
    return statistics.median(values) if values else None
def errors(label):
    return sum(r.get("errors", 0) for r in rows.get(label, []))
def fmt(v, digits=1):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
try:
    dpdk = subprocess.run(["pkg-config", "--modversion", "libdpdk"], capture_output=True, text=True).stdout.strip()
except OSError:
    dpdk = "?"
print(f"Machine: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}, DPDK {dpdk or '?'}; {runs} runs per row (medians)\n")
print("| measurement | messages | msgs/s | MB/s | p50 us | p99 us | p99.9 us | max us | errors (all runs) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
labels = ["echo-ping-w1", f"echo-ping-w{window}", "ping-w1", f"ping-w{window}", "produce-leader",
          "produce-durable", "consume", "disk-fdatasync-4k", "disk-sequential",
          "tap-ping-w1", f"tap-ping-w{window}", "tap-produce-leader"]
for label in labels:
    if label not in rows:
        continue
    print(f"| {label} | {med(label, 'messages') or 0:,.0f} | {fmt(med(label, 'msgs_per_sec'))} | "
          f"{fmt(med(label, 'mb_per_sec'))} | {fmt(med(label, 'p50_us'))} | {fmt(med(label, 'p99_us'))} | "
          f"{fmt(med(label, 'p999_us'))} | {fmt(med(label, 'max_us'))} | {errors(label)} |")
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"
echo_pps = med(f"echo-ping-w{window}", "msgs_per_sec")
print("\n| ratio | value |")
print("|---|---:|")
print(f"| ping w{window} through the data plane / echo (req/s) | {ratio(med(f'ping-w{window}', 'msgs_per_sec'), echo_pps)} |")
print(f"| ping w1 p50 through the data plane / echo | {ratio(med('ping-w1', 'p50_us'), med('echo-ping-w1', 'p50_us'))} |")
print(f"| produce acks=leader msgs/s / echo packets/s (w{window}) | {ratio(med('produce-leader', 'msgs_per_sec'), echo_pps)} |")
print(f"| produce acks=durable msgs/s / echo packets/s (w{window}) | {ratio(med('produce-durable', 'msgs_per_sec'), echo_pps)} |")
print(f"| consume msgs/s / echo packets/s (w{window}) | {ratio(med('consume', 'msgs_per_sec'), echo_pps)} |")
print(f"| produce acks=durable p50 / fdatasync 4 KiB p50 | {ratio(med('produce-durable', 'p50_us'), med('disk-fdatasync-4k', 'p50_us'))} |")
print(f"| produce acks=durable MB/s / sequential write+fdatasync MB/s | {ratio(med('produce-durable', 'mb_per_sec'), med('disk-sequential', 'mb_per_sec'))} |")
if any(errors(l) for l in rows):
    print("\nWARNING: some runs reported errors (lost or corrupt messages); see raw.tsv")
EOF
echo "raw results: $raw; tables: $out/results.md" >&2
