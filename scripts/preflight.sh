#!/usr/bin/env bash
# Says, before the tests run, which tests will skip on this machine and why: a test whose
# Debian tool is missing prints its skip on stderr, which cargo hides for a passing test, so
# a developer would otherwise see "ok" for a test that ran nothing. With
# DIFFOTA_REQUIRE_TOOLS=1 (CI) those tests fail instead, and this says so.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# tool | Debian package | the tests that need it
checks=(
  "minisign|minisign|publish::keys::minisign_interop_both_ways"
  "openssl|openssl|install::fetch::https_with_a_test_ca"
  "zstd|zstd|bundle::delta_bundle_installs_and_reports_its_size"
  "xdelta3|xdelta3|bundle::delta_bundle_installs_and_reports_its_size"
  "fw_printenv|libubootenv-tool|boot: U-Boot environment cross-checks"
  "fw_setenv|libubootenv-tool|boot: U-Boot environment cross-checks"
  "grub-editenv|grub-common|boot: grubenv cross-checks"
  "dbus-daemon|dbus-daemon|dbus: (every test)"
  "busctl|systemd|dbus: (every test)"
  "gdbus|libglib2.0-bin|dbus: (every test)"
  "systemd-analyze|systemd|layer::systemd_units_pass_systemd_analyze"
  "shellcheck|shellcheck|layer::shell_scripts_pass_shellcheck"
  "mkfs.ext4|e2fsprogs|layer::image_cmd_makes_a_verifiable_store_from_an_ext4_image"
)
missing=0
for check in "${checks[@]}"; do
  IFS='|' read -r tool package tests <<<"$check"
  if ! command -v "$tool" >/dev/null 2>&1; then
    missing=$((missing + 1))
    echo "******** WILL SKIP: $tests: $tool not found (apt-get install $package) ********" >&2
  fi
done
if [ "$(id -u)" != 0 ]; then
  missing=$((missing + 1))
  echo "******** WILL SKIP: dbus, the parts run as another user (the policy refusal, who receives signals): not root ********" >&2
fi
advisory_db=${DIFFOTA_ADVISORY_DB:-../shared/advisory-db.tar.zst}
if [ ! -f "$advisory_db" ]; then
  missing=$((missing + 1))
  echo "******** WILL SKIP: scripts/supply-chain.sh advisories: $advisory_db not found (DIFFOTA_ADVISORY_DB) ********" >&2
fi
if [ "$missing" -gt 0 ]; then
  if [ "${DIFFOTA_REQUIRE_TOOLS:-0}" = 1 ]; then
    echo "******** DIFFOTA_REQUIRE_TOOLS=1: the tests above FAIL instead of skipping (.ci/run installs the packages) ********" >&2
  else
    echo "******** $missing missing: the tests above print SKIPPED and pass without running their checks ********" >&2
  fi
else
  echo "preflight: every tool the tests use is here; nothing will skip" >&2
fi
