#!/usr/bin/env bash
# The soak: a lab under the tenant load for FAULTLINE_SOAK_MINUTES (default 60), with a fault
# every 2 minutes rotating through the catalog's kinds (zone partition, pause, kill, stop,
# drain, quorum loss). Every 10 s it records the RSS of the lab agent and of the load process;
# after each fault's deadline it counts what was left behind: fault records still listed, and
# whatever a reconcile still had to revert (expired faults, orphaned rules, pauses, cordons,
# holds). Not part of CI. Prints the RSS over time and the leftovers per fault; exits 1 if any
# fault left something behind.
#
#   bash scripts/soak.sh                        # 1 h
#   FAULTLINE_SOAK_MINUTES=10 bash scripts/soak.sh
#
# Needs root and what scripts/setup.sh installs; uses target/debug binaries (built if missing)
# and its own state root and lab, removed at the end whatever happens.
set -euo pipefail

minutes=${FAULTLINE_SOAK_MINUTES:-60}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${FAULTLINE_SOAK_BIN_DIR:-$repo/target/debug}
[ -x "$bin/chaosctl" ] && [ -x "$bin/faultlined" ] && [ -x "$bin/tenant-gateway" ] || (cd "$repo" && cargo build --bins)

export FAULTLINE_STATE_ROOT
FAULTLINE_STATE_ROOT=$(mktemp -d /tmp/faultline-soak.XXXXXX)
export FAULTLINE_LAB="soak$$"
export FAULTLINE_AGENT="$bin/faultlined"
out=${FAULTLINE_SOAK_OUT:-$FAULTLINE_STATE_ROOT-results}
mkdir -p "$out"
chaosctl() { "$bin/chaosctl" "$@"; }

load_pid=""
sampler_pid=""
teardown() {
    [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    chaosctl lab down >/dev/null 2>&1 || true
    rm -rf "$FAULTLINE_STATE_ROOT"
}
trap teardown EXIT
trap 'exit 130' INT TERM

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

chaosctl lab up >/dev/null
nats_version=$(chaosctl lab status --output json | grep -o '"version": *"[^"]*"' | head -1 || true)
agent_pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$FAULTLINE_STATE_ROOT/labs/$FAULTLINE_LAB/agent.pid")
echo "soak: lab $FAULTLINE_LAB, $minutes min, agent pid $agent_pid, nats $nats_version; results in $out"

# The load runs a little past the last fault so that every fault is judged under load. Right
# after `lab up` JetStream may still be electing its meta leader, and provisioning fails: retried.
for attempt in 1 2 3; do
    # The binary itself, not the shell function, so that $! is the load process.
    "$bin/chaosctl" load --duration "$((minutes * 60 + 30))s" --tenants 20 --rate 50 \
        --history "$out/history.jsonl" --observations "$out/observations.jsonl" \
        --no-replica-read-back --quiet >"$out/load.log" 2>&1 &
    load_pid=$!
    sleep 15
    kill -0 "$load_pid" 2>/dev/null && break
    echo "soak: the load ended at once (attempt $attempt): $(tail -1 "$out/load.log")"
    [ "$attempt" -eq 3 ] && exit 1
done

echo "seconds,agent_rss_kib,load_rss_kib" >"$out/rss.csv"
(
    start=$(date +%s)
    while kill -0 "$load_pid" 2>/dev/null; do
        echo "$(($(date +%s) - start)),$(rss_kib "$agent_pid"),$(rss_kib "$load_pid")" >>"$out/rss.csv"
        sleep 10
    done
) &
sampler_pid=$!

faults=(
    "partition --zone a --for 30s"
    "pause --service nats --replica 1 --for 20s"
    "kill --service nats --replica 2"
    "stop --service gateway --replica 1 --for 20s"
    "drain --node b2 --for 30s"
    "quorum-loss --for 20s"
    "partition --zone c --for 30s"
)
echo "fault,kind_and_target,records_left,reverted_by_reconcile" >"$out/leftovers.csv"
left_total=0
rounds=$((minutes / 2))
for ((i = 0; i < rounds; i++)); do
    round_start=$(date +%s)
    fault=${faults[$((i % ${#faults[@]}))]}
    # shellcheck disable=SC2086 # the fault's words are separate arguments
    chaosctl inject $fault >>"$out/inject.log" 2>&1 || echo "round $i: inject $fault refused (see inject.log)"
    # Past the longest deadline (30 s), the agent's reconcile (1 s) and a margin.
    sleep 45
    records=$(chaosctl faults --output json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
    reverted=$(chaosctl reconcile --output json | python3 -c 'import json, sys
print(sum(len(v) for lab in json.load(sys.stdin) for v in lab["report"].values() if isinstance(v, list)))')
    echo "$i,$fault,$records,$reverted" >>"$out/leftovers.csv"
    left_total=$((left_total + records + reverted))
    sleep $((120 - ($(date +%s) - round_start))) 2>/dev/null || true
done
wait "$load_pid" || true
load_pid=""

echo
echo "RSS (KiB) every 10 min:"
awk -F, 'NR == 2 || (NR > 2 && $1 % 600 < 10) { printf "  %5d s  agent %7d  load %7d\n", $1, $2, $3 }' "$out/rss.csv"
awk -F, 'NR == 2 { a0 = $2; l0 = $3 } NR > 1 { a = $2; l = $3; if ($2 > am) am = $2; if ($3 > lm) lm = $3 }
    END { printf "agent: first %d, last %d KiB (%.2fx, max %d); load: first %d, last %d KiB (%.2fx, max %d)\n",
          a0, a, a / a0, am, l0, l, l / l0, lm }' "$out/rss.csv"
echo "faults: $rounds, left behind after their deadlines: $left_total (per fault: $out/leftovers.csv)"
tail -3 "$out/load.log"
[ "$left_total" -eq 0 ]
