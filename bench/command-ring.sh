#!/usr/bin/env bash
# The control plane's benchmark, measured in one run (root: namespaces, veth):
#
#   sudo bench/command-ring.sh             # R=5, about 1-2 minutes on 2 cores
#   options: --runs R  --quick (R=1, small counts, no timing judged)  --out DIR
#            (default target/bench-cp)
#
# `precursor up` (control plane supervising the data plane) on an af_packet port bound
# to a veth end, with its own CnC dir, admin socket and metrics port. Per run:
#   ring-spin        bench command-ring --requests 10000: cp -> dp -> cp round trips of the
#                    shared-memory rings, timed in the control plane's link thread
#   produce-idle     bench produce --acks leader --messages 200000 --size 100 (from the
#                    namespace), control plane idle
#   produce-loaded   the same while `bench command-ring --rate 1000` sends 1,000 one-ping
#                    admin requests per second through the admin socket and the ring
#   load             what that paced client achieved (requests/s, admin round trip)
#   admin-describe   a Unix-socket admin round trip that does not touch the ring
#                    (describe_topic, answered from the counters file), python3 client
# Then the data plane is restarted with the default idle strategy (backoff) and
#   ring-backoff     bench command-ring --requests 10000 again.
# Tables show medians of R runs. Pinning as bench/run.sh: the lcore polls the last core;
# the control plane (every thread, once up), the data plane's other threads and every
# client share core 0.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
runs=5
quick=0
out="$repo/target/bench-cp"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --runs) runs="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "bench/command-ring.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$(id -u)" != 0 ]; then
    echo "bench/command-ring.sh: needs root (network namespaces, veth): sudo $0" >&2
    exit 1
fi
if [ "$quick" = 1 ]; then
    runs=1; pings=500; produce=20000; load_seconds=2; describes=200
else
    pings=10000; produce=200000; load_seconds=4; describes=2000
fi
load_rate=1000
cores=$(nproc)
lcore=$((cores - 1))

bench_build "$repo"

bench_wait_for_quiet_machine bench/command-ring.sh

tag="c$$"
ns="prc-bcp-$$"
outer="pv${tag}a"
inner="pv${tag}b"
client_ip=10.78.201.1
broker_ip=10.78.201.2
broker="$broker_ip:9190"
work="$out/run-$$"
socket="$work/admin.sock"
memory_dir=$(bench_memory_dir "precursor-bench-cp-$$")
raw="$out/raw.tsv"
up_pid=""
load_pid=""

stop_up() {
    if [ -n "$up_pid" ]; then
        kill -TERM "$up_pid" 2>/dev/null || true
        wait "$up_pid" 2>/dev/null || true
        up_pid=""
    fi
}
cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    stop_up 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$outer" 2>/dev/null || true
    rm -rf "$memory_dir" "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$out" "$work"
: > "$raw"
bench_make_client_netns "$ns" "$outer" "$inner" "$client_ip"
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# $1: idle strategy of the data plane's lcore. Starts `precursor up`, waits for a live
# data plane, pins its non-lcore threads to core 0.
start_up() {
    local idle="$1" config="$work/up-$1.toml" log="$work/up-$1.log"
    cat > "$config" <<EOF
[node]
data_dir = "$work/data"
memory_dir = "$memory_dir"
cnc_dir = "$work/cnc"
[dataplane]
file_prefix = "bench-cp-$$"
lcore = $lcore
idle = "$idle"
[port]
kind = "af_packet"
iface = "$outer"
address = "$broker_ip"
[controlplane]
admin_socket = "$socket"
metrics_listen = "127.0.0.1:$metrics_port"
EOF
    # Not started under taskset: the config check refuses an lcore outside the affinity.
    "$bin/precursor" up --config "$config" </dev/null 2>"$log" &
    up_pid=$!
    local dp=""
    for _ in $(seq 600); do
        if ! kill -0 "$up_pid" 2>/dev/null; then
            cat "$log" >&2
            echo "bench/command-ring.sh: precursor up exited at start-up" >&2
            exit 1
        fi
        dp=$("$bin/precursor" status --socket "$socket" --json 2>/dev/null \
            | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["dataplane_pid"] if s["dataplane_alive"] else "")' \
            2>/dev/null || true)
        [ -n "$dp" ] && break
        sleep 0.1
    done
    [ -n "$dp" ] || { cat "$log" >&2; echo "bench/command-ring.sh: no live data plane" >&2; exit 1; }
    for task in /proc/"$dp"/task/*; do
        local tid="${task##*/}"
        [ "$tid" = "$dp" ] || [ "$tid" = "*" ] || taskset -pc 0 "$tid" >/dev/null || true
    done
    for task in /proc/"$up_pid"/task/*; do
        taskset -pc 0 "${task##*/}" >/dev/null 2>&1 || true
    done
}

# $1: pid. User + system CPU time of the process (all its threads), in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# $1: label; $2: json. Appends to $raw and echoes.
record() {
    printf '%s\t%s\n' "$1" "$2" >> "$raw"
    printf '   %-16s %s\n' "$1" "$2" >&2
}

