#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, docs/reliability.md) for a bounded time from its committed
# corpus, one at a time, one job each: fails on any crash, hang (-timeout) or OOM. The
# committed corpus (fuzz/corpus/<target>) is only read: new inputs go to target/fuzz-ci.
#   ci/fuzz.sh [--seconds-per-target N] [TARGET...]
# Default: 40 s per target, every target (the step takes about 4 minutes with a warm
# fuzz/target; a cold build adds its own minutes once).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds_per_target=${PRECURSOR_FUZZ_SECONDS:-40}
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds-per-target) seconds_per_target=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame_serve kafka_request record_batch config_load ipc_ring)
fi

say() { echo "ci/fuzz: $*" >&2; }
command -v cargo-fuzz >/dev/null 2>&1 || { say "cargo-fuzz missing: run ci/setup.sh"; exit 1; }

# cargo-fuzz passes nightly-only flags (-Z sanitizer, coverage options); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1. No sanitizer: the targets are safe Rust
# (shm's unsafe accessors assert their bounds), and debug assertions (-a) are on.
export RUSTC_BOOTSTRAP=1
FUZZ_FLAGS=(--sanitizer none --debug-assertions)
# Per-input limits: a hang is an input taking over 10 s, an OOM over 2 GiB.
LIBFUZZER_FLAGS=(-timeout=10 -rss_limit_mb=2048 -jobs=1 -workers=1 -print_final_stats=1)

cd fuzz
say "build (${targets[*]})"
for target in "${targets[@]}"; do
  cargo fuzz build "${FUZZ_FLAGS[@]}" "$target"
done
scratch=../target/fuzz-ci
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$scratch/corpus/$target" "$scratch/artifacts/$target" "corpus/$target"
  say "$target: ${seconds_per_target} s"
  if ! cargo fuzz run "${FUZZ_FLAGS[@]}" "$target" "$scratch/corpus/$target" "corpus/$target" -- \
      "${LIBFUZZER_FLAGS[@]}" -max_total_time="$seconds_per_target" \
      -artifact_prefix="$scratch/artifacts/$target/" 2> "$scratch/$target.log"; then
    failed+=("$target")
    say "$target FAILED: see target/fuzz-ci/$target.log and target/fuzz-ci/artifacts/$target/"
    tail -40 "$scratch/$target.log" >&2
  else
    grep -E '^stat::number_of_executed_units' "$scratch/$target.log" | sed "s/^/ci\/fuzz: $target: /" >&2 || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  say "crashed: ${failed[*]}"
  exit 1
fi
say "all ${#targets[@]} targets ran clean"
