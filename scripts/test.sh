#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, then every test (unit, real namespaces,
# real nats-server clusters). Run as root on a fresh Debian machine with Rust. Every test binary
# runs even when an earlier one fails; the totals and the failing tests come at the end.
#
# Test binaries run FAULTLINE_TEST_JOBS at a time (default 1), the longest first: by the times
# the last run here recorded in target/test-times.tsv, or on a fresh clone by
# scripts/test-times.tsv (seconds per binary of a full run; rewrite it from
# target/test-times.tsv when the suite changes shape). Every test uses its own lab name and
# state root, so binaries never share a lab. More than one at a time roughly halves the time
# but is not the default yet: at 3 at a time on 2 busy cores, six load-sensitive lab tests
# failed (a steady-state latency bar, failover and reconnect counts).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

jobs="${FAULTLINE_TEST_JOBS:-1}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# Build every test binary once, and list them: `<package dir>\t<name>\t<executable>`.
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics \
  >"$work/build.json"
python3 - "$work/build.json" >"$work/binaries.tsv" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    if not message.get("profile", {}).get("test"):
        continue
    package_dir = os.path.dirname(message["manifest_path"])
    kind = message["target"]["kind"][0]
    name = message["target"]["name"] + ("" if kind == "test" else f" ({kind})")
    print(f"{package_dir}\t{name}\t{message['executable']}")
PY

# Longest first; a binary with no recorded time (a new one) counts as 30 s, a typical lab test.
times_file=target/test-times.tsv
known_times="$times_file"
[ -s "$known_times" ] || known_times=scripts/test-times.tsv
python3 - "$work/binaries.tsv" "$known_times" >"$work/order.tsv" <<'PY'
import sys
binaries = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
seconds = {}
try:
    for line in open(sys.argv[2]):
        name, taken = line.rstrip("\n").split("\t")
        seconds[name] = float(taken)
except (OSError, ValueError):
    pass
binaries.sort(key=lambda b: -seconds.get(b[1], 30.0))
for binary in binaries:
    print("\t".join(binary))
PY

# One binary: run it from its package's directory, as cargo does, keep its output whole, and
# print it in one piece (under a lock) when it ends, with its time and exit code.
run_one() {
  local package_dir="$1" name="$2" executable="$3" work="$4"
  local slug begun status=0
  slug="$(basename "$executable")"
  begun=$SECONDS
  (cd "$package_dir" && CARGO_MANIFEST_DIR="$package_dir" "$executable") \
    >"$work/$slug.log" 2>&1 || status=$?
  printf '%s\t%s\t%s\n' "$name" "$((SECONDS - begun))" "$status" >>"$work/results.tsv"
  {
    flock 9
    echo "     Running $name ($executable)"
    cat "$work/$slug.log"
    echo "     $name: exit $status after $((SECONDS - begun)) s"
  } 9>"$work/print.lock"
}
export -f run_one

status=0
tr '\t\n' '\0\0' <"$work/order.tsv" | xargs -0 -n 3 -P "$jobs" bash -c 'run_one "$1" "$2" "$3" "$0"' "$work" \
  | tee "$work/tests.log" || status=$?
cargo test --workspace --locked --doc 2>&1 | tee -a "$work/tests.log" || status=$?

# Record this run's times for the next run's order.
cut -f1,2 "$work/results.tsv" >"$times_file"

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
  END { printf "%d %d %d %d\n", p, f, g, b }' "$work/tests.log")
echo
echo "slowest test binaries:"
sort -t$'\t' -k2,2nr "$work/results.tsv" | head -8 | awk -F'\t' '{printf "  %5d s  %s\n", $2, $1}'
echo "test suite: $passed passed, $failed failed, $ignored ignored, in $binaries test binaries, $jobs at a time ($((SECONDS - started)) s)"
failing_binaries="$(awk -F'\t' '$3 != 0 {print "  " $1 " (exit " $3 ")"}' "$work/results.tsv")"
if [ "$status" -ne 0 ] || [ -n "$failing_binaries" ]; then
  echo "failing tests:"
  grep -E '^test .* \.\.\. FAILED$' "$work/tests.log" | sed 's/^/  /' || true
  echo "failing test binaries (rerun one with cargo test -p PACKAGE --test NAME):"
  echo "${failing_binaries:-  (none; the doc tests failed)}"
  echo "test suite: FAILED"
  exit 1
fi
echo "test suite: passed"
