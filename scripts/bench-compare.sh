#!/usr/bin/env bash
# Before/after: two builds of the server, run alternately (A, B, A, B...)
# against the same load generator, so that a noisy shared machine hits both
# alike. Scenarios: the open-loop fanout at 10 and 100 msgs/s into 1,000
# users over ws and wss, the 10,000-user joinstorm, and 10,000 idle ws users
# (RSS per user). The server on core 0, the load generator on core 1, a
# fresh server per run. Prints one JSON line per run and a table of the
# medians with the after/before ratio.
#
# Usage: scripts/bench-compare.sh BEFORE_DIR AFTER_DIR [ROUNDS]
#   each DIR holds release builds of `ragnarok` (and BEFORE_DIR's
#   `ragnarok-load` is the load generator for both); ROUNDS defaults to 3.
#   ONLY=REGEX runs only the scenarios whose name matches (e.g. ONLY='ws 100').
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 rounds=${3:-3}
load=$before/ragnarok-load
port=23458
ulimit -n "$(ulimit -Hn)"
source scripts/bench-work.sh
# A build older than a key refuses it: a build older than the byte budget
# gets the same config without its key, one older than the per-address
# rates without theirs too.
for tls in false true; do
    grep -v '"rate_limit_bytes_per_sec"' "$work/ragnarok-$tls.json" >"$work/no-bytes-$tls.json"
    grep -v '"connections_per_minute_per_ip"' "$work/no-bytes-$tls.json" \
        | sed 's/"max_handshakes_per_ip": 0,/"max_handshakes_per_ip": 0, "log_level": "warn"}/' \
        >"$work/older-$tls.json"
done

start() {  # start BIN TLS
    local config=$work/ragnarok-$2.json
    "$1" --config "$config" --check-config >/dev/null 2>&1 || config=$work/no-bytes-$2.json
    "$1" --config "$config" --check-config >/dev/null 2>&1 || config=$work/older-$2.json
    taskset -c 0 "$1" --config "$config" 2>>"$work/server.log" &
    server_pid=$!
    listening "$1"
}

run() {  # run LABEL BIN SCENARIO TLS ARGS...
    local label=$1 bin=$2 name=$3 tls=$4 tlsarg=()
    shift 4
    [[ $name =~ ${ONLY:-.} ]] || return 0
    [ "$tls" = true ] && tlsarg=(--tls "$work/cert.pem")
    start "$bin" "$tls"
    local out
    out=$(taskset -c 1 "$load" "$@" --addr 127.0.0.1:$port --pid "$server_pid" "${tlsarg[@]}" | tail -n1)
    stop
    echo "{\"build\":\"$label\",\"scenario\":\"$name\",\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"result\":$out}" \
        | tee -a "$work/results.jsonl"
}

echo "scripts/bench-compare.sh $* ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
for round in $(seq "$rounds"); do
    for build in before after; do
        bin=$([ $build = before ] && echo "$before" || echo "$after")/ragnarok
        run $build "$bin" "fanout ws 10/s" false fanout -n 1000 -c 10 --rate 1 -t 10
        run $build "$bin" "fanout ws 100/s" false fanout -n 1000 -c 10 --rate 10 -t 10
        run $build "$bin" "fanout wss 10/s" true fanout -n 1000 -c 10 --rate 1 -t 10
        run $build "$bin" "fanout wss 100/s" true fanout -n 1000 -c 10 --rate 10 -t 10
        run $build "$bin" "joinstorm 10000" false joinstorm -n 10000
        run $build "$bin" "idle ws 10000" false idle -n 10000 -t 3
    done
done
python3 - "$work/results.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def figures(r):
    """(figure, value) pairs that matter for a run's scenario."""
    s, res = r["scenario"], r["result"]
    if s.startswith("fanout"):
        cpu, rate = res.get("server_cpu_pct"), res.get("per_sec")
        us = res.get("cpu_us_per_delivery") or (cpu * 1e4 / rate if cpu and rate else None)
        return [("server CPU, % of a core", cpu), ("µs of server CPU per delivery", us),
                ("p99 latency, ms", res.get("p99_ms")), ("lost", res.get("lost", 0))]
    if s.startswith("joinstorm"):
        return [("s until all logged in", res.get("seconds")), ("logged in", res.get("logged_in"))]
    return [("KiB RSS per user", res.get("kib_per_user"))]
rows = {}
for r in runs:
    for name, value in figures(r):
        rows.setdefault((r["scenario"], name), {}).setdefault(r["build"], []).append(value)
print("\n| scenario | figure | before (each run) | after (each run) | after / before (medians) |")
print("|---|---|---|---|---|")
for (s, name), row in rows.items():
    b = [x for x in row.get("before", []) if x is not None]
    a = [x for x in row.get("after", []) if x is not None]
    fmt = lambda xs: " / ".join(f"{x:.3g}" for x in xs)
    mb, ma = (statistics.median(b), statistics.median(a)) if a and b else (None, None)
    ratio = f"{ma / mb:.2f}" if mb else "-"
    print(f"| {s} | {name} | {fmt(b)} | {fmt(a)} | {ratio} |")
PY
