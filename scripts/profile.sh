#!/usr/bin/env bash
# Profiles the server under the fanout load: perf record (call graphs via
# frame pointers, cpu-clock so it works without hardware counters) on the
# server pinned to core 0 while ragnarok-load runs on core 1, then prints
# the top of `perf report`. See BENCHMARKS.md for how to read it.
#
# Usage: scripts/profile.sh [--tls] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
tls=false secs=8
for arg in "$@"; do
    case $arg in --tls) tls=true;; *) secs=$arg;; esac
done
if ! command -v perf >/dev/null; then
    apt-get update -qq && apt-get install -y -qq linux-perf
fi
export CARGO_TARGET_DIR=target/profile
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --quiet --bins
bin=$CARGO_TARGET_DIR/release

work=$(mktemp -d)
trap 'kill $server_pid 2>/dev/null; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
    -out "$work/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null
cat > "$work/config.json" <<JSON
{"SSL": $tls, "SSL_Cert": "cert.pem", "SSL_Key": "key.pem", "server_port": 23458,
 "rate_limit_per_sec": 0, "rate_limit_bytes_per_sec": 0, "log_level": "warn"}
JSON
taskset -c 0 "$bin/ragnarok" --config "$work/config.json" &
server_pid=$!
sleep 0.5
tlsarg=()
[ "$tls" = true ] && tlsarg=(--tls "$work/cert.pem")
# Record the steady state: start after the logins, stop before the end.
(sleep 2; timeout "$((secs - 1))" perf record -e cpu-clock -F 1999 -g -p "$server_pid" -o "$work/perf.data" \
    >/dev/null 2>&1 || true) &
record_pid=$!
# Count the writes over the same window: frames per write = deliveries / writes.
count_secs=$((secs > 4 ? secs - 3 : 1))
(sleep 2; perf stat -x, -e syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto \
    -p "$server_pid" -o "$work/writes.csv" -- sleep "$count_secs" >/dev/null 2>&1 || true) &
count_pid=$!
result=$(taskset -c 1 "$bin/ragnarok-load" fanout --addr 127.0.0.1:23458 -n 1000 -c 10 -t "$secs" \
    --pid "$server_pid" "${tlsarg[@]}" | tail -n1)
echo "$result"
wait "$record_pid" "$count_pid" 2>/dev/null || sleep 1
python3 - "$result" "$work/writes.csv" "$count_secs" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
try:
    writes = sum(int(l.split(",")[0]) for l in open(sys.argv[2]) if l.split(",")[0].isdigit())
except OSError:
    writes = 0
if not writes:
    print("(no write count: perf's syscall tracepoints are not available here)")
else:
    per_write = r["per_sec"] / (writes / float(sys.argv[3]))
    cpu, sys_ = r["cpu_us_per_delivery"], r["sys_us_per_delivery"]
    print(f"{per_write:.1f} frames per write; per write: {cpu * per_write:.2f} us of server CPU, "
          f"{sys_ * per_write:.2f} in the kernel, {(cpu - sys_) * per_write:.2f} in user space")
PY
echo
echo "== where the server's time goes (by binary)"
perf report -i "$work/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null | grep '%' | head -5
echo
echo "== top functions (self time)"
perf report -i "$work/perf.data" --stdio --no-children --sort symbol -g none 2>/dev/null | grep '%' | head -25
echo
echo "== top functions in ragnarok itself"
perf report -i "$work/perf.data" --stdio --no-children --sort symbol -g none --dsos ragnarok 2>/dev/null \
    | grep '%' | head -15
