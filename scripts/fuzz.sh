#!/usr/bin/env bash
# Fuzzes each target (fuzz/fuzz_targets/) for a given time with cargo-fuzz on the stable
# toolchain (-s none: coverage-guided, without a sanitizer, which needs nightly).
#
# The committed corpus (fuzz/corpus/<target>/) is the seeds made from real files plus every
# minimised find; `cargo test` replays it. Fuzzing grows a working corpus in fuzz/work/
# (not committed) from those seeds. A crash, hang (5 s) or memory blow-up (1 GiB) stops the
# script: the input is minimised into fuzz/artifacts/<target>/; fix the bug, then commit the
# minimised input as fuzz/corpus/<target>/find-<what>.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s, every target)
# Needs: cargo install cargo-fuzz; a C++ compiler (libFuzzer is built from source).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
# Built once, from the tree as it is now; the runs below use these binaries.
cargo fuzz build -s none --release
bin=target/x86_64-unknown-linux-gnu/release
summary=()
for target in "${targets[@]}"; do
  work="work/$target"
  mkdir -p "$work" "artifacts/$target"
  log=$(mktemp)
  echo "==> $target: ${seconds}s" >&2
  if ! "$bin/$target" -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" \
      -max_len=1048576 -timeout=5 -rss_limit_mb=1024 -print_final_stats=1 \
      "$work" "corpus/$target" 2>"$log"; then
    tail -n 30 "$log" >&2
    crash=$(find "artifacts/$target" -type f -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
    "$bin/$target" -minimize_crash=1 -max_total_time=60 -exact_artifact_path="$crash.min" "$crash" >/dev/null 2>&1 || true
    echo "FOUND: $target fails on $crash (minimised: $crash.min)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  rm -f "$log"
  summary+=("$target: ${seconds} s, $runs inputs, coverage $coverage edges, working corpus $(find "$work" -type f | wc -l) files, no crash")
done
printf '%s\n' "${summary[@]}"
