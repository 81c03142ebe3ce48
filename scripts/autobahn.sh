#!/usr/bin/env bash
# The Autobahn testsuite (sections 1-7, 9 and 10; 12 and 13 are compression,
# which the server does not offer) against the echo endpoint built from the
# server's own transport, connection and outbox (examples/autobahn_echo.rs),
# over ws and then wss. Prints a summary table per transport; exits non-zero
# when any case FAILED. kosoku's reports: target/autobahn/{ws,wss}/index.html.
#
# Usage: scripts/autobahn.sh [--quick] [--only ws|wss]
#   --quick   skip the long cases of section 9 (the large messages and the
#             1000-message runs)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import kosoku' 2>/dev/null; then
    pip install --quiet kosoku
fi
if ! command -v openssl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq openssl
fi
cargo build --release --quiet --features testing --example autobahn_echo
target_dir=${CARGO_TARGET_DIR:-target}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
    -out "$work/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null

echo "scripts/autobahn.sh${*:+ $*} ($(date -u +%Y-%m-%dT%H:%MZ), kosoku $(python3 -c 'import importlib.metadata as m; print(m.version("kosoku"))'))"
python3 -u scripts/kosoku_run.py --echo "$target_dir/release/examples/autobahn_echo" \
    --cert "$work/cert.pem" --key "$work/key.pem" --out "$target_dir/autobahn" "$@"
