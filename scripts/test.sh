#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, then every test (unit, real namespaces,
# real nats-server clusters). Run as root on a fresh Debian machine with Rust. Every test binary
# runs even when an earlier one fails; the totals and the failing tests come at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
started=$SECONDS
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?

# `test result: ok. 12 passed; 0 failed; 1 ignored; ...` per binary, summed.
read -r passed failed ignored binaries < <(awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed;?$/) p += $i
      if ($(i + 1) ~ /^failed;?$/) f += $i
      if ($(i + 1) ~ /^ignored;?$/) g += $i
    }
    b++
  }
  END { printf "%d %d %d %d\n", p, f, g, b }' "$log")
echo
echo "test suite: $passed passed, $failed failed, $ignored ignored, in $binaries test binaries ($((SECONDS - started)) s)"
if [ "$status" -ne 0 ]; then
  echo "failing tests:"
  grep -E '^test .* \.\.\. FAILED$' "$log" | sed 's/^/  /' || true
  # cargo's own list of the binaries that failed (or did not build), to rerun one by one.
  sed -n '/^error: [0-9]* targets\{0,1\} failed:/,$p' "$log" | sed 's/^/  /' || true
  echo "test suite: FAILED (cargo test exited with $status)"
  exit "$status"
fi
echo "test suite: passed"
