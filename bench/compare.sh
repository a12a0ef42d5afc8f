#!/usr/bin/env bash
# Precursor beside NATS JetStream and Redis Streams, measured in one run on this machine,
# with the machine's own limits (root: namespaces, veth, hugepages, apt).
#
#   sudo bench/compare.sh            # the full matrix, R=3 (about 6-8 minutes on 2 cores);
#                                    # rewrites docs/benchmarks.md's generated section and
#                                    # docs/plots/*.svg, prints one summary line
#   sudo bench/compare.sh --quick    # tiny counts, R=1, in seconds (CI): renders into the
#                                    # out dir, never into docs/; judges no timing
#   options: --runs R  --rate MSGS_PER_S (default 10000)  --durable-rate MSGS_PER_S
#            (default 1000)  --out DIR (default target/bench-compare)
#
# What it runs, 100-byte messages, one producer, one partition / stream, R times each:
#   limits       memcpy bandwidth (64 MiB buffers, median of 9); a shared-memory ping-pong
#                between threads pinned to cores 0 and 1 (round-trip histogram)
#   produce      as fast as possible: acks=leader and acks=durable for Precursor; the
#                matched settings for the peers (docs/benchmarks.md, "Durability")
#   consume      the acks=leader stream from its start, every payload verified
#   latency      a fixed offered rate (--rate, both levels; --durable-rate, durable),
#                produce -> ack from each message's intended send time (CO-corrected)
# Peers: redis-server and nats-server from Debian on 127.0.0.1, private ports, their data
# in this run's directory, each restarted per durability level; clients over loopback TCP.
# Precursor: the data plane on af_packet/veth (as bench/run.sh), clients in a namespace;
# the same data plane over IPC (clients on this host); and through the Kafka gateway
# (`precursor controlplane` attached to it, librdkafka clients from precursor-bench kafka,
# loopback TCP, 3 M messages per throughput run since librdkafka batches 1 MB requests).
# Each run does every system in turn (limits, Redis, NATS, Precursor), each server fresh.
# Pinning: every client on core 0; Precursor's lcore on the last core, its other threads on
# core 0; the peers' servers unpinned (the scheduler gives them both cores).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
runs=3
quick=0
rate=10000
durable_rate=1000
out="$repo/target/bench-compare"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --runs) runs="$2"; shift ;;
        --rate) rate="$2"; shift ;;
        --durable-rate) durable_rate="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "bench/compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
out=$(realpath -m "$out")
for n in "$runs" "$rate" "$durable_rate"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench/compare.sh: $n is not a positive whole number" >&2; exit 2; }
done
if [ "$(id -u)" != 0 ]; then
    echo "bench/compare.sh: needs root (network namespaces, veth, hugepages, apt): sudo $0" >&2
    exit 1
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "bench/compare.sh: needs at least 2 cores (ping-pong, lcore + client)" >&2
    exit 1
fi

# Messages per measured run. Quick mode only proves every step works.
if [ "$quick" = 1 ]; then
    runs=1; produce=3000; durable=300; warmup=200; latency_msgs=1000; durable_latency_msgs=100; pre_encoded=100000
    kafka_produce=20000
    memcpy_mib=16; memcpy_runs=3; round_trips=20000
else
    produce=300000; durable=30000; warmup=5000; latency_msgs=$((rate * 5)); durable_latency_msgs=$((durable_rate * 5)); pre_encoded=50000000
    # librdkafka batches up to 1 MB per request: a run needs millions to last seconds.
    kafka_produce=3000000
    memcpy_mib=64; memcpy_runs=9; round_trips=2000000
fi
# Peers' window: un-acknowledged messages per producer (Precursor's is 5 batches).
peer_window=1024

missing=()
for p in nats-server redis-server redis-tools e2fsprogs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bench_build "$repo"
pb="$bin/precursor-bench"
bench_wait_for_quiet_machine bench/compare.sh
# Other work on the machine shows in every number (a poll-mode lcore pinned to one core
# suffers most): the load average goes into the report.
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

tag="k$$"
ns="prc-bcmp-$$"
outer="pv${tag}a"
inner="pv${tag}b"
client_ip=10.78.202.1
broker_ip=10.78.202.2
broker="$broker_ip:9190"
work="$out/run-$$"
results="$out/results"
memory_dir=$(bench_memory_dir "precursor-bench-cmp-$$")
dp_pid=""
peer_pid=""
gateway_pid=""

