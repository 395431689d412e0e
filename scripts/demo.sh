#!/usr/bin/env bash
# The main job on the embedded lab: build, bring the lab up (3 zones x 2 nodes, a 3-node NATS
# JetStream cluster), cut zone a off for 10 s, watch Faultline revert it, and tear the lab down.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release --locked --bins
export PATH="$PWD/target/release:$PATH"
export FAULTLINE_LAB=demo

cleanup() { chaosctl lab down >/dev/null 2>&1 || true; }
trap cleanup EXIT

chaosctl lab up
echo
echo "== cutting zone a off for 10 s"
chaosctl inject partition --zone a --for 10s
chaosctl faults
echo
echo "== waiting for the deadline; the lab agent reverts it"
sleep 12
chaosctl faults
echo
chaosctl lab down
trap - EXIT
