#!/usr/bin/env bash
# The demo: the whole A/B story on one file-backed device, in a few seconds after the build.
# A build host publishes three signed releases of a sample root filesystem image to a store
# served over HTTPS on 127.0.0.1. A device flashed with 1.0 updates to 2.0, reboots into it
# on trial and commits it; then 3.0, which never gets healthy, is tried boot_attempts times,
# the bootloader falls back to 2.0 by itself, and 3.0 is refused from then on.
#
# The device's bootloader is simulated: `boot-sim` runs the logic of the shipped GRUB
# fragment (meta-diffota/recipes-bsp/grub/files/diffota.cfg) on a real grubenv file and
# "starts the kernel" by writing the kernel command line. Everything else is what a device
# runs: the diffota binary, its config, the commands its systemd units run.
#
# Usage: demo/run.sh [IMAGE_MIB]   (default 64; work files and logs go to ./demo-work, or to
# $DIFFOTA_DEMO_WORK; $DIFFOTA_DEMO_PROFILE picks the cargo profile, default release)
set -euo pipefail

cd "$(dirname "$0")/.."
size_mib=${1:-64}
work=${DIFFOTA_DEMO_WORK:-$PWD/demo-work}
profile=${DIFFOTA_DEMO_PROFILE:-release}
rm -rf "$work"
mkdir -p "$work"/{store,device/state,tls}
log=$work/build.log

say() { printf '\n%s\n' "$*"; }
indent() { sed 's/^/    /'; }

echo "diffota demo: one A/B device, three releases, a signed store served over HTTPS on 127.0.0.1"
echo "(work files and the build host's output in $work)"

say "[build host] building diffota ($profile profile; the first build takes minutes, cargo shows its progress below)"
cargo build --profile "$profile" -p chunk-server -p diffota -p diffota-tests --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
case $profile in dev) bin=$target_dir/debug ;; *) bin=$target_dir/$profile ;; esac
cs=$bin/chunk-server

export SOURCE_DATE_EPOCH=1790000000
"$cs" keygen --unencrypted --secret-key "$work/release.key" --public-key "$work/release.pub" >> "$log"
for version in 1.0 2.0 3.0; do
  "$bin/sample-image" "$work/rootfs-$version.img" "$size_mib" 42 "${version%.0}"
  # Delta frames against the newest older release, by default.
  "$cs" make --store "$work/store" --version "$version" --compatible demo-board \
    --key "$work/release.key" "$work/rootfs-$version.img" >> "$log"
done
"$cs" verify --public-key "$work/release.pub" "$work/store" >> "$log"
echo "[build host] published releases 1.0, 2.0 and 3.0 of a ${size_mib} MiB image ($(du -sh "$work/store" | cut -f1) of static files, verified)"

scheme_args=()
ca_line=""
if command -v openssl >/dev/null; then
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
  echo "[build host] openssl not found: serving plain HTTP"
fi
"$cs" serve "$work/store" --listen 127.0.0.1:0 --access-log "$work/access.log" "${scheme_args[@]}" > "$work/serve.out" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")

# The device: two slot files, a GRUB environment block, the kernel command line and boot id
# the simulated bootloader writes, and a reboot command that runs the simulated bootloader.
dev=$work/device
truncate -s $(( size_mib * 1024 * 1024 + 8 * 1024 * 1024 )) "$dev/slot-a.img" "$dev/slot-b.img"
cat > "$dev/reboot" <<SH
#!/bin/sh
echo "-- reboot --"
"$bin/boot-sim" boot "$dev/grubenv" "$dev/cmdline" "$dev/boot_id" | sed 's/^/GRUB: /'
SH
chmod +x "$dev/reboot"
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
backend = "grub"
grubenv = "$dev/grubenv"
cmdline = "$dev/cmdline"
boot_id_file = "$dev/boot_id"
boot_attempts = 3
reboot_command = ["$dev/reboot"]

[http]
$ca_line
TOML

# Runs one device command as its systemd unit would, shows it and what it printed; an exit
# status other than 0 is shown too (3: nothing to do, 4: refused).
device() {
  echo "\$ diffota $*"
  local status=0
  "$bin/diffota" --config "$dev/diffota.toml" "$@" > "$work/out" 2>&1 || status=$?
  # The structured events are for the journal; the demo shows what a person reads.
  grep -v ' event=' "$work/out" | indent
  [ "$status" = 0 ] || echo "    (exit status $status)"
  return 0
}
bootloader_view() {
  echo "\$ diffota status | grep bootloader"
  "$bin/diffota" --config "$dev/diffota.toml" status | grep '^bootloader' | indent
}
publish() {
  "$cs" channel set --store "$work/store" stable --release "$1" --key "$work/release.key" > /dev/null
}
downloaded() {
  awk '{s += $5; n++} END {printf "%d bytes in %d requests", s, n}' "$work/access.log"
}

image_bytes=$(stat -c %s "$work/rootfs-1.0.img")
say "[device] flashed at the factory with 1.0 in slot a; powered on"
cp "$work/rootfs-1.0.img" "$dev/slot-a.img.tmp"
truncate -s "$(stat -c %s "$dev/slot-a.img")" "$dev/slot-a.img.tmp"
mv "$dev/slot-a.img.tmp" "$dev/slot-a.img"
"$bin/boot-sim" factory "$dev/grubenv"
"$dev/reboot" | tail -n +2 | indent

say "[build host] channel stable -> 2.0. On the device, diffota-update.timer starts"
echo "diffota-update.service (with DIFFOTA_INSTALL_ARGS=--reboot in /etc/default/diffota):"
publish 2.0
: > "$work/access.log"
device install --reboot
cmp -n "$image_bytes" "$dev/slot-b.img" "$work/rootfs-2.0.img"
echo "    (slot b == rootfs-2.0.img; 1.0 -> 2.0 downloaded $(downloaded) for a $image_bytes byte image)"

say "[device] slot b runs 2.0 on trial. Its health checks pass, boot-complete.target is reached,"
echo "and diffota-mark-good.service runs:"
bootloader_view
device mark-good
bootloader_view

say "[build host] channel stable -> 3.0, a release whose application crashes on start."
publish 3.0
: > "$work/access.log"
device install --reboot
echo "    (2.0 -> 3.0 downloaded $(downloaded))"

say "[device] slot a runs 3.0 on trial. Its health check fails: boot-complete.target is not"
echo "reached, mark-good does not run, and OnFailure= starts diffota-health-failed.service:"
for _ in 1 2 3 4; do
  bootloader_view
  device health-failed --reboot
  grep -q 'diffota.slot=a' "$dev/cmdline" || break
  say "[device] slot a runs 3.0 on trial again, and its health check fails again:"
done

say "[device] back on slot b (2.0) without anyone touching it. It is healthy, so mark-good runs:"
device mark-good
cmp -n "$image_bytes" "$dev/slot-b.img" "$work/rootfs-2.0.img"

say "[device] the next timer run: 3.0 is still on the channel, and refused."
device install
say "[device] where it stands:"
device status
