#!/usr/bin/env bash
# The supply-chain check: cargo-deny with the policy in deny.toml (advisories, licences,
# banned and duplicate crates, sources), offline, against the RustSec snapshot in
# $DIFFOTA_ADVISORY_DB (default ../shared/advisory-db.tar.zst). Without cargo-deny or the
# snapshot it skips loudly, or fails when DIFFOTA_REQUIRE_TOOLS=1 (as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot=${DIFFOTA_ADVISORY_DB:-../shared/advisory-db.tar.zst}

skip() {
  if [ "${DIFFOTA_REQUIRE_TOOLS:-0}" = 1 ]; then
    echo "supply-chain check: $1 (DIFFOTA_REQUIRE_TOOLS=1)" >&2
    exit 1
  fi
  echo "******** SKIPPED: supply-chain check: $1 ********" >&2
  exit 0
}
command -v cargo-deny >/dev/null || skip "cargo-deny is not installed (cargo install cargo-deny --locked)"
[ -f "$snapshot" ] || skip "no advisory database snapshot at $snapshot (set DIFFOTA_ADVISORY_DB)"

# cargo-deny looks for the database of db-urls in deny.toml under db-path, in a directory
# named after the URL; unpack the snapshot there whenever it changed.
db_dir=target/advisory-dbs/advisory-db-3157b0e258782691
stamp=target/advisory-dbs/snapshot.sha256
sum=$(sha256sum "$snapshot" | cut -d' ' -f1)
if [ ! -d "$db_dir/.git" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  rm -rf target/advisory-dbs
  mkdir -p target/advisory-dbs/unpack
  tar -I zstd -xf "$snapshot" -C target/advisory-dbs/unpack
  mv target/advisory-dbs/unpack/advisory-db "$db_dir"
  rmdir target/advisory-dbs/unpack
  echo "$sum" > "$stamp"
fi
echo "advisory database: $(git -C "$db_dir" log -1 --format='%h of %cs')" >&2
# cargo-deny reads the metadata of every crate in Cargo.lock (those of other targets too).
cargo fetch --locked --quiet
cargo deny --offline --locked check
