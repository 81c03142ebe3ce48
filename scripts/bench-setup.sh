# Sourced by scripts/bench.sh, scripts/bench-openloop.sh and scripts/bench-cluster.sh after they read
# their options (`peers`, `port`): builds Ragnarok and the peers, makes a
# work folder, a certificate and Ragnarok's configs (scripts/bench-work.sh),
# and defines `start SERVER TLS` (server pinned to core 0, waits until it
# listens) and `stop`; and `busy` / `wait_quiet` (waits until the rest of
# the machine uses less than `$quiet` % of a core), for the open-loop
# scripts.
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release
for p in "${peers[@]}"; do
    case $p in
        node) (cd bench/peers/node-ws && npm ci --no-audit --no-fund --silent);;
        # --target-dir: start() runs it from there, whatever CARGO_TARGET_DIR says.
        tokio) (cd bench/peers/tokio-tungstenite && cargo build --release --quiet --target-dir target);;
    esac
done

source scripts/bench-work.sh

start() {  # start SERVER TLS
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "port $port is already in use: stop whatever listens there first" >&2; exit 1
    fi
    local args=()
    [ "$2" = true ] && args=("$work/cert.pem" "$work/key.pem")
    case $1 in
        ragnarok) taskset -c 0 "$bin/ragnarok" --config "$work/ragnarok-$2.json" 2>>"$work/server.log" & ;;
        node) taskset -c 0 node bench/peers/node-ws/server.js $port "" "${args[@]}" 2>>"$work/server.log" & ;;
        tokio) taskset -c 0 bench/peers/tokio-tungstenite/target/release/peer-tokio-tungstenite $port "" "${args[@]}" 2>>"$work/server.log" & ;;
        relay) taskset -c 0 "$bin/ragnarok-load" relay --addr 127.0.0.1:$port >/dev/null 2>>"$work/server.log" & ;;
    esac
    server_pid=$!
    listening "$1"
}

busy() {  # the whole machine's busy CPU over 2 s, in % of one core
    local a b
    a=$(head -n1 /proc/stat); sleep 2; b=$(head -n1 /proc/stat)
    python3 -c "
a, b = '$a'.split()[1:], '$b'.split()[1:]
d = [int(y) - int(x) for x, y in zip(a, b)]
busy = d[0] + d[1] + d[2] + d[5] + d[6] + d[7]
print(round(busy * 100 * $(nproc) / max(sum(d[:8]), 1)))"
}

wait_quiet() {
    local b waited=0
    while b=$(busy); [ "$b" -gt "$quiet" ]; do
        [ "$waited" -ge 600 ] && { echo "   the machine is still busy ($b % of a core): running anyway" >&2; return; }
        [ $((waited % 60)) -eq 0 ] && echo "   waiting for a quiet machine: $b % of a core busy; $(uptime | sed 's/.*load/load/')" >&2
        sleep 8; waited=$((waited + 10))
    done
}
