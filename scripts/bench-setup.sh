# Sourced by scripts/bench.sh, scripts/bench-openloop.sh and scripts/bench-cluster.sh after they read
# their options (`peers`, `port`): builds Ragnarok and the peers, makes a
# work folder (removed on exit), a certificate and Ragnarok's configs, and
# defines `start SERVER TLS` (server pinned to core 0, waits until it
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

work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
    -out "$work/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null
for tls in false true; do
    cat > "$work/ragnarok-$tls.json" <<JSON
{"SSL": $tls, "SSL_Cert": "cert.pem", "SSL_Key": "key.pem", "server_port": $port,
 "rate_limit_per_sec": 0, "max_connections": 20000,
 "max_connections_per_ip": 0, "max_handshakes_per_ip": 0,
 "connections_per_minute_per_ip": 0, "logins_per_minute_per_ip": 0, "log_level": "warn"}
JSON
done

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
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$1 did not start" >&2; cat "$work/server.log" >&2; exit 1
}
stop() { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; server_pid=; sleep 0.3; }

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
