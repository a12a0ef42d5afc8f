# Shared set-up of the benchmark scripts (bench/run.sh, bench/command-ring.sh). Sourced,
# never run: it defines functions and runs nothing.

# Puts cargo on PATH when root's environment lacks it (sudo), then builds the release
# workspace. Sets `bin` to the directory of the built binaries.
bench_build() {
    local repo="$1"
    if ! command -v cargo >/dev/null; then
        for home in "$HOME" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)"; do
            [ -x "$home/.cargo/bin/cargo" ] && PATH="$home/.cargo/bin:$PATH" && break
        done
    fi
    echo "== building (release)" >&2
    (cd "$repo" && cargo build --release --workspace --quiet)
    bin="$repo/target/release"
}

# One data plane per machine: waits for any other (an e2e test run, another benchmark) to
# exit; gives up after 15 minutes. $1: the calling script's name, for messages.
bench_wait_for_quiet_machine() {
    local script="$1" waited=0
    while pgrep -f '/precursor-dataplane( |$)' >/dev/null; do
        [ $waited = 0 ] && echo "== waiting for another precursor-dataplane to exit" >&2
        waited=$((waited + 5))
        if [ $waited -gt 900 ]; then
            echo "$script: another data plane has been running for 15 minutes; giving up" >&2
            exit 1
        fi
        sleep 5
    done
}

# Prints where a benchmark's active segments go: hugetlbfs when mounted, else /dev/shm.
# $1: a name unique to the run.
bench_memory_dir() {
    if awk '$2 == "/dev/hugepages" && $3 == "hugetlbfs" { found = 1 } END { exit !found }' /proc/mounts; then
        echo "/dev/hugepages/$1"
    else
        echo "/dev/shm/$1"
    fi
}

# The client's network namespace behind a veth pair; the outer end stays in the root
# namespace for the data plane's af_packet port. $1 namespace, $2 outer, $3 inner,
# $4 the client's address (a /24).
bench_make_client_netns() {
    local ns="$1" outer="$2" inner="$3" client_ip="$4"
    ip netns add "$ns"
    ip link add "$outer" type veth peer name "$inner"
    ip link set "$inner" netns "$ns"
    ip link set "$outer" up
    ip -n "$ns" addr add "$client_ip/24" dev "$inner"
    ip -n "$ns" link set "$inner" up
    ip -n "$ns" link set lo up
}

# Starts `$bin/precursor-dataplane --config $1` (inside namespace $2, "" for the root
# one; more arguments after $3 are passed on), its stderr in $3; waits for "ready:",
# then pins every thread but the lcore (the main thread) to core 0. Sets `dp_pid`.
# Exits the calling script with the log when the data plane dies or is not ready in 60 s.
bench_start_dataplane() {
    local config="$1" inside="$2" log="$3"
    shift 3
    if [ -n "$inside" ]; then
        ip netns exec "$inside" "$bin/precursor-dataplane" --config "$config" "$@" 2>"$log" &
    else
        "$bin/precursor-dataplane" --config "$config" "$@" 2>"$log" &
    fi
    dp_pid=$!
    for _ in $(seq 600); do
        grep -q "ready:" "$log" 2>/dev/null && break
        if ! kill -0 "$dp_pid" 2>/dev/null; then
            echo "${0##*/}: the data plane exited at start-up:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    grep -q "ready:" "$log" || { cat "$log" >&2; echo "${0##*/}: data plane not ready" >&2; exit 1; }
    local task tid
    for task in /proc/"$dp_pid"/task/*; do
        tid="${task##*/}"
        [ "$tid" = "$dp_pid" ] || taskset -pc 0 "$tid" >/dev/null
    done
}

# Stops the data plane `bench_start_dataplane` started (SIGTERM: it persists and exits).
bench_stop_dataplane() {
    if [ -n "${dp_pid:-}" ]; then
        kill -TERM "$dp_pid" 2>/dev/null || true
        wait "$dp_pid" 2>/dev/null || true
        dp_pid=""
    fi
}

# Starts `$bin/precursor controlplane --config $1` (attach mode: the control plane of a data
# plane started by bench_start_dataplane, with the Kafka gateway its config's [gateway]
# section names), its stderr in $2; waits until it is attached and 127.0.0.1:$3 accepts
# connections; with $4 = pin, pins its threads to core 0. Sets `gateway_pid`. Exits the
# calling script with the log when it dies or is not ready in 30 s.
bench_start_gateway() {
    local config="$1" log="$2" port="$3" pin="${4:-}"
    "$bin/precursor" controlplane --config "$config" 2>"$log" &
    gateway_pid=$!
    for _ in $(seq 300); do
        if grep -q "attached to the data plane" "$log" 2>/dev/null \
            && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            if [ "$pin" = pin ]; then
                local task
                for task in /proc/"$gateway_pid"/task/*; do taskset -pc 0 "${task##*/}" >/dev/null; done
            fi
            return 0
        fi
        kill -0 "$gateway_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    cat "$log" >&2
    echo "${0##*/}: the Kafka gateway is not ready" >&2
    exit 1
}

# Stops the control plane bench_start_gateway started (SIGTERM).
bench_stop_gateway() {
    if [ -n "${gateway_pid:-}" ]; then
        kill -TERM "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
        gateway_pid=""
    fi
}
