#!/usr/bin/env bash
# The oldest glibc a ragnarok binary runs on: the highest GLIBC_x.y among
# the versions of the C library's symbols it uses (`objdump -T`, the
# dynamic symbol table). On an older glibc the dynamic linker refuses to
# start it ("version `GLIBC_2.34' not found"). The figure comes from the
# glibc of the machine that built it, not from the code: a build on Debian
# 12 (glibc 2.36) needs 2.34, the version of __libc_start_main since
# libpthread moved into libc. Prints the figure and the symbols that need
# it; fails if it is newer than MAX_GLIBC (default 2.36, Debian 12
# bookworm's), i.e. if the binary would not run on Debian 12.
#
# Usage: scripts/check-glibc.sh [path/to/ragnarok]   (default: release build)
# Needs: objdump (Debian: apt-get install binutils; comes with build-essential).
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_GLIBC=${MAX_GLIBC:-2.36}
BIN=${1:-target/release/ragnarok}

if ! command -v objdump >/dev/null; then
    echo "objdump not found: apt-get install binutils" >&2
    exit 2
fi
if [ ! -f "$BIN" ]; then
    echo "$BIN not found: cargo build --release" >&2
    exit 2
fi
symbols=$(objdump -T "$BIN")
need=$(grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' <<<"$symbols" | sed 's/^GLIBC_//' | sort -uV | tail -n1)
if [ -z "$need" ]; then
    echo "$BIN: no GLIBC_ symbol versions (not a dynamically linked glibc binary?)" >&2
    exit 2
fi
# The symbols at that version: the last field of their lines.
which=$(grep -E "GLIBC_${need//./\\.}([^.0-9]|$)" <<<"$symbols" | awk '{print $NF}' | sort -u | tr '\n' ' ')
here=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}' || true)
target="glibc $MAX_GLIBC"
if [ "$MAX_GLIBC" = 2.36 ]; then target+=" (Debian 12 bookworm)"; fi
echo "$BIN needs glibc $need or newer (GLIBC_$need: ${which% }); this machine has ${here:-?}"
if [ "$(printf '%s\n%s\n' "$need" "$MAX_GLIBC" | sort -V | tail -n1)" != "$MAX_GLIBC" ]; then
    echo "FAIL glibc $need is newer than $target: the binary would not start there;" \
        "build it on a machine with glibc $MAX_GLIBC or older" >&2
    exit 1
fi
echo "ok   starts on $target and on every glibc from $need on"
