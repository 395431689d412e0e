#!/usr/bin/env bash
# The main job on the embedded lab: build, bring the lab up (3 zones x 2 nodes, a 3-node NATS
# JetStream cluster, a tenant gateway per zone), run the az-failure scenario (T6.3) under a
# multi-tenant load with a short fault, say what to look at first, and tear the lab down.
#
# Environment:
#   FAULTLINE_LAB            the lab's name (default: demo). A lab of that name that is already
#                            up is used and left up; one the demo brings up is always torn down,
#                            on every exit path (a failure, Ctrl-C, a closed terminal).
#   FAULTLINE_STATE_ROOT     where labs and runs live (default: /var/lib/faultline).
#   FAULTLINE_DEMO_BIN_DIR   a directory holding chaosctl and faultlined already built: skips the
#                            release build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

if [ -n "${FAULTLINE_DEMO_BIN_DIR:-}" ]; then
  bin_dir="$FAULTLINE_DEMO_BIN_DIR"
else
  cargo build --release --locked --bins
  bin_dir="$PWD/target/release"
fi
export PATH="$bin_dir:$PATH"
export FAULTLINE_AGENT="${FAULTLINE_AGENT:-$bin_dir/faultlined}"
lab="${FAULTLINE_LAB:-demo}"
export FAULTLINE_LAB="$lab"

brought_up=no
tear_down() {
  if [ "$brought_up" = yes ]; then
    brought_up=no
    echo "demo: tearing lab $lab down"
    chaosctl lab down --lab "$lab" || echo "demo: lab down failed; run: chaosctl lab down --lab $lab" >&2
  fi
}
trap tear_down EXIT
# A signal ends the script through `exit`, so the EXIT trap runs after the command in flight.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if chaosctl lab status --lab "$lab" >/dev/null 2>&1; then
  echo "demo: lab $lab is already up: using it, and leaving it up"
else
  echo "demo: bringing lab $lab up (set FAULTLINE_LAB to choose another name)"
  brought_up=yes
  chaosctl lab up --lab "$lab"
fi
echo

# Exit code 1 means the judge found an SLO or consistency failure: that is a result, not a
# crash of the demo, so it is reported and the script goes on to clean up. `chaosctl run` prints
# its phases and their durations first.
output="$(mktemp)"
status=0
chaosctl run az-failure --lab "$lab" --duration 10s --tenants 20 --rate 100 | tee "$output" || status=$?
report="$(sed -n 's/^report: *//p' "$output" | tail -n 1)"
rm -f "$output"
echo
case "$status" in
  0) verdict="PASSED: every check held; the zone failed over and recovered within its SLO, and no acknowledged write was lost." ;;
  1) verdict="FAILED: at least one check failed; the report's verdict table says which, with the evidence below it." ;;
  *) verdict="NOT JUDGED (exit $status): the run stopped or could not be checked; its messages above say why." ;;
esac
echo "$verdict"
if [ -n "$report" ]; then
  echo "Look first at the report: $report"
  echo "(open it in a browser; the verdict table is at the top, the fault windows are shaded in the plots)"
fi
# A run that was interrupted or could not be judged ends the demo with its code: bash does not
# run the INT trap when the run caught the Ctrl-C itself (it heals and exits 2).
if [ "$status" -gt 1 ]; then
  exit "$status"
fi
