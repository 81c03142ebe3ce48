#!/usr/bin/env bash
# The standard benchmark set: server pinned to core 0, load generator
# (target/release/ragnarok-load) on core 1, one fresh server per scenario.
# Prints the report (scripts/bench_report.py: the results table with the
# command, date and machine, the goals judged from it, the ratios to the
# peers) and puts it into BENCHMARKS.md between the bench markers.
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
port=23456
source scripts/bench-setup.sh

run() {  # run SERVER TLS SCENARIO ARGS...
    local server=$1 tls=$2 scenario=$3; shift 3
    local tlsarg=()
    [ "$tls" = true ] && tlsarg=(--tls "$work/cert.pem")
    start "$server" "$tls"
    echo "== $server $([ "$tls" = true ] && echo wss || echo ws) $scenario $*" >&2
    local out line
    # Captured, then printed: `tee /dev/stderr` reopens the log file and
    # overwrites other lines when stderr is redirected to a file.
    out=$(taskset -c 1 "$bin/ragnarok-load" "$scenario" --addr 127.0.0.1:$port --pid "$server_pid" "${tlsarg[@]}" "$@")
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

scripts/bench_report.py "$work/results.jsonl" "$command_line" --into BENCHMARKS.md
