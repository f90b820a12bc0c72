#!/usr/bin/env bash
# The end-to-end demo: builds two releases of a sample root filesystem image, publishes
# them with `chunk-server make`, serves the store over HTTPS on 127.0.0.1 with a throwaway
# CA, and updates a file-backed A/B device from factory state to 1.0 and then to 2.0,
# printing what was downloaded against the image size.
#
# Usage: demo/run.sh [IMAGE_MIB]   (default 64; work files go to ./demo-work)
set -euo pipefail

cd "$(dirname "$0")/.."
size_mib=${1:-64}
work=$PWD/demo-work
rm -rf "$work"
mkdir -p "$work"/{store,device/state,tls}

echo "==> building (release profile)"
cargo build --release --quiet -p chunk-server -p diffota -p diffota-tests --bins
bin=$PWD/target/release
cs=$bin/chunk-server

echo "==> two releases of a ${size_mib} MiB sample image"
"$bin/sample-image" "$work/rootfs-1.0.img" "$size_mib" 42 1
"$bin/sample-image" "$work/rootfs-2.0.img" "$size_mib" 42 2

echo "==> signing key and store"
"$cs" keygen --unencrypted --secret-key "$work/release.key" --public-key "$work/release.pub"
export SOURCE_DATE_EPOCH=1790000000
"$cs" make --store "$work/store" --version 1.0 --compatible demo-board --key "$work/release.key" "$work/rootfs-1.0.img"
"$cs" make --store "$work/store" --version 2.0 --compatible demo-board --key "$work/release.key" "$work/rootfs-2.0.img"
"$cs" verify --public-key "$work/release.pub" "$work/store"
"$cs" diff "$work/store/releases/1.0/rootfs.didx" "$work/store/releases/2.0/rootfs.didx"

scheme_args=()
ca_line=""
if command -v openssl >/dev/null; then
  echo "==> throwaway CA and server certificate for 127.0.0.1"
  (
    cd "$work/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 -subj "/CN=diffota demo CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile server.ext 2>/dev/null
  )
  scheme_args=(--tls-cert "$work/tls/server.pem" --tls-key "$work/tls/server.key")
  ca_line="ca_file = \"$work/tls/ca.pem\""
else
  echo "==> openssl not found: serving plain HTTP"
fi

"$cs" serve "$work/store" --listen 127.0.0.1:0 --access-log "$work/access.log" "${scheme_args[@]}" > "$work/serve.out" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")
echo "==> store served at $url"

echo "==> a factory-fresh device: empty slots, running slot a"
dev=$work/device
truncate -s $(( size_mib * 1024 * 1024 + 8 * 1024 * 1024 )) "$dev/slot-a.img" "$dev/slot-b.img"
echo "diffota.slot=a" > "$dev/cmdline"
cat > "$dev/diffota.toml" <<TOML
server_url = "$url"
channel = "stable"
compatible = "demo-board"
public_keys = ["$work/release.pub"]
state_dir = "$dev/state"
device_id = { value = "demo-device-0001" }

[slots]
a = "$dev/slot-a.img"
b = "$dev/slot-b.img"

[boot]
cmdline = "$dev/cmdline"

[http]
$ca_line
TOML

image_bytes=$(stat -c %s "$work/rootfs-1.0.img")
"$cs" channel set --store "$work/store" stable --release 1.0 --key "$work/release.key" > /dev/null
echo "==> diffota check, then install 1.0 (from nothing)"
"$bin/diffota" --config "$dev/diffota.toml" check
"$bin/diffota" --config "$dev/diffota.toml" install
cmp -n "$image_bytes" "$dev/slot-b.img" "$work/rootfs-1.0.img"
echo "slot b == rootfs-1.0.img"

echo "==> reboot into slot b; publish 2.0; install it into slot a"
echo "diffota.slot=b" > "$dev/cmdline"
"$cs" channel set --store "$work/store" stable --release 2.0 --key "$work/release.key" > /dev/null
: > "$work/access.log"
"$bin/diffota" --config "$dev/diffota.toml" install
cmp -n "$image_bytes" "$dev/slot-a.img" "$work/rootfs-2.0.img"
echo "slot a == rootfs-2.0.img"
"$bin/diffota" --config "$dev/diffota.toml" status

requests=$(wc -l < "$work/access.log")
bytes=$(awk '{s += $5} END {print s}' "$work/access.log")
zstd_full=$(zstd -19 -T0 -q -c "$work/rootfs-2.0.img" 2>/dev/null | wc -c || echo "?")
echo
echo "==> 1.0 -> 2.0: downloaded $bytes bytes in $requests requests for a $image_bytes byte image"
echo "    ($(( bytes * 1000 / image_bytes ))‰ of the image; the whole image with zstd -19 is $zstd_full bytes)"
