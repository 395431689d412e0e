#!/usr/bin/env bash
# Memory of `faultlined serve` with the background tenant load over time (BENCHMARKS.md).
# Usage: scripts/bench-background.sh [MINUTES] [TENANTS] [RATE]. Needs root and a built
# target/debug or target/release (BIN=target/release). Brings up its own lab `bgbench` under a
# temporary state root and removes it afterwards. Prints the daemon's RSS once a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-60}
tenants=${2:-50}
rate=${3:-50}
bin=${BIN:-target/debug}
root=$(mktemp -d /tmp/faultline-bgbench-XXXXXX)
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
export FAULTLINE_STATE_ROOT=$root FAULTLINE_AGENT=$bin/faultlined
head -c 24 /dev/urandom | base64 > "$root/token" && chmod 600 "$root/token"
cat > "$root/schedule.yaml" <<YAML
suites:
  - {name: idle, cron: "0 0 1 1 *", enabled: false, scenarios: [{scenario: pod-failure}]}
background: {enabled: true, tenants: $tenants, rate: $rate, rotate_every: 10m, keep_for: 1d}
YAML
"$bin/faultlined" serve --lab bgbench --schedule "$root/schedule.yaml" --token-file "$root/token" \
  --listen 127.0.0.1:0 --open-reads 2> "$root/serve.log" &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  "$bin/chaosctl" lab down --name bgbench >/dev/null 2>&1 || true
  rm -rf "$root"
}
trap cleanup EXIT
until [ -f "$root/serve.json" ]; do
  kill -0 "$pid" 2>/dev/null || { cat "$root/serve.log" >&2; exit 1; }
  sleep 1
done
listen=$(sed -n 's/.*"listen": "\(.*\)".*/\1/p' "$root/serve.json")
echo "minute rss_mib background_ok background_fail background_info archives"
for m in $(seq 0 "$minutes"); do
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  metrics=$(curl -s "http://$listen/metrics")
  ops=""
  for outcome in ok fail info; do
    ops+="$(echo "$metrics" | awk -v o="outcome=\"$outcome\"}" 'index($0, o) && /^faultline_background_ops_total/ {print $NF}') "
  done
  archives=$(ls "$root/background" 2>/dev/null | grep -c 'history-.*\.gz$' || true)
  echo "$m $rss $ops$archives"
  [ "$m" -lt "$minutes" ] && sleep 60
done
