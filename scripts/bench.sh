#!/usr/bin/env bash
# The standard benchmark set: server pinned to core 0, load generator
# (target/release/ragnarok-load) on core 1, one fresh server per scenario.
# Writes the results table into BENCHMARKS.md (between the bench markers)
# with the command, date and machine, and prints it.
#
# Usage: scripts/bench.sh [--peer node|tokio|all] [--repeat R] [--quick]
#   --peer    also run the same scenarios against the peers in bench/peers/
#   --repeat  run each fanout R times (default 3) and report the median run
#             by server CPU, with all R figures (the machine is noisy)
#   --quick   shorter runs (3 s instead of 10 s, fanout once), a smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
peers=() secs=10 repeat=3
command_line="scripts/bench.sh $*"
while [ $# -gt 0 ]; do
    case $1 in
        --peer) shift; case ${1:-} in all) peers=(node tokio);; node|tokio) peers+=("$1");; *) echo "--peer node|tokio|all" >&2; exit 64;; esac;;
        --repeat) shift; [[ ${1:-} =~ ^[1-9][0-9]*$ ]] || { echo "--repeat needs a count" >&2; exit 64; }; repeat=$1;;
        --quick) secs=3 repeat=1;;
        *) echo "usage: scripts/bench.sh [--peer node|tokio|all] [--repeat R] [--quick]" >&2; exit 64;;
    esac
    shift
done
cargo build --release --quiet
for p in "${peers[@]}"; do
    case $p in
        node) (cd bench/peers/node-ws && npm ci --no-audit --no-fund --silent);;
        tokio) (cd bench/peers/tokio-tungstenite && cargo build --release --quiet);;
    esac
done

work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
    -out "$work/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null
port=23456
for tls in false true; do
    cat > "$work/ragnarok-$tls.json" <<JSON
{"SSL": $tls, "SSL_Cert": "cert.pem", "SSL_Key": "key.pem", "server_port": $port,
 "rate_limit_per_sec": 0, "max_connections": 20000, "log_level": "warn"}
JSON
done

start() {  # start SERVER TLS
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "port $port is already in use: stop whatever listens there first" >&2; exit 1
    fi
    local args=()
    [ "$2" = true ] && args=("$work/cert.pem" "$work/key.pem")
    case $1 in
        ragnarok) taskset -c 0 target/release/ragnarok --config "$work/ragnarok-$2.json" 2>>"$work/server.log" & ;;
        node) taskset -c 0 node bench/peers/node-ws/server.js $port "" "${args[@]}" 2>>"$work/server.log" & ;;
        tokio) taskset -c 0 bench/peers/tokio-tungstenite/target/release/peer-tokio-tungstenite $port "" "${args[@]}" 2>>"$work/server.log" & ;;
        relay) taskset -c 0 target/release/ragnarok-load relay --addr 127.0.0.1:$port >/dev/null 2>>"$work/server.log" & ;;
    esac
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$1 did not start" >&2; cat "$work/server.log" >&2; exit 1
}
stop() { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; server_pid=; sleep 0.3; }

run() {  # run SERVER TLS SCENARIO ARGS...
    local server=$1 tls=$2 scenario=$3; shift 3
    local tlsarg=()
    [ "$tls" = true ] && tlsarg=(--tls "$work/cert.pem")
    start "$server" "$tls"
    echo "== $server $([ "$tls" = true ] && echo wss || echo ws) $scenario $*" >&2
    local out line
    # Captured, then printed: `tee /dev/stderr` reopens the log file and
    # overwrites other lines when stderr is redirected to a file.
    out=$(taskset -c 1 target/release/ragnarok-load "$scenario" --addr 127.0.0.1:$port --pid "$server_pid" "${tlsarg[@]}" "$@")
    echo "$out" >&2
    line=$(tail -n1 <<<"$out")
    stop
    echo "{\"server\":\"$server\",\"tls\":$tls,\"args\":\"$*\",\"result\":$line}" >> "$work/results.jsonl"
}

