#!/usr/bin/env bash
# Makes the Debian package, target/debian/ragnarok_<version>-1_<arch>.deb:
# the release binary as /usr/bin/ragnarok, the systemd unit
# (contrib/deb/ragnarok.service), the sample config as the conffile
# /etc/ragnarok/config.json, the maintainer scripts that make and remove
# the system user ragnarok (contrib/deb/), and the docs. What goes in is
# [package.metadata.deb] in Cargo.toml. Install it, here or on the server:
#
#   apt-get install ./target/debian/ragnarok_*.deb
#
# then docs/DEPLOY.md, section 1. Steps: `cargo build --release` (nothing
# to do when it is built), scripts/check-glibc.sh (the binary must start on
# Debian 12: fails on a build machine with a newer glibc), `cargo deb
# --no-build`. contrib/verify-package.sh installs, checks and purges it.
#
# Usage: scripts/package.sh
# Needs: cargo-deb (cargo install --locked cargo-deb), objdump and
# dpkg-shlibdeps (Debian: build-essential; dpkg-shlibdeps gives the libc6
# version in Depends:).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
    echo "cargo-deb not found: cargo install --locked cargo-deb" >&2
    exit 2
fi
# Without it cargo-deb only warns, and the package would not say which
# libc6 it needs: apt would install it where the binary cannot start.
if ! command -v dpkg-shlibdeps >/dev/null; then
    echo "dpkg-shlibdeps not found: apt-get install dpkg-dev" >&2
    exit 2
fi
cargo build --release
scripts/check-glibc.sh "${CARGO_TARGET_DIR:-target}/release/ragnarok"
# cargo-deb prints the package's path on stdout, its progress on stderr.
deb=$(cargo deb --no-build)
echo "made $deb"
dpkg-deb --field "$deb" Package Version Architecture Depends
