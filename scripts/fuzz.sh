#!/usr/bin/env bash
# Runs every libFuzzer target under fuzz/ for a fixed number of inputs (FAULTLINE_FUZZ_RUNS,
# default 10 000 000 each) and prints, per target: inputs run, seconds, inputs per second and
# whether it panicked. Not part of CI: 10 M inputs take minutes to hours per target.
#
#   bash scripts/fuzz.sh                      # every target, 10 M inputs each
#   FAULTLINE_FUZZ_RUNS=100000 bash scripts/fuzz.sh history spec
#
# Needs the nightly toolchain and cargo-fuzz; both are installed when missing. The checked-in
# corpus under fuzz/corpus/TARGET is only the seed: each run works on a copy, so it stays small.
# A panic leaves its input under fuzz/artifacts/TARGET/ and makes the script exit 1.
set -euo pipefail

runs=${FAULTLINE_FUZZ_RUNS:-10000000}
cd "$(dirname "$0")/../fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(spec topology history observations ledger_record)
fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Rust is memory-safe here; what the targets look for is panics, so no sanitizer (several
# times faster).
cargo +nightly fuzz build --sanitizer none --release

failed=0
summary=()
for target in "${targets[@]}"; do
    work=$(mktemp -d "/tmp/faultline-fuzz-$target.XXXXXX")
    cp corpus/"$target"/* "$work"/
    log="$work.log"
    start=$(date +%s.%N)
    if cargo +nightly fuzz run --sanitizer none --release "$target" "$work" -- \
        -runs="$runs" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        outcome="0 panics"
    else
        outcome="PANICKED (input under fuzz/artifacts/$target/; log $log)"
        failed=1
    fi
    end=$(date +%s.%N)
    done_runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    rate=$(awk -v n="$done_runs" -v s="$seconds" 'BEGIN { if (s > 0 && n ~ /^[0-9]+$/) printf "%.0f", n / s; else print "?" }')
    summary+=("$(printf '%-14s %12s inputs %7s s %9s inputs/s  %s' "$target" "$done_runs" "$seconds" "$rate" "$outcome")")
    echo "${summary[-1]}"
    rm -rf "$work"
done
echo
echo "nightly: $(rustc +nightly --version)"
printf '%s\n' "${summary[@]}"
exit "$failed"