# The peers send the full user list to everyone on every join, as the
# original did (quadratic): 10,000 users would take them hours to log in,
# so they are compared at 1,000, and Ragnarok is also run at 10,000.
for server in ragnarok "${peers[@]}"; do
    for tls in false true; do
        for _ in $(seq "$repeat"); do run "$server" $tls fanout -n 1000 -c 10 -s 60 -t "$secs"; done
        run "$server" $tls idle -n 1000 -t 3
        if [ "$server" = ragnarok ]; then run "$server" $tls idle -n 10000 -t 3; fi
    done
    run "$server" false private -k 50 -s 60 -t "$secs"
    run "$server" false joinstorm -n 1000
    if [ "$server" = ragnarok ]; then run "$server" false joinstorm -n 10000; fi
done
# The kernel's floor for private messages: a bare relay (one read and one
# write per message, no WebSocket or JSON) driven like `private`, with
# messages the size of its frames.
run relay false floor -k 50 -s 100 -t "$secs"

python3 - "$work/results.jsonl" "$command_line" <<'PY'
import json, sys, subprocess, datetime, re, platform
runs = [json.loads(l) for l in open(sys.argv[1])]
# Repeated runs of one scenario (fanout) become one row: the median run by
# server CPU (the higher middle one for an even count), with every run's
# figure beside it.
rows, spread = [], {}
for r in runs:
    key = (r["server"], r["tls"], r["result"]["scenario"], r["args"])
    if key in spread:
        spread[key].append(r)
    else:
        spread[key] = [r]
        rows.append(key)
def median(group):
    ranked = sorted(group, key=lambda r: r["result"].get("cpu_us_per_delivery") or 0)
    return ranked[len(ranked) // 2]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
def f(v, fmt="{:.3f}"):
    return "—" if v is None else fmt.format(v)
out = [f"Command: `{sys.argv[2].strip()}` · date: {datetime.date.today()} · machine: {nproc} cores, {cpu}, {platform.release()}",
       "", "| server | transport | scenario | result | server CPU µs/delivery (private, floor: per round trip) | server RSS | KiB/user | load generator CPU |", "|---|---|---|---|---|---|---|---|"]
for key in rows:
    group = spread[key]
    r = median(group)
    x = r["result"]; s = x["scenario"]
    if s == "fanout":
        lost, reordered = (sum(g["result"][k] for g in group) for k in ("lost", "reordered"))
        res = f'{x["per_sec"]:,.0f} deliveries/s; p50/p99/max {x["p50_ms"]:.1f}/{x["p99_ms"]:.1f}/{x["max_ms"]:.1f} ms; lost {lost}, reordered {reordered}' + (" (all runs)" if len(group) > 1 else "")
    elif s == "private":
        res = f'{x["per_sec"]:,.0f} round trips/s; p50/p99 {x["p50_ms"]:.2f}/{x["p99_ms"]:.2f} ms'
    elif s == "floor":
        res = f'{x["per_sec"]:,.0f} round trips/s (bare relay: one read + one write per message)'
    elif s == "joinstorm":
        res = f'{x["logged_in"]} of {x["users"]} in {x["seconds"]:.2f} s'
    else:
        res = f'{x["logged_in"]} users held'
    cpu = f(x["cpu_us_per_delivery"])
    if len(group) > 1:
        cpu += f" (median of {len(group)}: " + " / ".join(f(g["result"]["cpu_us_per_delivery"]) for g in group) + ")"
    out.append(f'| {r["server"]} | {"wss" if r["tls"] else "ws"} | {s} {r["args"]} | {res} | {cpu} | {f(x.get("rss_kib"), "{} KiB")} | {f(x.get("kib_per_user"), "{:.2f}")} | {f(x.get("loadgen_cpu_pct"), "{:.0f} %")} |')
table = "\n".join(out)
print(table)
doc = open("BENCHMARKS.md").read()
start, end = "<!-- bench:start -->", "<!-- bench:end -->"
new = doc[:doc.index(start) + len(start)] + "\n" + table + "\n" + doc[doc.index(end):]
open("BENCHMARKS.md", "w").write(new)
PY
