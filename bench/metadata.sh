#!/usr/bin/env bash
# The metadata quorum's commit latency against the partitions it holds (issue 12):
#
#   bench/metadata.sh                  # R=5 runs at 100, 1,000 and 10,000 partitions
#   options: --runs R  --commits N (per run, default 1000)  --out DIR (default
#            target/bench-metadata)
#
# Each run is `precursor-bench metadata-commit`: three voters (openraft over TCP on
# 127.0.0.1, each with its own log directory and fdatasync) in one process, N
# CommitOffsets proposals one after another from a follower. Prints per partition count
# the median over runs of p50 / p99 / max and the ratio of the p50 to the 100-partition
# row of the same run. No root needed; nothing pinned (the voters share the machine).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs=5
commits=1000
out="$repo/target/bench-metadata"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift ;;
        --commits) commits="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "bench/metadata.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
(cd "$repo" && cargo build --release -q -p precursor-bench)
bench="$repo/target/release/precursor-bench"
mkdir -p "$out"
: > "$out/metadata-commit.json"
for run in $(seq 1 "$runs"); do
    for partitions in 100 1000 10000; do
        echo "bench/metadata.sh: run $run/$runs, $partitions partitions" >&2
        "$bench" metadata-commit --partitions "$partitions" --commits "$commits" \
            >> "$out/metadata-commit.json"
    done
done
python3 - "$out/metadata-commit.json" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {}
for r in rows:
    by.setdefault(r["size"], []).append(r)
base = statistics.median(r["p50_us"] for r in by[min(by)])
print("| partitions | p50 | p99 | max | p50 / 100 partitions | errors |")
print("|---|---|---|---|---|---|")
for size in sorted(by):
    rs = by[size]
    med = lambda key: statistics.median(r[key] for r in rs)
    print(f"| {size:,} | {med('p50_us')/1000:.2f} ms | {med('p99_us')/1000:.2f} ms | "
          f"{med('max_us')/1000:.1f} ms | {med('p50_us')/base:.2f}x | {sum(r['errors'] for r in rs)} |")
PY
