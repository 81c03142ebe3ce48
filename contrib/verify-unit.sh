#!/usr/bin/env bash
# Checks contrib/ragnarok.service the way systemd will read it:
#   1. `systemd-analyze verify` prints nothing (no error, no warning: an
#      unknown key is only a warning and exit code 0, so any output fails);
#   2. `systemd-analyze security --offline=true` scores it, and fails if the
#      exposure is above THRESHOLD tenths (default 20, i.e. 2.0 on the 0-10
#      scale systemd prints; the unit scores 1.5 with systemd 252).
#
# verify wants the ExecStart= binary to exist, and CI has no
# /usr/local/bin/ragnarok: the unit is checked as a copy whose
# /usr/local/bin/ragnarok is the binary built here. Nothing is installed and
# no systemd needs to be running (a container is fine).
#
# Usage: contrib/verify-unit.sh [path/to/ragnarok]   (default: release build)
# Needs: systemd-analyze (Debian: apt-get install systemd).
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
trap 'rm -rf "$work"' EXIT
# Same file name (the unit's name is part of what is checked), binary swapped.
sed "s#/usr/local/bin/ragnarok#$BIN#g" contrib/ragnarok.service > "$work/ragnarok.service"

status=0
if output=$(systemd-analyze verify "$work/ragnarok.service" 2>&1) && [ -z "$output" ]; then
    echo "ok   systemd-analyze verify: no errors, no warnings"
else
    echo "FAIL systemd-analyze verify:"
    printf '%s\n' "$output" | sed 's/^/    /'
    status=1
fi

if score=$(systemd-analyze security --offline=true --threshold="$THRESHOLD" \
        "$work/ragnarok.service" 2>&1); then
    echo "ok   systemd-analyze security: $(printf '%s\n' "$score" | grep -o 'exposure level.*' )"
else
    echo "FAIL systemd-analyze security (exposure above $THRESHOLD tenths):"
    printf '%s\n' "$score" | grep -v '^✓' | sed 's/^/    /'
    status=1
fi
exit $status
