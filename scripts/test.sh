#!/usr/bin/env bash
# The test command: formatting, lints, then every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
