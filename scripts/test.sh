#!/usr/bin/env bash
# The test command: which tests will skip here and why (scripts/preflight.sh), formatting,
# lints, every unit and end-to-end test (the fuzz corpus replay among them), the supply-chain
# check (scripts/supply-chain.sh, cargo-deny offline), and with
# DIFFOTA_YOCTO_TEST=1 (as in CI) the layer under real bitbake (tests/yocto/run.sh, about 25 minutes)
# and with DIFFOTA_VM_TEST=1 (as in CI) the virtual machine tests (tests/vm/run.sh grub, uboot
# and systemd, about 20 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/preflight.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
scripts/supply-chain.sh
if [ "${DIFFOTA_YOCTO_TEST:-0}" = 1 ]; then
  tests/yocto/run.sh
else
  echo "******** SKIPPED: meta-diffota under real bitbake (set DIFFOTA_YOCTO_TEST=1 to run tests/yocto/run.sh) ********" >&2
fi
if [ "${DIFFOTA_VM_TEST:-0}" = 1 ]; then
  tests/vm/run.sh grub
  tests/vm/run.sh uboot
  tests/vm/run.sh systemd
fi
