#!/bin/sh
# The factory image's data partition: the signed index of the release written to slot A (or,
# for a release of several images, its signed manifest and every index it pins), and
# provision.env naming it for diffota-provision.service (first boot: `diffota provision`).
# Usage: diffota-factory-data.sh STORE VERSION NAME OUT_DIR
#   OUT_DIR becomes the root of the data partition (mounted at /data on the device):
#   OUT_DIR/diffota-factory/releases/VERSION/NAME.didx (+ .minisig) and provision.env.
# Used by the image_types_diffota class before wic and, the same way, by tests/vm/run.sh.
set -eu
store=$1
version=$2
name=$3
out=$4
fail() {
    echo "diffota-factory-data.sh: $*" >&2
    exit 1
}
[ -n "$version" ] || fail "no release version given (was the diffota image type built in this run?)"
index=$store/releases/$version/$name.didx
for file in "$index" "$index.minisig"; do
    [ -f "$file" ] || fail "$file does not exist: the release $version is not in the store $store"
done
rm -rf "$out"
release_dir=$out/diffota-factory/releases/$version
mkdir -p "$release_dir"
manifest=$store/releases/$version/release.json
if [ -f "$manifest" ]; then
    # A release of several images: its signed manifest and every index it pins (provision
    # checks each image of the factory group).
    [ -f "$manifest.minisig" ] || fail "$manifest.minisig does not exist: the release $version is not signed"
    cp "$store/releases/$version/"*.didx "$store/releases/$version/"*.didx.minisig "$manifest" "$manifest.minisig" "$release_dir/"
    chmod 0644 "$release_dir"/*
    echo "DIFFOTA_FACTORY_INDEX=/data/diffota-factory/releases/$version/release.json" > "$out/diffota-factory/provision.env"
    exit 0
fi
cp "$index" "$index.minisig" "$release_dir/"
chmod 0644 "$release_dir/$name.didx" "$release_dir/$name.didx.minisig"
echo "DIFFOTA_FACTORY_INDEX=/data/diffota-factory/releases/$version/$name.didx" > "$out/diffota-factory/provision.env"
