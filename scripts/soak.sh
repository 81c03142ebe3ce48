#!/usr/bin/env bash
# Soak: builds the release binaries, starts the real server on a free port
# with the soak config below, runs `ragnarok-load soak` against it for SECS
# seconds (default 600) with --pid (RSS and open fds sampled), prints the
# load generator's summary and the server log's warnings, stops the server
# with SIGTERM. Exits non-zero if the soak found a fault (loss, reordering,
# a wrong answer, RSS or fds not back to the baseline) or the server did not
# exit cleanly.
#
# Usage: scripts/soak.sh [SECS] [--tls] [ragnarok-load options...]
#   scripts/soak.sh            # the full 10-minute soak
#   scripts/soak.sh 20         # a short one (CI)
#   scripts/soak.sh 600 --tls  # over wss (needs openssl)
#   scripts/soak.sh 60 -n 500 --rate 100
#   scripts/soak.sh 600 --cuts 2   # users' connections cut at random, resumed (issue 19)
#
# The soak config is the defaults except:
#   server_password            "soak-password" (a wrong password needs one)
#   max_connections_per_ip     1024: every client comes from 127.0.0.1 and the
#                              soak holds -n users plus about 20 (default 64)
#   login_timeout_secs         10 (default 60): the probe that sends a password
#                              and no name is answered within the run
#   connections_per_minute_per_ip, logins_per_minute_per_ip  0 (default 120
#                              and 30): the soak's churn of -n users, all
#                              from 127.0.0.1, is many households' worth
#   room_logins_per_sec        0 (default 50): the churn is not a raid
# Everything else stays at its default and the load generator keeps inside
# it: at most 12 unauthenticated connections at once (max_handshakes_per_ip
# 16), a wrong password every 10 s (login_attempts_per_minute 10), each
# client at 5 messages a second (rate_limit_per_sec 20, burst 40).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=600
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
tls=false
args=()
for arg in "$@"; do
    if [[ $arg == --tls ]]; then tls=true; else args+=("$arg"); fi
done

target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin ragnarok --bin ragnarok-load
server=$target/release/ragnarok
load=$target/release/ragnarok-load

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/config.json" <<JSON
{"SSL": $tls, "SSL_Cert": "cert.pem", "SSL_Key": "key.pem",
 "server_ip": "127.0.0.1", "server_port": 0,
 "server_name": "Soak", "server_password": "soak-password",
 "max_connections_per_ip": 1024, "login_timeout_secs": 10,
 "connections_per_minute_per_ip": 0, "logins_per_minute_per_ip": 0, "room_logins_per_sec": 0}
JSON
tls_args=()
if $tls; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
        -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
    tls_args=(--tls "$work/cert.pem")
fi

"$server" --config "$work/config.json" 2> "$work/server.log" &
server_pid=$!
addr=
for _ in $(seq 100); do
    addr=$(grep -o 'listening on wss\?://[0-9.:]*' "$work/server.log" | head -n1 | sed 's|.*://||') || true
    [[ -n $addr ]] && break
    sleep 0.1
done
if [[ -z $addr ]]; then
    echo "soak: the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 2
fi
echo "soak: server pid $server_pid on $addr, $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%M:%SZ)"

status=0
"$load" soak -t "$secs" --addr "$addr" --password soak-password --pid "$server_pid" \
    "${tls_args[@]}" "${args[@]}" || status=$?

kill -TERM "$server_pid"
server_status=0
wait "$server_pid" || server_status=$?
server_pid=
echo
echo "server log: $(wc -l < "$work/server.log") lines, $(grep -c ' WARN ' "$work/server.log" || true) warnings, $(grep -c ' ERROR ' "$work/server.log" || true) errors; exit status $server_status"
# Warnings by kind (addresses and numbers stripped).
grep -E ' (WARN|ERROR) ' "$work/server.log" | sed -E 's/^[^ ]+ +//; s/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+/ADDR/; s/[0-9]+/N/g' \
    | sort | uniq -c | sort -rn | head -20
if grep -q 'panicked' "$work/server.log"; then
    echo "soak: the server panicked:" >&2
    grep -A5 'panicked' "$work/server.log" >&2
    status=1
fi
if [[ $server_status -ne 0 ]]; then
    echo "soak: the server exited with $server_status" >&2
    [[ $status -ne 0 ]] || status=1
fi
exit "$status"
