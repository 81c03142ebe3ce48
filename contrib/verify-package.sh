#!/usr/bin/env bash
# Installs the Debian package (scripts/package.sh) on this machine, checks
# what it installed, takes it through a reinstall, a remove and a purge, and
# leaves the machine without it:
#   1. `apt-get install ./ragnarok_*.deb`: the system user ragnarok (no
#      login), /usr/bin/ragnarok, the unit, and /etc/ragnarok/config.json, a
#      conffile, root:ragnarok 0640 (another user cannot read it);
#   2. `ragnarok --check-config` on the installed config, as the user
#      ragnarok (runuser), as the unit's ExecStartPre= runs it; then the
#      server, started as the unit starts it (the user ragnarok, umask
#      077, /run/ragnarok and /var/lib/ragnarok made as systemd makes
#      them; the installed config on a free port), serves `ragnarok ctl`
#      as root on /run/ragnarok/control.sock, keeps a ban in
#      /var/lib/ragnarok/state.json, and refuses another user's ctl;
#   3. `systemd-analyze verify` on the installed unit prints nothing, and
#      `systemd-analyze security` scores it at most THRESHOLD tenths (default
#      20; 1.5 with systemd 252); its system call and socket filters are
#      contrib/ragnarok.service's (the ones contrib/verify-unit.sh checks a
#      real session against);
#   4. a reinstall (what an upgrade runs: prerm upgrade, postinst configure
#      with the old version) keeps a changed config, its owner and mode,
#      and the user's ID;
#   5. `apt-get remove`: the binary and the unit go; the config, the user
#      and /var/lib/ragnarok (the bans) stay, and installing again from there
#      works;
#   6. `apt-get purge`: the config, /etc/ragnarok, /var/lib/ragnarok, the
#      user, the group, the dpkg-statoverride and the unit's symlinks (it is
#      enabled with `systemctl enable` first) are gone.
#
# For CI and throwaway machines: needs root and apt-get, and refuses to run
# where the package is installed already (it would purge it). No systemd
# needs to be running (a container is fine): the unit is not started.
#
# Usage: contrib/verify-package.sh [path/to/ragnarok_*.deb]
#        (default: the newest in target/debian/)
# Needs: systemd-analyze (Debian: apt-get install systemd).
set -euo pipefail
cd "$(dirname "$0")/.."
THRESHOLD=${THRESHOLD:-20}
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "needs root and apt-get (it installs and purges the package)" >&2
    exit 2
fi
if ! command -v systemd-analyze >/dev/null; then
    echo "systemd-analyze not found: apt-get install systemd" >&2
    exit 2
fi
if [ $# -ge 1 ]; then
    deb=$1
else
    deb=$(ls -t target/debian/ragnarok_*.deb 2>/dev/null | head -n1 || true)
fi
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    echo "no package: scripts/package.sh makes target/debian/ragnarok_*.deb" >&2
    exit 2
fi
deb=$(realpath "$deb")
if dpkg-query -W -f '${Status}' ragnarok 2>/dev/null | grep -qv '^unknown\|not-installed'; then
    echo "the package ragnarok is installed here ($(dpkg-query -W -f '${Status}' ragnarok));" \
        "this check would purge it: run it on a machine without it" >&2
    exit 2
fi

status=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; status=1; }
# Each check: a description, then the command; its output is shown when it fails.
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$what"; else
        fail "$what"
        [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
    fi
}
apt() {
    local out
    if ! out=$(apt-get "$@" -y -q 2>&1); then
        printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
        return 1
    fi
}
# A missing dependency (adduser) on a machine without package lists.
pkg_install() { apt install "$@" || { apt-get update -qq && apt install "$@"; }; }
mode() { stat -c '%U:%G %a' "$1"; }
unit=/usr/lib/systemd/system/ragnarok.service
config=/etc/ragnarok/config.json
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi' EXIT

# --- 1. install ---
if ! pkg_install "$deb"; then
    fail "apt-get install $deb"
    exit 1
fi
ok "apt-get install $(basename "$deb")"
user=$(getent passwd ragnarok || true)
uid=$(id -u ragnarok 2>/dev/null || true)
check "user ragnarok: a system user without a login ($user)" \
    test -n "$uid" -a "${uid:-1000}" -lt 1000 -a "${user##*:}" = /usr/sbin/nologin
check "/usr/bin/ragnarok runs: $(/usr/bin/ragnarok --version 2>&1 | head -n1)" /usr/bin/ragnarok --version
check "$config: root:ragnarok 640 ($(mode $config))" test "$(mode $config)" = "root:ragnarok 640"
check "$config is a conffile" grep -qx " $config [0-9a-f]*" <(dpkg-query -W -f '${Conffiles}\n' ragnarok)
check "$config: another user cannot read it" bash -c "! runuser -u nobody -- cat $config"

# --- 2. the config, as the service's user ---
check "ragnarok --check-config on $config, as ragnarok" \
    runuser -u ragnarok -- /usr/bin/ragnarok --config "$config" --check-config

# The server as the unit runs it, on the installed config but a free port
# (a copy next to it: control_socket and state_file are absolute paths).
install -d -o ragnarok -g ragnarok -m 0750 /run/ragnarok /var/lib/ragnarok
test_config=/etc/ragnarok/verify-package.json
sed 's/"server_port": *[0-9]*/"server_port": 0/' "$config" > "$test_config"
chown root:ragnarok "$test_config" && chmod 0640 "$test_config"
server_log=$(mktemp)
(cd / && umask 077 && exec runuser -u ragnarok -- /usr/bin/ragnarok --config "$test_config") \
    > "$server_log" 2>&1 &