stop_peer() {
    if [ -n "$peer_pid" ]; then
        kill -TERM "$peer_pid" 2>/dev/null || true
        wait "$peer_pid" 2>/dev/null || true
        peer_pid=""
    fi
}
cleanup() {
    stop_peer 2>/dev/null || true
    bench_stop_gateway 2>/dev/null || true
    bench_stop_dataplane 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$outer" 2>/dev/null || true
    rm -rf "$memory_dir" "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work" "$results"
rm -f "$results"/*.json

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# $1: result file name; rest: the command (prints one JSON line). A run that counted errors
# (exit 1) is kept and reported; one that printed no result stops the script.
record() {
    local name="$1"
    shift
    local status=0
    "$@" > "$results/$name.json" || status=$?
    if ! grep -q '^{' "$results/$name.json"; then
        echo "bench/compare.sh: $name: no result (exit $status): $*" >&2
        exit 1
    fi
    [ "$status" = 0 ] || echo "   $name: errors counted (exit $status)" >&2
    python3 - "$results/$name.json" <<'EOF' >&2
import json, sys
r = json.loads(open(sys.argv[1]).readline())
f = lambda k: "-" if r.get(k) is None else f"{r[k]:,.1f}"
print(f"   {sys.argv[1].rsplit('/', 1)[-1]:<34} {r['msgs_per_sec']:>12,.0f} msgs/s  p50 {f('p50_us')} us  p99 {f('p99_us')} us  errors {r['errors']}")
EOF
}

client() { taskset -c 0 "$@"; }

# $1: run number. The machine's limit.
limits_run() {
    local r="$1"
    record "limits-memcpy-$r" client "$pb" limits memcpy --mib "$memcpy_mib" --runs "$memcpy_runs"
    record "limits-pingpong-$r" "$pb" limits pingpong --round-trips "$round_trips" --ping-core 0 --pong-core 1
}

# $1: durability (leader | durable); $2: run. Starts redis-server with the matching
# appendfsync in a fresh directory.
start_redis() {
    local fsync=everysec
    [ "$1" = durable ] && fsync=always
    local dir="$work/redis-$1-$2" port
    port=$(free_port)
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
        --appendfsync "$fsync" --save "" --daemonize no --logfile "$dir/redis.log" &
    peer_pid=$!
    peer_url="redis://127.0.0.1:$port/"
    for _ in $(seq 100); do
        [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && return 0
        kill -0 "$peer_pid" 2>/dev/null || { cat "$dir/redis.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "bench/compare.sh: redis-server not ready" >&2
    exit 1
}

# $1: durability; $2: run. Starts nats-server -js with its store in a fresh directory; for
# durable the directory gets the S attribute (every write synchronous). Returns 1 when
# chattr +S is not possible on this filesystem.
start_nats() {
    local dir="$work/nats-$1-$2" port
    port=$(free_port)
    mkdir -p "$dir/store"
    if [ "$1" = durable ] && ! chattr +S "$dir/store" 2>/dev/null; then
        echo "   chattr +S refused on $(df --output=fstype "$dir" | tail -1): no durable NATS rows" >&2
        return 1
    fi
    nats-server -js -sd "$dir/store" -a 127.0.0.1 -p "$port" -l "$dir/nats.log" &
    peer_pid=$!
    peer_url="nats://127.0.0.1:$port"
    nats_store="$dir/store"
    for _ in $(seq 100); do
        grep -q "Server is ready" "$dir/nats.log" 2>/dev/null && return 0
        kill -0 "$peer_pid" 2>/dev/null || { cat "$dir/nats.log" >&2; exit 1; }
        sleep 0.1
    done
    cat "$dir/nats.log" >&2
    echo "bench/compare.sh: nats-server not ready" >&2
    exit 1
}

# $1: nats | redis; $2: durability; $3: run; rest: the peer's target flags.
peer_run() {
    local peer="$1" level="$2" r="$3"
    shift 3
    local count=$produce
    [ "$level" = durable ] && count=$durable
    record "$peer-produce-$level-$r" client "$pb" "$peer" produce "$@" --durability "$level" \
        --stream "p$r" --messages "$count" --warmup "$warmup" --window "$peer_window"
    if [ "$level" = leader ]; then
        record "$peer-consume-$r" client "$pb" "$peer" consume "$@" --durability "$level" \
            --stream "p$r" --messages "$count"
    fi
    record "$peer-latency-$level-$rate-$r" client "$pb" "$peer" produce "$@" --durability "$level" \
        --stream "l$r" --messages "$latency_msgs" --warmup "$warmup" --window "$peer_window" \
        --rate "$rate"
    if [ "$level" = durable ]; then
        record "$peer-latency-$level-$durable_rate-$r" client "$pb" "$peer" produce "$@" \
            --durability "$level" --stream "d$r" --messages "$durable_latency_msgs" \
            --warmup "$warmup" --window "$peer_window" --rate "$durable_rate"
    fi
}

# $1: run. Both peers at both levels, each server started fresh and stopped.
peers_run() {
    local r="$1" level
    for level in leader durable; do
        echo "== run $r: Redis Streams, acks=$level equivalent" >&2
        start_redis "$level" "$r"
        peer_run redis "$level" "$r" --url "$peer_url"
        stop_peer
        echo "== run $r: NATS JetStream, acks=$level equivalent" >&2
        if start_nats "$level" "$r"; then
            peer_run nats "$level" "$r" --url "$peer_url" --store-dir "$nats_store"
            stop_peer
        fi
    done
    rm -rf "$work"/redis-*-"$r" "$work"/nats-*-"$r"
}

bench_make_client_netns "$ns" "$outer" "$inner" "$client_ip"
config="$work/precursor.toml"
cat > "$config" <<EOF
[node]
data_dir = "$work/precursor-data"
memory_dir = "$memory_dir"
[dataplane]
file_prefix = "bench-cmp-$$"
lcore = $(( $(nproc) - 1 ))
idle = "spin"
[port]
kind = "af_packet"
iface = "$outer"
address = "$broker_ip"
EOF
pclient() { ip netns exec "$ns" taskset -c 0 "$bin/precursor" "$@" -b "$broker" --json --quiet; }
iclient() {
    taskset -c 0 "$bin/precursor" "$@" --transport ipc --ipc-dir "/dev/shm/precursor-bench-cmp-$$" \
        --json --quiet
}

# $1: run. `precursor controlplane` (attach mode: no data plane of its own) with the Kafka
# gateway on a free loopback port, for the data plane precursor_run started; waits until it
# is attached and listening, then pins its threads to core 0. Sets gateway_pid, gateway.
start_gateway() {
    local gw_config="$work/gateway.toml" log="$work/gateway-$1.log" port
    port=$(free_port)
    gateway="127.0.0.1:$port"
    cp "$config" "$gw_config"
    cat >> "$gw_config" <<EOF
[controlplane]
admin_socket = "$work/admin.sock"
metrics_listen = "127.0.0.1:$(free_port)"
[gateway]
listen = "$gateway"
EOF
    bench_start_gateway "$gw_config" "$log" "$port" pin
}
kclient() { taskset -c 0 "$pb" kafka "$@" --bootstrap "$gateway"; }

# $1: run. A data plane started fresh (its data emptied), every Precursor row, stopped.
precursor_run() {
    local r="$1"
    echo "== run $r: Precursor, the data plane on af_packet/veth, clients in a namespace" >&2
    rm -rf "$work/precursor-data" "$memory_dir"
    bench_start_dataplane "$config" "" "$work/dataplane.log"
    record "precursor-produce-leader-$r" pclient bench produce --topic "p$r" --acks leader \
        --messages "$produce" --warmup "$warmup"
    record "precursor-consume-$r" pclient bench consume --topic "p$r" --messages "$produce"
    record "precursor-produce-durable-$r" pclient bench produce --topic "d$r" --acks durable \
        --messages "$durable" --warmup "$warmup"
    record "precursor-latency-leader-$rate-$r" pclient bench produce --topic "l$r" --acks leader \
        --linger-us 0 --messages "$latency_msgs" --warmup "$warmup" --rate "$rate"
    record "precursor-latency-durable-$rate-$r" pclient bench produce --topic "ld$r" --acks durable \
        --linger-us 0 --messages "$latency_msgs" --warmup "$warmup" --rate "$rate"
    record "precursor-latency-durable-$durable_rate-$r" pclient bench produce --topic "dd$r" \
        --acks durable --linger-us 0 --messages "$durable_latency_msgs" --warmup "$warmup" \
        --rate "$durable_rate"
    # The same data plane over IPC: clients on this host (as the peers' are), no namespace.
    record "precursor-ipc-produce-leader-$r" iclient bench produce --topic "ip$r" --acks leader \
        --messages "$produce" --warmup "$warmup"
    record "precursor-ipc-produce-durable-$r" iclient bench produce --topic "id$r" --acks durable \
        --messages "$durable" --warmup "$warmup"
    record "precursor-ipc-pre-encoded-$r" iclient bench produce --topic "ie$r" --acks leader \
        --pre-encoded --in-flight 16 --messages "$pre_encoded"
    record "precursor-ipc-consume-$r" iclient bench consume --topic "ip$r" --messages "$produce"
    record "precursor-ipc-ping-$r" iclient bench ping --messages "$latency_msgs"
    record "precursor-ipc-latency-leader-$rate-$r" iclient bench produce --topic "il$r" \
        --acks leader --linger-us 0 --messages "$latency_msgs" --warmup "$warmup" --rate "$rate"
    record "precursor-ipc-latency-durable-$durable_rate-$r" iclient bench produce --topic "idd$r" \
        --acks durable --linger-us 0 --messages "$durable_latency_msgs" --warmup "$warmup" \
        --rate "$durable_rate"
    # The same data plane through the Kafka gateway: the control plane attached to it, its
    # threads on core 0, librdkafka clients on this host (librdkafka's queue is the window).
    # Latency rows use linger.ms=1: at 0 librdkafka sends a request per message, and at
    # 10 000 requests/s the one core the client shares with the gateway saturates
    # (docs/benchmarks.md, "The Kafka gateway").
    start_gateway "$r"
    record "precursor-kafka-produce-leader-$r" kclient produce --topic "kp$r" \
        --durability leader --messages "$kafka_produce" --warmup "$warmup" --window 65536
    record "precursor-kafka-produce-durable-$r" kclient produce --topic "kd$r" \
        --durability durable --messages "$kafka_produce" --warmup "$warmup" --window 65536
    record "precursor-kafka-consume-$r" kclient consume --topic "kp$r" --durability leader \
        --messages "$kafka_produce"
    record "precursor-kafka-latency-leader-$rate-$r" kclient produce --topic "kl$r" \
        --durability leader --linger-ms 1 --messages "$latency_msgs" --warmup "$warmup" \
        --window "$peer_window" --rate "$rate"
    record "precursor-kafka-latency-durable-$durable_rate-$r" kclient produce --topic "kdd$r" \
        --durability durable --linger-ms 1 --messages "$durable_latency_msgs" \
        --warmup "$warmup" --window "$peer_window" --rate "$durable_rate"
    bench_stop_gateway
    bench_stop_dataplane
}

# Runs interleave the systems, so the machine's slow drifts (other tenants) spread over all.
for r in $(seq "$runs"); do
    echo "== run $r of $runs: limits (memcpy; ping-pong between cores 0 and 1)" >&2
    limits_run "$r"
    peers_run "$r"
    precursor_run "$r"
done

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
dpdk=$(pkg-config --modversion libdpdk 2>/dev/null || echo "?")
nats_version=$(nats-server --version 2>&1 | awk '{ print $2 }')
redis_version=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
machine="$(nproc) vCPUs, $cpu, Linux $(uname -r), DPDK $dpdk, nats-server $nats_version, redis-server $redis_version; $(date -u +%Y-%m-%d); load average (1, 5, 15 min) $load_start at the start, $load_end at the end (other tenants of the machine)"
if [ "$quick" = 1 ]; then
    doc="$out/benchmarks.md"
    plots="$out/plots"
    cp "$repo/docs/benchmarks.md" "$doc"
else
    doc="$repo/docs/benchmarks.md"
    plots="$repo/docs/plots"
fi
"$pb" report --results "$results" --doc "$doc" --plots "$plots" --plots-link plots --machine "$machine"
echo "results: $results; tables: $doc; plots: $plots" >&2
"$pb" summary --results "$results"