ring() {
    record "$1" "$(taskset -c 0 "$bin/precursor" bench command-ring --socket "$socket" \
        --requests "$pings" --json)"
}

produce() {
    ip netns exec "$ns" taskset -c 0 "$bin/precursor" bench produce -b "$broker" \
        --topic "$1" --messages "$produce" --size 100 --acks leader --json --quiet
}

describe() {
    taskset -c 0 python3 - "$socket" "$describes" "$1" <<'EOF'
import json, socket, sys, time
path, count, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
f = s.makefile("rb")
line = (json.dumps({"describe_topic": {"name": topic}}) + "\n").encode()
lat = []
errors = 0
t0 = time.perf_counter()
for _ in range(count):
    t = time.perf_counter_ns()
    s.sendall(line)
    answer = f.readline()
    lat.append((time.perf_counter_ns() - t) / 1e3)
    errors += b'"topic"' not in answer
seconds = time.perf_counter() - t0
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(json.dumps({"transport": "admin-socket", "messages": count, "seconds": seconds,
    "msgs_per_sec": count / seconds, "p50_us": q(0.5), "p99_us": q(0.99),
    "p999_us": q(0.999), "max_us": lat[-1], "errors": errors}))
EOF
}

echo "== precursor up, idle = spin (as bench/run.sh)" >&2
start_up spin
taskset -c 0 "$bin/precursor" bench command-ring --socket "$socket" --requests 1000 >/dev/null
produce warmup >/dev/null
for i in $(seq "$runs"); do
    ring ring-spin
    record produce-idle "$(produce "idle-$i")"
    cp_before=$(cpu_ticks "$up_pid")
    taskset -c 0 "$bin/precursor" bench command-ring --socket "$socket" --rate "$load_rate" \
        --seconds "$load_seconds" --json > "$work/load.json" &
    load_pid=$!
    sleep 0.3
    record produce-loaded "$(produce "loaded-$i")"
    wait "$load_pid" || true
    load_pid=""
    cp_after=$(cpu_ticks "$up_pid")
    # The control plane's CPU time (all threads) over the paced run, as % of one core.
    record load "$(python3 -c 'import json,sys,os; d=json.load(open(sys.argv[1])); d["cp_cpu_pct"]=100*(int(sys.argv[3])-int(sys.argv[2]))/os.sysconf("SC_CLK_TCK")/d["seconds"]; print(json.dumps(d))' \
        "$work/load.json" "$cp_before" "$cp_after")"
    record admin-describe "$(describe "idle-$i")"
done
stop_up

echo "== precursor up, idle = backoff (the default preset)" >&2
start_up backoff
taskset -c 0 "$bin/precursor" bench command-ring --socket "$socket" --requests 1000 >/dev/null
for _ in $(seq "$runs"); do
    ring ring-backoff
done
stop_up

echo "== medians of $runs runs" >&2
python3 - "$raw" "$runs" <<'EOF' | tee "$out/results.md"
import json, statistics, sys
raw, runs = sys.argv[1], int(sys.argv[2])
rows = {}
for line in open(raw):
    label, text = line.rstrip("\n").split("\t", 1)
    rows.setdefault(label, []).append(json.loads(text))
def med(label, field):
    values = [r[field] for r in rows.get(label, []) if r.get(field) is not None]
    return statistics.median(values) if values else None
def errors(label):
    return sum(r.get("errors", 0) for r in rows.get(label, []))
def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"
print(f"{runs} runs per row (medians)\n")
print("| measurement | messages | msgs/s | p50 us | p90 us | p99 us | p99.9 us | max us | errors (all runs) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for label in ["ring-spin", "ring-backoff", "admin-describe", "load", "produce-idle", "produce-loaded"]:
    if label in rows:
        print(f"| {label} | {med(label, 'messages') or 0:,.0f} | {fmt(med(label, 'msgs_per_sec'))} | "
              f"{fmt(med(label, 'p50_us'))} | {fmt(med(label, 'p90_us'))} | {fmt(med(label, 'p99_us'))} | "
              f"{fmt(med(label, 'p999_us'))} | {fmt(med(label, 'max_us'))} | {errors(label)} |")
ratios = [l["msgs_per_sec"] / i["msgs_per_sec"]
          for i, l in zip(rows.get("produce-idle", []), rows.get("produce-loaded", []))]
if ratios:
    print(f"\nproduce msgs/s under 1,000 admin requests/s / idle: median {statistics.median(ratios):.3f} "
          f"(per run: {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"ratio of medians {med('produce-loaded', 'msgs_per_sec') / med('produce-idle', 'msgs_per_sec'):.3f}")
if "load" in rows:
    print(f"paced load: ring round trip inside the link thread p50 {fmt(med('load', 'ring_p50_us'))} us, "
          f"p99 {fmt(med('load', 'ring_p99_us'))} us; control plane CPU {fmt(med('load', 'cp_cpu_pct'))} % of core 0")
if any(errors(l) for l in rows):
    print("\nWARNING: some runs reported errors; see raw.tsv")
EOF
echo "raw results: $raw; table: $out/results.md" >&2
