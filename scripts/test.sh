#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, then every test (unit, real namespaces,
# real nats-server clusters). Run as root on a fresh Debian machine with Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
