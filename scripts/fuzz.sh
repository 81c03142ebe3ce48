#!/usr/bin/env bash
# Fuzz the parsers with cargo-fuzz (libFuzzer) on the nightly toolchain.
#
#   scripts/fuzz.sh TARGET SECONDS    one target, e.g. scripts/fuzz.sh protocol 600
#   scripts/fuzz.sh all SECONDS       every target, SECONDS each, as many at
#                                     once as there are cores (FUZZ_JOBS)
#   scripts/fuzz.sh build             only build every target (CI starts the
#                                     build early, beside checks that wait)
#
# Targets live in fuzz/fuzz_targets/. Each run starts from the hand-made
# seeds (fuzz/seeds/TARGET, tracked) plus the working corpus
# (fuzz/corpus/TARGET, untracked, grown by every run). Crashing inputs land
# in fuzz/artifacts/TARGET/ and the full libFuzzer log in fuzz/logs/TARGET.log.
# A summary line is printed per target; the exit status is non-zero when a
# run finds a crash (or a leak, timeout or out-of-memory input) or fails to
# run at all.
#
# Environment: FUZZ_SANITIZER (default: address, cargo-fuzz's default),
# FUZZ_NICE (default: 10; the fuzzer runs under `nice -n FUZZ_NICE`),
# FUZZ_JOBS (default: the number of cores; each libFuzzer run uses one).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() {
    echo "usage: scripts/fuzz.sh TARGET|all SECONDS | scripts/fuzz.sh build   (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
}

ALL_TARGETS=(http_request config protocol resp)
# The `connection` target (arbitrary bytes into a whole connection over an
# in-memory transport) joins `all` as soon as its source and its [[bin]] in
# fuzz/Cargo.toml exist; give it its libFuzzer options in target_options.
if [[ -f fuzz/fuzz_targets/connection.rs ]]; then
    ALL_TARGETS+=(connection)
fi

# libFuzzer options per target: input size limit and dictionary.
target_options() {
    case "$1" in
        http_request)
            # Past MAX_REQUEST_BYTES (8192) so the 431 path is reachable.
            echo "-max_len=12288 -dict=$ROOT/fuzz/dict/http_request.dict" ;;
        config | protocol)
            echo "-max_len=4096 -dict=$ROOT/fuzz/dict/json.dict" ;;
        connection)
            echo "-max_len=16384" ;;
        resp)
            echo "-max_len=8192 -dict=$ROOT/fuzz/dict/resp.dict" ;;
        *)
            echo "" ;;
    esac
}

if [[ $# -eq 1 && $1 == build ]]; then
    set -- all build
fi
[[ $# -eq 2 ]] || usage
TARGET=$1
SECONDS_EACH=$2
BUILD_ONLY=false
if [[ $SECONDS_EACH == build ]]; then
    BUILD_ONLY=true
    SECONDS_EACH=1
fi
[[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]] || usage
if [[ $TARGET == all ]]; then
    TARGETS=("${ALL_TARGETS[@]}")
elif [[ -f fuzz/fuzz_targets/$TARGET.rs ]]; then
    TARGETS=("$TARGET")
else
    echo "fuzz.sh: no fuzz target named '$TARGET' in fuzz/fuzz_targets/" >&2
    usage
fi
SANITIZER=${FUZZ_SANITIZER:-address}
NICE=${FUZZ_NICE:-10}
JOBS=${FUZZ_JOBS:-$(nproc)}

# Tools: the nightly toolchain (cargo-fuzz needs -Z flags) and cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing the nightly toolchain" >&2
    rustup toolchain install nightly --profile minimal || {
        echo "fuzz.sh: cargo-fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
        exit 1
    }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

echo "fuzz.sh: building ${TARGETS[*]} (sanitizer: $SANITIZER)" >&2
for t in "${TARGETS[@]}"; do
    nice -n "$NICE" cargo +nightly fuzz build --sanitizer "$SANITIZER" "$t"
done
if $BUILD_ONLY; then
    exit 0
fi

mkdir -p fuzz/logs
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

# fuzz_one TARGET: one libFuzzer run; its summary line goes to
# $results/TARGET, and $results/TARGET.failed marks a finding or a failure.
fuzz_one() {
    local t=$1
    corpus=$ROOT/fuzz/corpus/$t
    seeds=$ROOT/fuzz/seeds/$t
    artifacts=$ROOT/fuzz/artifacts/$t
    log=$ROOT/fuzz/logs/$t.log
    mkdir -p "$corpus" "$seeds" "$artifacts"
    marker=$(mktemp)
    echo "fuzz.sh: fuzzing $t for ${SECONDS_EACH}s (log: fuzz/logs/$t.log)" >&2
    status=0
    # shellcheck disable=SC2046  # target_options gives several words on purpose
    nice -n "$NICE" cargo +nightly fuzz run --sanitizer "$SANITIZER" "$t" "$corpus" "$seeds" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 \
        $(target_options "$t") >"$log" 2>&1 || status=$?

    # libFuzzer's figures: executions and speed from the final stats, coverage
    # (cov: edges, ft: features) and in-memory corpus from its last status line.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    last=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n1 || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$last")
    files=$(find "$corpus" -type f | wc -l)
    mapfile -t found < <(find "$artifacts" -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
    rm -f "$marker"

    local line="fuzz $t: ${SECONDS_EACH}s, ${execs:-?} execs (${speed:-?}/s), cov ${cov:-?} ft ${ft:-?}, corpus ${corp:-?} (libFuzzer entries/bytes; $files files in fuzz/corpus/$t), findings ${#found[@]}"
    if ((${#found[@]} > 0)) || ((status != 0)); then
        touch "$results/$t.failed"
        echo "---- last lines of fuzz/logs/$t.log ----" >&2
        tail -n 60 "$log" >&2
        echo "----" >&2
        for f in "${found[@]}"; do
            echo "fuzz.sh: $t finding: ${f#"$ROOT"/} (reproduce: cargo +nightly fuzz run $t ${f#"$ROOT"/})" >&2
        done
        ((${#found[@]} > 0)) || line+=" (libFuzzer exited with status $status)"
    fi
    echo "$line" >"$results/$t"
    echo "$line"
}

# At most JOBS runs at once, each for its full time.
for t in "${TARGETS[@]}"; do
    while (($(jobs -rp | wc -l) >= JOBS)); do
        wait -n || true
    done
    fuzz_one "$t" &
done
wait

summaries=()
failed=0
for t in "${TARGETS[@]}"; do
    summaries+=("$(cat "$results/$t" 2>/dev/null || echo "fuzz $t: did not report")")
    [[ -f $results/$t.failed || ! -f $results/$t ]] && failed=1
done

if ((${#TARGETS[@]} > 1)); then
    echo "fuzz.sh: summary"
    printf '  %s\n' "${summaries[@]}"
fi
exit "$failed"
