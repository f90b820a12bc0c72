#!/usr/bin/env bash
# The test command: formatting, lints, every unit and end-to-end test, and with
# DIFFOTA_VM_TEST=1 (as in CI) the virtual machine tests (tests/vm/run.sh grub and uboot, about 15 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
if [ "${DIFFOTA_VM_TEST:-0}" = 1 ]; then
  tests/vm/run.sh grub
  tests/vm/run.sh uboot
fi
