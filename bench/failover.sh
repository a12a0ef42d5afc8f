#!/usr/bin/env bash
# Failover time seen by a producer (issue 12, docs/benchmarks.md "Failover"): a local
# three-broker cluster with the metadata quorum (`precursor cluster up --metadata quorum`,
# root), one partition with three replicas (min.insync 2), the native client producing
# 100-byte messages at a fixed 10,000 msgs/s with acks=all to all three brokers
# (`--broker a,b,c`). K times: kill -9 the leader's whole broker (control plane and data
# plane: the machine died) 1.5 s into the run; the client finds the new leader and resends.
# A message sent into the outage waits for the new leader, so the run's max produce->ack
# latency (CO-corrected at the fixed rate) is the failover gap the producer saw. The dead
# broker is started again and back in sync before the next kill. Medians and p99 over the
# K kills. Three data planes share two cores and park when idle: say so beside any number.
#
# With `--kill dataplane` only the leader's data plane is killed -9: its own control plane
# sees the child exit at once and has the quorum fence it without waiting for the lease
# (the supervisor then restarts the data plane, which rejoins as a follower). With
# `--kill restart` the leader's broker is stopped cleanly (`cluster stop`: the controlled
# shutdown moves its leaderships first) and started again: a rolling restart's step.
#
#   sudo bench/failover.sh             # K=20, about 5 minutes
#   sudo bench/failover.sh --quick     # K=2: proves every step works
#   options: --kills K  --kill broker|dataplane|restart (default broker)
#            --out DIR (default target/bench-failover)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kills=20
victim=broker
out="$repo/target/bench-failover"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) kills=2 ;;
        --kills) kills="$2"; shift ;;
        --kill) victim="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "bench/failover.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
case "$victim" in broker|dataplane|restart) ;; *) echo "bench/failover.sh: --kill broker|dataplane|restart" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "bench/failover.sh: needs root (namespaces, hugepages)" >&2; exit 1; }
precursor="$repo/target/release/precursor"
[ -x "$precursor" ] && [ -x "$repo/target/release/precursor-dataplane" ] || {
    echo "bench/failover.sh: build first: cargo build --release --workspace" >&2; exit 1; }
mkdir -p "$out"
dir="$(mktemp -d /tmp/precursor-bench-failover.XXXXXX)"
name=bfo
cleanup() { "$precursor" cluster down --purge --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

"$precursor" cluster up --nodes 3 --dir "$dir" --name "$name" --subnet 10.203.9.0/24 \
    --metadata quorum >/dev/null
layout="$dir/cluster.json"
socket() { echo "$dir/node-$1/precursor.sock"; }
broker_of() { python3 -c "import json,sys; b=[b for b in json.load(open('$layout'))['brokers'] if b['id']==$1][0]; print(f\"{b['dataplane_address']}:{b['udp_port']}\")"; }
brokers="$(broker_of 1),$(broker_of 2),$(broker_of 3)"
describe() { PRECURSOR_ADMIN_SOCKET="$(socket "$1")" "$precursor" topic describe fo --json; }
leader_seen_by() { describe "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitions'][0]['leader'])"; }
isr_size() { describe "$1" | python3 -c "import json,sys; print(len(json.load(sys.stdin)['partitions'][0]['isr']))"; }
wait_for() { # what, command...
    local what="$1"; shift
    for _ in $(seq 1 600); do "$@" && return 0; sleep 0.1; done
    echo "bench/failover.sh: gave up waiting for $what" >&2; exit 1
}
PRECURSOR_ADMIN_SOCKET="$(socket 1)" "$precursor" topic create fo --partitions 1 \
    --replication-factor 3 --min-insync-replicas 2 >/dev/null
all_in_sync() { local l; l="$(leader_seen_by 1 2>/dev/null || echo 0)"; [ "$l" != 0 ] && [ "$(isr_size "$l")" = 3 ]; }
wait_for "a leader with 3 in sync" all_in_sync

results="$out/failover.jsonl"
: > "$results"
for k in $(seq 1 "$kills"); do
    leader="$(leader_seen_by 1 2>/dev/null || leader_seen_by 2)"
    "$precursor" bench produce --topic fo --broker "$brokers" --acks all --rate 10000 \
        -n 40000 --size 100 --json > "$out/run-$k.json" 2> "$out/run-$k.err" &
    bench=$!
    sleep 1.5
    controller="$(PRECURSOR_ADMIN_SOCKET="$(socket "$leader")" "$precursor" status --json |
        python3 -c "import json,sys; print((json.load(sys.stdin).get('quorum') or {}).get('leader') or 0)")"
    if [ "$victim" = broker ]; then
        # shellcheck disable=SC2046
        kill -9 $(ip netns pids "$name-node$leader")
    elif [ "$victim" = restart ]; then
        "$precursor" cluster stop --node "$leader" --dir "$dir" >/dev/null
    else
        for pid in $(ip netns pids "$name-node$leader"); do
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = precursor-datap ] && kill -9 "$pid"
        done
    fi
    wait "$bench" || { echo "bench/failover.sh: kill $k: the producer failed:" >&2; cat "$out/run-$k.err" >&2; exit 1; }
    python3 - "$out/run-$k.json" "$k" "$leader" "$controller" "$victim" >> "$results" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
print(json.dumps({"kill": int(sys.argv[2]), "leader": int(sys.argv[3]),
                  "killed": sys.argv[5],
                  "controller_killed": sys.argv[5] == "broker" and sys.argv[4] == sys.argv[3],
                  "gap_ms": run["max_us"] / 1000, "p99_ms": run["p99_us"] / 1000,
                  "messages": run.get("messages"), "errors": run.get("errors")}))
EOF
    tail -1 "$results"
    sleep 0.5
    [ "$victim" != dataplane ] && "$precursor" cluster start --node "$leader" --dir "$dir" >/dev/null
    wait_for "broker $leader back in sync" all_in_sync
done
python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def line(what, rows):
    gaps = sorted(r["gap_ms"] for r in rows)
    if not gaps:
        return
    p99 = gaps[min(len(gaps) - 1, int(round(0.99 * (len(gaps) - 1))))]
    print(f"failover gap over {len(gaps)} kills of {what} (10k msgs/s, acks=all, "
          f"parked lcores, 3 brokers on 2 cores): p50 {statistics.median(gaps):.0f} ms, "
          f"p99 {p99:.0f} ms, min {gaps[0]:.0f} ms, max {gaps[-1]:.0f} ms")
killed = rows[0]["killed"] if rows else "broker"
if killed == "dataplane":
    line("the leader's data plane", rows)
elif killed == "restart":
    line("a clean stop of the leader's broker (controlled shutdown)", rows)
else:
    line("the leader's broker", rows)
    line("the leader's broker, not the controller", [r for r in rows if not r["controller_killed"]])
    line("the leader's broker that was also the controller", [r for r in rows if r["controller_killed"]])
EOF