server=$!
for _ in $(seq 50); do
    if [ -S /run/ragnarok/control.sock ] && grep -q 'listening on' "$server_log"; then break; fi
    sleep 0.1
done
if stats=$(cd / && ragnarok ctl --config "$test_config" stats 2>&1); then
    ok "the server as the unit runs it: ragnarok ctl stats as root: $stats"
else
    fail "the server as the unit runs it: ragnarok ctl stats as root:"
    printf '%s\n%s\n' "$stats" "$(cat "$server_log")" | sed 's/^/    /'
fi
# The server writes the bans at its next tick (once a second at most).
check "ragnarok ctl ban: kept in /var/lib/ragnarok/state.json, the user ragnarok's, 0600" \
    bash -c "cd / && ragnarok ctl --config $test_config ban 192.0.2.1 --for 1h &&
        for _ in \$(seq 50); do grep -qs 192.0.2.1 /var/lib/ragnarok/state.json && break; sleep 0.1; done &&
        grep -q 192.0.2.1 /var/lib/ragnarok/state.json &&
        test \"\$(stat -c '%U %a' /var/lib/ragnarok/state.json)\" = 'ragnarok 600'"
check "the control socket: out of another user's reach" \
    bash -c "cd / && ! runuser -u nobody -- python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"/run/ragnarok/control.sock\")' 2>/dev/null"
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
server=
rm -f "$test_config" "$server_log"
rm -rf /run/ragnarok /var/lib/ragnarok

# --- 3. the unit ---
if output=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$output" ]; then
    ok "systemd-analyze verify $unit: no errors, no warnings"
else
    fail "systemd-analyze verify $unit:"
    printf '%s\n' "$output" | sed 's/^/    /'
fi
if score=$(systemd-analyze security --offline=true --threshold="$THRESHOLD" "$unit" 2>&1); then
    ok "systemd-analyze security: $(printf '%s\n' "$score" | grep -o 'exposure level.*')"
else
    fail "systemd-analyze security (exposure above $THRESHOLD tenths):"
    printf '%s\n' "$score" | grep -v '^✓' | sed 's/^/    /'
fi
filters() { grep -E '^(SystemCallFilter|SystemCallErrorNumber|RestrictAddressFamilies)=' "$1"; }
check "the unit has the system call and socket filters of contrib/ragnarok.service" \
    diff <(filters contrib/ragnarok.service) <(filters "$unit")
check "the unit: User=ragnarok, RuntimeDirectory=ragnarok (0750), StateDirectory=ragnarok" \
    bash -c "grep -qx User=ragnarok $unit && grep -qx Group=ragnarok $unit &&
        grep -qx RuntimeDirectory=ragnarok $unit && grep -qx RuntimeDirectoryMode=0750 $unit &&
        grep -qx StateDirectory=ragnarok $unit && ! grep -q '^DynamicUser=' $unit"

# --- 4. reinstall, with a changed config and state as a running server leaves them ---
sed -i 's/"server_name": *"[^"]*"/"server_name": "changed by verify-package"/' "$config"
install -d -o ragnarok -g ragnarok -m 0750 /var/lib/ragnarok
echo '{}' > /var/lib/ragnarok/state.json
systemctl enable ragnarok.service >/dev/null 2>&1 || true
if pkg_install --reinstall "$deb"; then ok "apt-get install --reinstall"; else fail "apt-get install --reinstall"; fi
check "after the reinstall: the changed config, root:ragnarok 640, the same user ID" \
    bash -c "grep -q 'changed by verify-package' $config && test \"\$(stat -c '%U:%G %a' $config)\" = 'root:ragnarok 640' && test \"\$(id -u ragnarok)\" = $uid"

# --- 5. remove, then install again ---
if apt remove ragnarok; then ok "apt-get remove"; else fail "apt-get remove"; fi
check "after remove: no binary, no unit; the config, the user and /var/lib/ragnarok stay" \
    bash -c "test ! -e /usr/bin/ragnarok && test ! -e $unit && grep -q 'changed by verify-package' $config &&
        test \"\$(id -u ragnarok)\" = $uid && test -f /var/lib/ragnarok/state.json"
if pkg_install "$deb"; then ok "apt-get install after remove"; else fail "apt-get install after remove"; fi
check "installed again: the changed config, --check-config as ragnarok" \
    bash -c "grep -q 'changed by verify-package' $config &&
        runuser -u ragnarok -- /usr/bin/ragnarok --config $config --check-config"

# --- 6. purge ---
if apt purge ragnarok; then ok "apt-get purge"; else fail "apt-get purge"; fi
check "after purge: no config, /etc/ragnarok, /var/lib/ragnarok, user, group, statoverride, unit symlinks" \
    bash -c "test ! -e /etc/ragnarok && test ! -e /var/lib/ragnarok &&
        ! getent passwd ragnarok && ! getent group ragnarok &&
        ! dpkg-statoverride --list $config &&
        test ! -L /etc/systemd/system/ragnarok.service &&
        test ! -L /etc/systemd/system/multi-user.target.wants/ragnarok.service &&
        ! dpkg-query -W ragnarok"
exit $status
