#!/usr/bin/env bash
# End to end in a real virtual machine. Default (grub): OVMF firmware, a standalone GRUB EFI binary
# started as Yocto's is (${prefix} = the ESP's /EFI/BOOT), and there the layer's boot files as it
# ships them: grub.cfg rendered from meta-diffota/files/boot/grub.cfg.in, diffota.cfg, grubenv; Debian's kernel, root filesystems A and B built here (busybox-static, a static
# diffota, an init that plays systemd's part), an ext4 data partition holding the state
# directory, and a second, read-only disk holding the store (a file:// source) and the
# action for the next boot. Everything comes from Debian packages and this repository;
# nothing is committed.
#
# Scenarios, asserted from serial-console markers and from grubenv read back on the host:
#   1. factory boot on A -> diffota install 2.0 -> reboot into B on trial -> mark-good
#   2. a broken release (3.0: never healthy) -> tried bootlimit times -> back on B ->
#      reverted and recorded -> the same release is refused
#   3. power cut: QEMU killed in the middle of an install (4.0) -> next boot is the old
#      slot -> the install resumes and completes
#
# With `uboot` as argument the same scenarios run under Debian's U-Boot for qemu-x86_64
# (u-boot-qemu) with the layer's diffota.cmd: that U-Boot keeps no environment of its own
# (ENV_IS_NOWHERE), so the layer's board script (boot.scr, rendered from its template) imports it from uboot.env on the FAT
# boot partition and stores it back with `env export` + `fatwrite`; diffota writes the same
# file through its U-Boot backend, and the host reads it with the real fw_printenv.
#
# With `systemd` as argument the slots hold a real Debian root filesystem booting systemd
# (debootstrap minbase from the Debian packages, cached in target/vm-cache), on the GRUB/EFI
# path, with diffota, its config and its units installed as the layer installs them (the
# units diffota_git.bb lists, enabled as it enables them, /etc/diffota.toml rendered by the
# layer's render-config.sh), and a health check made from systemd/example-health-check.service.
# A small test unit (vm-driver) reports each boot on the serial console and starts what the
# host asks for through systemd; journald forwards the journal to the serial console, and
# the assertions read diffota's journal lines there:
#   1. diffota-update.service (started through systemd) installs 2.0 and reboots through
#      reboot_command; the trial boot reaches boot-complete.target and
#      diffota-mark-good.service commits it; `systemd-analyze security` of each unit
#   2. 3.0's health check fails: diffota-health-failed.service (OnFailure=) reboots each
#      trial boot, GRUB falls back after boot_attempts boots, mark-good records the failure,
#      and the next diffota-update.service run refuses 3.0
#   3. power cut while diffota-update.service writes 4.0: the old slot boots, the next run
#      resumes
# There every release is a release of two images, rootfs and appfs (an application partition,
# mounted read-only at /app from the running slot group: vda5 with slot a, vda6 with slot b),
# and the layer's example post-commit hook migrates /data/app/settings once 2.0 is committed.
#
# Usage: tests/vm/run.sh [grub|uboot|systemd]   (root; apt-get installs what it needs; work in target/vm-test-*)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
mode=${1:-grub}
case "$mode" in
  grub|uboot) bootloader=$mode; guest=busybox ;;
  systemd) bootloader=grub; guest=systemd ;;
  *) echo "usage: $0 [grub|uboot|systemd]" >&2; exit 2 ;;
esac
work=$repo/target/vm-test-$mode
rm -rf "$work"
mkdir -p "$work"
log() { echo "vm-test: $*"; }
fail() { echo "vm-test: FAIL: $*" >&2; exit 1; }

need=(qemu-system-x86 ovmf grub-efi-amd64-bin busybox-static mtools dosfstools fdisk kmod e2fsprogs grub-common cpio u-boot-qemu u-boot-tools libubootenv-tool debootstrap systemd)
missing=()
for package in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "kernel from Debian"
kernel_package=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -n 1)
(cd "$work" && apt-get download "$kernel_package" >/dev/null 2>&1)
dpkg-deb -x "$work"/linux-image-*.deb "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
depmod -b "$work/kernel" "$kver"
vmlinuz=$(ls "$work/kernel/boot"/vmlinuz-*)

log "initramfs: busybox, block and filesystem modules, switch_root"
initrd_dir=$work/initrd
mkdir -p "$initrd_dir"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$initrd_dir/bin/busybox"
modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic ext4 fat vfat nls_cp437 nls_utf8 nls_ascii)
for module in "${modules[@]}"; do
  path=$(find "$work/kernel/lib/modules/$kver" -name "$module.ko*" | head -n 1)
  [ -n "$path" ] && cp "$path" "$initrd_dir/modules/"
done
cat > "$initrd_dir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic ext4 fat vfat nls_cp437 nls_utf8 nls_ascii; do
  [ -f /modules/$module.ko ] && insmod /modules/$module.ko 2>/dev/null
done
root=$(sed -n 's/.* root=\([^ ]*\).*/\1/p' /proc/cmdline)
for _ in $(seq 50); do [ -b "$root" ] && break; sleep 0.1; done
mount -o ro "$root" /newroot || { echo "DIFFOTA-VM: cannot mount $root"; reboot -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
chmod +x "$initrd_dir/init"
(cd "$initrd_dir" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.img"

log "static diffota and chunk-server"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$repo/target/vm-static \
  cargo build --release --quiet -p diffota --target x86_64-unknown-linux-gnu
static_diffota=$repo/target/vm-static/x86_64-unknown-linux-gnu/release/diffota
cargo build --release --quiet -p chunk-server
cs=$repo/target/release/chunk-server
"$cs" keygen --unencrypted --secret-key "$work/release.key" --public-key "$work/release.pub" >/dev/null

# make_busybox_rootfs VERSION HEALTHY: a root filesystem image for one release.
make_busybox_rootfs() {
  local version=$1 healthy=$2 tree=$work/tree-$1
  mkdir -p "$tree"/{bin,sbin,usr/bin,etc/diffota,proc,sys,dev,tmp,data,store,boot/efi}
  cp /bin/busybox "$tree/bin/busybox"
  for applet in sh mount umount sed cat echo grep sleep sync rm poweroff reboot mkdir ls; do ln -sf busybox "$tree/bin/$applet"; done
  cp "$static_diffota" "$tree/usr/bin/diffota"
  cp "$vmlinuz" "$tree/boot/vmlinuz"
  cp "$work/initrd.img" "$tree/boot/initrd.img"
  cp "$work/release.pub" "$tree/etc/diffota/release.pub"
  echo "$version" > "$tree/etc/release"
  echo "healthy=$healthy" > "$tree/etc/health"
  echo "/boot/efi/uboot.env 0x0 0x4000" > "$tree/etc/fw_env.config"
  # 4.0 carries an application payload, so its install lasts long enough to be cut.
  if [ "$version" = 4.0 ]; then mkdir -p "$tree/opt/app"; head -c $((20 * 1024 * 1024)) /dev/urandom > "$tree/opt/app/payload"; fi
  cat > "$tree/etc/diffota.toml" <<TOML
server_url = "file:///store/store"
compatible = "vm-x86_64"
public_keys = ["/etc/diffota/release.pub"]
state_dir = "/data/diffota"
device_id = { value = "vm-1" }

[slots]
a = "/dev/vda2"
b = "/dev/vda3"

[boot]
boot_attempts = 3
$boot_backend
TOML
  cat > "$tree/sbin/init" <<'INIT'
#!/bin/sh
# Plays systemd's part: mount, report, mark-good when healthy, run the host's action.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mkdir -p /store
mount -t ext4 /dev/vda4 /data
mount -t vfat /dev/vda1 /boot/efi
mount -t ext4 -o ro /dev/vdb /store
slot=$(sed -n 's/.*diffota.slot=\([ab]\).*/\1/p' /proc/cmdline)
echo "DIFFOTA-VM: booted slot=$slot release=$(cat /etc/release)"
if grep -q healthy=yes /etc/health; then
  diffota mark-good
  echo "DIFFOTA-VM: mark-good rc=$?"
else
  echo "DIFFOTA-VM: never healthy, rebooting"
  umount /data /boot/efi /store
  reboot -f
fi
action=$(cat /store/action 2>/dev/null)
case "$action" in
  install)
    echo "DIFFOTA-VM: install starting"
    diffota install
    echo "DIFFOTA-VM: install rc=$?"
    ;;
esac
diffota status
sync
umount /data /boot/efi /store
echo "DIFFOTA-VM: done, rebooting (QEMU exits: -no-reboot)"
reboot -f
INIT
  chmod +x "$tree/sbin/init"
  rm -f "$work/rootfs-$version.ext4"
  E2FSPROGS_FAKE_TIME=1790000000 mkfs.ext4 -q -F -d "$tree" -U 6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d \
    -E hash_seed=1d2c3b4a-0f9e-4d8c-8b7a-6e5d4c3b2a19 "$work/rootfs-$version.ext4" "${slot_mib}M"
}

# Slot size: the busybox guest is small; Debian with systemd is about 120 MB of files.
if [ "$guest" = systemd ]; then slot_mib=256; boot_timeout=900; else slot_mib=64; boot_timeout=300; fi

# The Debian base of the systemd guest: debootstrap once (about half a minute), cached.
base_tree=$repo/target/vm-cache/debian-systemd-dbus
if [ "$guest" = systemd ] && [ ! -f "$base_tree.done" ]; then
  log "Debian root filesystem with systemd (debootstrap, cached in $base_tree)"
  rm -rf "$base_tree"
  mkdir -p "$(dirname "$base_tree")"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,udev,dbus \
    "${DEBIAN_SUITE:-bookworm}" "$base_tree" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$work/debootstrap.log"
  rm -rf "$base_tree"/var/cache/apt/* "$base_tree"/var/lib/apt/lists/* \
    "$base_tree"/usr/share/doc/* "$base_tree"/usr/share/locale/* "$base_tree"/usr/share/man/*
  touch "$base_tree.done"
fi

# make_appfs VERSION: the application partition of a release (systemd guest).
appfs_mib=16
make_appfs() {
  local tree=$work/appfs-tree-$1
  rm -rf "$tree" && mkdir -p "$tree"
  echo "$1" > "$tree/version"
  head -c $((1024 * 1024)) < <(yes "application $1") > "$tree/app.bin"
  rm -f "$work/appfs-$1.ext4"
  E2FSPROGS_FAKE_TIME=1790000000 mkfs.ext4 -q -F -d "$tree" -U 0e7c9a4d-3b2f-4c1a-9d8e-7f6a5b4c3d2e \
    -E hash_seed=5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d "$work/appfs-$1.ext4" "${appfs_mib}M"
  rm -rf "$tree"
}

# make_systemd_rootfs VERSION HEALTHY: a Debian root filesystem with diffota installed the
# way meta-diffota installs it.
recipe=$repo/meta-diffota/recipes-core/diffota/diffota_git.bb
layer_files=$repo/meta-diffota/recipes-core/diffota/files
make_systemd_rootfs() {
  local version=$1 healthy=$2 tree=$work/tree-$1
  rm -rf "$tree"
  cp -a "$base_tree" "$tree"
  mkdir -p "$tree"/{store,boot/efi,data,var/lib/diffota,usr/local/sbin}
  cp "$static_diffota" "$tree/usr/bin/diffota"
  cp "$vmlinuz" "$tree/boot/vmlinuz"
  cp "$work/initrd.img" "$tree/boot/initrd.img"
  echo "$version" > "$tree/etc/release"
  echo "healthy=$healthy" > "$tree/etc/health"
  echo "vm-$version" > "$tree/etc/hostname"
  echo 6d1f0c2b3a4e4f5a8b9c0d1e2f3a4b5c > "$tree/etc/machine-id"
  if [ "$version" = 4.0 ]; then mkdir -p "$tree/opt/app"; head -c $((20 * 1024 * 1024)) /dev/urandom > "$tree/opt/app/payload"; fi
  # The layer: diffota-config renders /etc/diffota.toml with render-config.sh (its defaults,
  # but the slots, the bootloader and the store of this machine) ...
  DIFFOTA_SERVER_URL=file:///store/store DIFFOTA_CHANNEL=stable DIFFOTA_COMPATIBLE=vm-x86_64 \
    DIFFOTA_PUBLIC_KEYS="$work/release.pub" DIFFOTA_STATE_DIR=/data/diffota \
    DIFFOTA_DEVICE_ID_FILE=/etc/machine-id DIFFOTA_SLOT_A=/dev/vda2 DIFFOTA_SLOT_B=/dev/vda3 \
    DIFFOTA_BOOTLOADER=grub DIFFOTA_BOOT_ATTEMPTS=3 DIFFOTA_GRUBENV=/boot/efi/EFI/BOOT/grubenv \
    DIFFOTA_SLOT_GROUP=appfs:/dev/vda5:/dev/vda6 \
    DIFFOTA_HOOKS_POST_COMMIT=/usr/libexec/diffota/hooks/diffota-migrate-data-example \
    sh "$layer_files/render-config.sh" "$layer_files/diffota.toml.in" "$tree/etc/diffota.toml" \
      "$tree/etc/diffota/keys" /etc/diffota/keys
  # ... with the example hooks package (diffota-config-example-hooks) ...
  install -D -m 0755 "$layer_files/diffota-migrate-data-example" \
    "$tree/usr/libexec/diffota/hooks/diffota-migrate-data-example"
  # ... and the running slot group's appfs at /app, as diffota-config does it with
  # DIFFOTA_SLOT_GROUP_MOUNTS: the layer's helper and the unit its render script writes.
  mkdir -p "$tree/app"
  install -D -m 0755 "$layer_files/diffota-mount-running" "$tree/usr/libexec/diffota/diffota-mount-running"
  DIFFOTA_SLOT_GROUP=appfs:/dev/vda5:/dev/vda6 DIFFOTA_SLOT_GROUP_MOUNTS=appfs:/app \
    sh "$layer_files/render-group-mounts.sh" "$tree/etc/systemd/system" /usr/libexec/diffota/diffota-mount-running
  systemctl --root="$tree" --quiet enable diffota-mount-appfs.service
  # ... and diffota installs the units DIFFOTA_UNITS lists and enables SYSTEMD_SERVICE.
  local unit units enabled
  read -ra units <<< "$(sed -n 's/^DIFFOTA_UNITS = "\(.*\)"$/\1/p' "$recipe")"
  # shellcheck disable=SC2016 # ${PN} is bitbake's, matched literally
  read -ra enabled <<< "$(sed -n 's/^SYSTEMD_SERVICE:${PN} = "\(.*\)"$/\1/p' "$recipe")"
  { [ ${#units[@]} -ge 4 ] && [ ${#enabled[@]} -ge 2 ]; } || fail "cannot read DIFFOTA_UNITS and SYSTEMD_SERVICE from $recipe"
  for unit in "${units[@]}"; do
    install -m 0644 "$repo/systemd/$unit" "$tree/usr/lib/systemd/system/$unit"
  done
  systemctl --root="$tree" --quiet enable "${enabled[@]}"
  # ... and the D-Bus API's policy (DIFFOTA_DBUS_GROUP left at "diffota"), activation file
  # and introspection, where do_install puts them.
  install -d "$tree/usr/share/dbus-1/system.d" "$tree/usr/share/dbus-1/system-services" "$tree/usr/share/dbus-1/interfaces"
  install -m 0644 "$repo/dbus/org.diffota.Updater1.conf" "$tree/usr/share/dbus-1/system.d/"
  install -m 0644 "$repo/dbus/org.diffota.Updater1.service" "$tree/usr/share/dbus-1/system-services/"
  install -m 0644 "$repo/dbus/org.diffota.Updater1.xml" "$tree/usr/share/dbus-1/interfaces/"
  # The README's setting for reboot-on-install.
  echo "DIFFOTA_INSTALL_ARGS=--reboot" > "$tree/etc/default/diffota"
  # The device's health check, made from the shipped example.
  sed -e 's|^ExecStart=.*|ExecStart=/bin/grep -q healthy=yes /etc/health|' -e '/^After=myapp.service/d' \
    -e 's|^Description=.*|Description=VM health check (is this release healthy?)|' \
    "$repo/systemd/example-health-check.service" > "$tree/etc/systemd/system/vm-health-check.service"
  systemctl --root="$tree" --quiet enable vm-health-check.service
  # The machine: root stays read-only (as the boot script mounts it), /var is volatile, the
  # data partition at /data (the state directory, the factory release), the ESP holds
  # grubenv, the store disk.
  cat > "$tree/etc/fstab" <<'FSTAB'
tmpfs      /var              tmpfs  mode=0755        0 0
/dev/vda4  /data             ext4   defaults         0 2
/dev/vda1  /boot/efi         vfat   defaults         0 2
/dev/vdb   /store            ext4   ro,nofail        0 0
FSTAB
  mkdir -p "$tree/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\nForwardToConsole=yes\nTTYPath=/dev/ttyS0\nMaxLevelConsole=info\n' \
    > "$tree/etc/systemd/journald.conf.d/vm-serial.conf"
  ln -sf /dev/null "$tree/etc/systemd/system/serial-getty@ttyS0.service"
  # The test's hand on the device.
  cat > "$tree/usr/local/sbin/vm-driver" <<'DRIVER'
#!/bin/sh
# Reports this boot on the serial console, then starts what the host asked for through
# systemd, as the timer or an operator would.
say() { echo "DIFFOTA-VM: $*" > /dev/ttyS0; }
slot=$(sed -n 's/.*diffota.slot=\([ab]\).*/\1/p' /proc/cmdline)
say "booted slot=$slot release=$(cat /etc/release)"
systemctl is-system-running --wait > /dev/null 2>&1 || true
if systemctl is-failed --quiet vm-health-check.service; then
  say "health check failed; diffota-health-failed.service: $(systemctl show -p ActiveState --value diffota-health-failed.service)"
  exit 0
fi
say "startup: $(systemd-analyze time 2>/dev/null | head -n 1)"
say "diffota-mark-good.service: $(systemctl show -p ActiveState --value diffota-mark-good.service) result=$(systemctl show -p Result --value diffota-mark-good.service)"
say "app: $(cat /app/version 2>&1)"
say "settings: $(head -n 1 /data/app/settings 2>&1)"
action=$(cat /store/action 2>/dev/null || true)
case " $action " in *" dbus "*)
  # D-Bus activation starts diffota-service.service; its API answers.
  if busctl introspect org.diffota.Updater1 /org/diffota/Updater1 org.diffota.Updater1 > /run/introspect 2>&1; then
    say "dbus introspect: $(grep -c '^\.' /run/introspect) members, $(grep -E '^\.(Install|Percent|Completed) ' /run/introspect | awk '{print $1}' | tr '\n' ' ')"
  else
    say "dbus introspect failed: $(cat /run/introspect)"
  fi
  say "diffota-service.service: $(systemctl is-active diffota-service.service)"
  say "dbus RunningSlot: $(busctl get-property org.diffota.Updater1 /org/diffota/Updater1 org.diffota.Updater1 RunningSlot 2>&1)"
esac
case " $action " in *" security "*)
  for unit in diffota-update.service diffota-mark-good.service diffota-health-failed.service diffota-report.service diffota-service.service diffota-provision.service; do
    say "security $unit: $(systemd-analyze security --no-pager "$unit" 2>&1 | grep 'Overall exposure')"
  done
esac
case " $action " in *" install "*)
  say "install starting"
  systemctl start diffota-update.service || true
  say "diffota-update.service: result=$(systemctl show -p Result --value diffota-update.service) status=$(systemctl show -p ExecMainStatus --value diffota-update.service)"
esac
case "$(systemctl is-system-running 2>/dev/null)" in stopping) exit 0 ;; esac
diffota status 2>&1 | sed 's/^/DIFFOTA-VM: status: /' > /dev/ttyS0
say "done, powering off"
systemctl poweroff
DRIVER
  chmod +x "$tree/usr/local/sbin/vm-driver"
  cat > "$tree/etc/systemd/system/vm-driver.service" <<'UNIT'
[Unit]
Description=VM test driver
After=local-fs.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/vm-driver

[Install]
WantedBy=multi-user.target
UNIT
  systemctl --root="$tree" --quiet enable vm-driver.service
  rm -f "$work/rootfs-$version.ext4"
  E2FSPROGS_FAKE_TIME=1790000000 mkfs.ext4 -q -F -d "$tree" -U 6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d \
    -E hash_seed=1d2c3b4a-0f9e-4d8c-8b7a-6e5d4c3b2a19 "$work/rootfs-$version.ext4" "${slot_mib}M"
  rm -rf "$tree"
}

if [ "$bootloader" = grub ]; then
  boot_backend=$'backend = "grub"\ngrubenv = "/boot/efi/EFI/BOOT/grubenv"'
else
  boot_backend=$'backend = "uboot"\nfw_env_config = "/etc/fw_env.config"'
fi
log "releases: 1.0 (factory), 2.0, 3.0 (broken), 4.0"
store=$work/store
for release in 1.0:yes 2.0:yes 3.0:no 4.0:yes; do
  version=${release%%:*}
  "make_${guest}_rootfs" "$version" "${release##*:}"
  images=("$work/rootfs-$version.ext4")
  if [ "$guest" = systemd ]; then
    make_appfs "$version"
    images=(--image "rootfs=$work/rootfs-$version.ext4" --image "appfs=$work/appfs-$version.ext4")
  fi
  SOURCE_DATE_EPOCH=1790000000 "$cs" make --store "$store" --version "$version" --compatible vm-x86_64 \
    --key "$work/release.key" --zstd-level 3 "${images[@]}" >/dev/null
done
publish() { "$cs" channel set --store "$store" stable --release "$1" --key "$work/release.key" >/dev/null; }

log "disk ($bootloader): boot partition, rootfs A (1.0), rootfs B (empty), data (state); a store disk"
mib=$((1024 * 1024))
esp_start=1; a_start=65; b_start=$((a_start + slot_mib)); data_start=$((b_start + slot_mib)); data_size=160
appfs_a_start=$((data_start + data_size)); appfs_b_start=$((appfs_a_start + appfs_mib))
disk=$work/disk.img
truncate -s $(((appfs_b_start + appfs_mib + 1) * mib)) "$disk"
sfdisk --quiet "$disk" <<PARTS
label: gpt
start=$((esp_start * 2048)), size=$((64 * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp, attrs="LegacyBIOSBootable"
start=$((a_start * 2048)), size=$((slot_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=rootfs_a
start=$((b_start * 2048)), size=$((slot_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=rootfs_b
start=$((data_start * 2048)), size=$((data_size * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data
start=$((appfs_a_start * 2048)), size=$((appfs_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=appfs_a
start=$((appfs_b_start * 2048)), size=$((appfs_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=appfs_b
PARTS
esp="$disk@@$((esp_start * mib))"

mkfs.vfat -n ESP -C "$work/esp.img" $((64 * 1024)) >/dev/null
# The boot files as the layer ships them, rendered from its templates with this machine's
# settings (virtio disk, the kernel and initramfs inside each slot, the serial console).
boot_files=$repo/meta-diffota/files/boot
export DIFFOTA_SLOT_A=/dev/vda2 DIFFOTA_SLOT_B=/dev/vda3 DIFFOTA_KERNEL=/boot/vmlinuz \
  DIFFOTA_INITRD=/boot/initrd.img DIFFOTA_FDT="" DIFFOTA_KERNEL_ARGS="console=ttyS0 panic=-1" \
  DIFFOTA_BOOT_ATTEMPTS=3 DIFFOTA_GRUB_PART_A="(hd0,gpt2)" DIFFOTA_GRUB_PART_B="(hd0,gpt3)" \
  DIFFOTA_UBOOT_DEV="virtio 0" DIFFOTA_UBOOT_BOOT_PART=1 DIFFOTA_UBOOT_PART_A=2 \
  DIFFOTA_UBOOT_PART_B=3 DIFFOTA_UBOOT_ENV_SIZE=0x4000
if [ "$bootloader" = grub ]; then
  # Debian's GRUB EFI binary instead of Yocto's, started the way Yocto's starts: ${prefix} is
  # the ESP's /EFI/BOOT, and grub.cfg there is the layer's.
  cat > "$work/grub-embedded.cfg" <<'GRUB'
set prefix=(hd0,gpt1)/EFI/BOOT
source ${prefix}/grub.cfg
GRUB
  grub-mkstandalone -O x86_64-efi -o "$work/BOOTX64.EFI" \
    --modules="part_gpt fat ext2 normal linux configfile loadenv test echo gzio" \
    "boot/grub/grub.cfg=$work/grub-embedded.cfg"
  sh "$boot_files/render-boot.sh" "$boot_files/grub.cfg.in" "$work/grub.cfg"
  # As the grub-efi bbappend makes it.
  grub-editenv "$work/grubenv" create
  grub-editenv "$work/grubenv" set diffota_slot=a upgrade_available=0 bootcount=0 bootlimit=$DIFFOTA_BOOT_ATTEMPTS
  mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
  mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$work/esp.img" "$work/grub.cfg" ::/EFI/BOOT/grub.cfg
  mcopy -i "$work/esp.img" "$repo/meta-diffota/recipes-bsp/grub/files/diffota.cfg" ::/EFI/BOOT/diffota.cfg
  mcopy -i "$work/esp.img" "$work/grubenv" ::/EFI/BOOT/grubenv
else
  # As u-boot-diffota-script makes them: boot.scr (the board part, rendered), diffota.scr,
  # the initial uboot.env.
  sh "$boot_files/render-boot.sh" "$boot_files/boot-env.cmd.in" "$work/boot.cmd"
  mkimage -A x86_64 -T script -C none -d "$work/boot.cmd" "$work/boot.scr" >/dev/null
  mkimage -A x86_64 -T script -C none -d "$repo/meta-diffota/recipes-bsp/u-boot/files/diffota.cmd" "$work/diffota.scr" >/dev/null
  printf 'diffota_slot=a\nupgrade_available=0\nbootcount=0\nbootlimit=%s\n' "$DIFFOTA_BOOT_ATTEMPTS" > "$work/uboot-env.txt"
  mkenvimage -s "$DIFFOTA_UBOOT_ENV_SIZE" -o "$work/uboot.env" "$work/uboot-env.txt"
  mcopy -i "$work/esp.img" "$work/boot.scr" ::/boot.scr
  mcopy -i "$work/esp.img" "$work/diffota.scr" ::/diffota.scr
  mcopy -i "$work/esp.img" "$work/uboot.env" ::/uboot.env
fi
dd if="$work/esp.img" of="$disk" bs=1M seek=$esp_start conv=notrunc status=none
dd if="$work/rootfs-1.0.ext4" of="$disk" bs=1M seek=$a_start conv=notrunc status=none
# The data partition. The systemd guest gets the factory data the layer's image class puts
# there (the signed index of 1.0 and provision.env, for diffota-provision.service).
factory_data=$work/factory-data
mkdir -p "$factory_data"
if [ "$guest" = systemd ]; then
  sh "$repo/meta-diffota/files/diffota-factory-data.sh" "$store" 1.0 rootfs "$factory_data"
  # The factory group: appfs A holds 1.0's; the application's settings in schema 1.
  dd if="$work/appfs-1.0.ext4" of="$disk" bs=1M seek=$appfs_a_start conv=notrunc status=none
  mkdir -p "$factory_data/app"
  printf 'server=https://old.example.com\nvolume=7\n' > "$factory_data/app/settings"
fi
mkfs.ext4 -q -F -L data -d "$factory_data" "$work/data.img" "${data_size}M"
dd if="$work/data.img" of="$disk" bs=1M seek=$data_start conv=notrunc status=none
# The store disk is rebuilt before every boot: the store as published, and the action the
# guest's init runs on that boot (none unless action() was called).
next_action=""
action() { next_action=$1; }
store_disk() {
  rm -rf "$work/store-disk" && mkdir -p "$work/store-disk"
  cp -r "$store" "$work/store-disk/store"
  [ -z "$next_action" ] || echo "$next_action" > "$work/store-disk/action"
  next_action=""
  mkfs.ext4 -q -F -d "$work/store-disk" "$work/store.img" "$(( $(du -sm "$work/store-disk" | cut -f1) * 5 / 4 + 32 ))M"
}
# The boot variables as the host reads them with the bootloader's own tools.
env_get() {
  if [ "$bootloader" = grub ]; then
    mcopy -o -i "$esp" ::/EFI/BOOT/grubenv "$work/grubenv.out"
    grub-editenv "$work/grubenv.out" list | sed -n "s/^$1=//p"
  else
    mcopy -o -i "$esp" ::/uboot.env "$work/uboot.env.out"
    echo "$work/uboot.env.out 0x0 0x4000" > "$work/fw_env.config"
    fw_printenv -c "$work/fw_env.config" -n "$1" 2>/dev/null
  fi
}

cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
if [ "$bootloader" = grub ]; then
  firmware=(-drive "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd" -drive "if=pflash,format=raw,file=$work/vars.fd")
else
  firmware=(-bios "${DIFFOTA_UBOOT_ROM:-/usr/lib/u-boot/qemu-x86/u-boot.rom}")
fi
# Software emulation by default: on this workplace /dev/kvm exists but fails inside OVMF.
accel=${DIFFOTA_VM_ACCEL:-tcg}
boot_number=0
# boot [KILL_AFTER_MARKER]: one boot until the guest powers off or reboots; with an
# argument, QEMU is killed (a power cut) as soon as that marker appears.
boot() {
  boot_number=$((boot_number + 1))
  store_disk
  local serial=$work/serial-$boot_number.log
  : > "$serial"
  timeout "$boot_timeout" qemu-system-x86_64 -machine "q35,accel=$accel" -m 512 -smp 2 -no-reboot -display none -monitor none -nic none \
    "${firmware[@]}" \
    -drive file="$disk",if=virtio,format=raw \
    -drive file="$work/store.img",if=virtio,format=raw,readonly=on \
    -serial "file:$serial" &
  local qemu=$!
  if [ $# -gt 0 ]; then
    for _ in $(seq 3000); do grep -q "$1" "$serial" && break; kill -0 $qemu 2>/dev/null || break; sleep 0.01; done
    sleep 0.2
    # The power cut: SIGKILL to QEMU itself (the child of timeout).
    pkill -9 -P $qemu 2>/dev/null || true
  fi
  wait $qemu || true
  tr -d '\r' < "$serial" | grep -aE "DIFFOTA-VM|diffota\[[0-9]+\]|Startup finished" | sed "s/^/  boot $boot_number: /" || true
  last_serial=$serial
}
expect() { grep -q "$1" "$last_serial" || fail "boot $boot_number: expected '$1' on the serial console (see $last_serial)"; }
# An extended regex matched against the console, carriage returns read as line ends. No pipe into
# `grep -q`: under pipefail, grep leaving at its first match would kill the writer with SIGPIPE and
# turn a match into a failure whenever the log outgrows the pipe buffer.
serial_has() { tr '\r' '\n' < "$last_serial" > "$last_serial.lines"; grep -aqE "$1" "$last_serial.lines"; }
expect_env() { local got; got=$(env_get "$1"); [ "$got" = "$2" ] || fail "boot variable $1=$got, expected $2"; }

started=$(date +%s)
if [ "$guest" = busybox ]; then
log "scenario 1: factory boot on A, install 2.0, trial boot of B, mark-good"
publish 2.0; action install
boot
expect "booted slot=a release=1.0"; expect "install rc=0"
expect_env diffota_slot b; expect_env upgrade_available 1
boot
expect "booted slot=b release=2.0"; expect "mark-good rc=0"; expect "slot b (2.0) committed"
expect_env diffota_slot b; expect_env upgrade_available 0; expect_env bootcount 0

log "scenario 2: a broken release is tried bootlimit times, then B again; it is not installed again"
publish 3.0; action install
boot
expect "booted slot=b release=2.0"; expect "install rc=0"
expect_env diffota_slot a; expect_env upgrade_available 1
for try in 1 2 3; do
  boot
  expect "booted slot=a release=3.0"; expect "never healthy"
  expect_env bootcount "$try"
done
boot
expect "booted slot=b release=2.0"; expect "release 3.0 failed"
expect_env diffota_slot b; expect_env upgrade_available 0
action install
boot
expect "booted slot=b release=2.0"; expect "not installing 3.0: it failed on this device before"
expect "failed release 3.0"
expect_env diffota_slot b

log "scenario 3: power cut during the install of 4.0; the old slot boots; the install resumes"
publish 4.0; action install
boot "install starting"
expect "install starting"
cut_mid_install=yes
if grep -q "install rc=" "$last_serial"; then cut_mid_install=no; log "(the install finished before the cut)"; fi
expect_env diffota_slot b; expect_env upgrade_available 0
action install
boot
expect "booted slot=b release=2.0"; expect "install rc=0"
if [ "$cut_mid_install" = yes ]; then
  # What was written and verified before the cut is found in place, not fetched again.
  serial_has "[1-9][0-9]* already in place" || fail "the resumed install found nothing in place"
fi
expect_env diffota_slot a; expect_env upgrade_available 1
boot
expect "booted slot=a release=4.0"; expect "slot a (4.0) committed"
expect_env upgrade_available 0

else
log "scenario 1 (systemd): factory boot on A; diffota-update.service installs 2.0 and reboots; the trial boot of B reaches boot-complete.target; diffota-mark-good.service commits"
publish 2.0; action "security dbus install"
boot
expect "booted slot=a release=1.0"; expect "install starting"
expect "app: 1.0"; expect "settings: server=https://old.example.com"
# diffota-provision.service, from the factory data on /data (the release's manifest): slot
# group A recorded as 1.0 before the first update.
expect "diffota\[[0-9]*\]: slot a holds release 1.0 (its image matches the signed release): recorded as good"
expect "diffota\[[0-9]*\]: installed 2.0 into slot b"; expect "reboot: Restarting system"
expect_env diffota_slot b; expect_env upgrade_available 1
tr -d '\r' < "$last_serial" | grep -a "security diffota" | sed 's/.*DIFFOTA-VM: /vm-test: /' || true
for unit in diffota-update.service diffota-mark-good.service diffota-health-failed.service diffota-report.service diffota-service.service diffota-provision.service; do
  expect "security $unit: .*Overall exposure level"
done
expect "dbus introspect: .* .Install .Percent .Completed"; expect "diffota-service.service: active"
expect 'dbus RunningSlot: s "a"'

boot
expect "booted slot=b release=2.0"; expect "Reached target boot-complete.target"
expect "diffota\[[0-9]*\]: slot b (2.0) committed"; expect "diffota-mark-good.service: active result=success"
# The group switched: appfs B holds 2.0's, mounted from the running group; the example
# post-commit hook migrated /data/app/settings once.
expect "app: 2.0"; expect "settings: schema=2"
expect "migrated from schema 1 to 2 for release 2.0 (was 1.0)"
appfs_bytes=$(stat -c %s "$work/appfs-2.0.ext4")
cmp -n "$appfs_bytes" "$work/appfs-2.0.ext4" <(dd if="$disk" bs=1M skip="$appfs_b_start" count="$appfs_mib" status=none) \
  || fail "appfs B does not hold 2.0's appfs"
expect_env diffota_slot b; expect_env upgrade_available 0; expect_env bootcount 0
# Provisioning ran once: provision.env was renamed, the unit did not start again.
if serial_has "slot a holds release|Failed to start diffota-provision"; then fail "diffota-provision.service ran again on the second boot"; fi

log "scenario 2 (systemd): 3.0 fails its health check; diffota-health-failed.service reboots each trial boot; GRUB falls back; the next run refuses 3.0"
publish 3.0; action install
boot
expect "booted slot=b release=2.0"; expect "diffota\[[0-9]*\]: installed 3.0 into slot a"; expect "reboot: Restarting system"
expect_env diffota_slot a; expect_env upgrade_available 1
for try in 1 2 3; do
  boot
  expect "booted slot=a release=3.0"
  expect "diffota\[[0-9]*\]: 3.0 in slot a failed its health check on trial boot $try of 3; rebooting"
  expect "reboot: Restarting system"
  expect_env bootcount "$try"
done
action install
boot
expect "booted slot=b release=2.0"; expect "diffota\[[0-9]*\]: release 3.0 failed"
expect "diffota\[[0-9]*\]: not installing 3.0: it failed on this device before"
expect "diffota-update.service: result=exit-code status=4"
expect "status: failed release 3.0"
expect_env diffota_slot b; expect_env upgrade_available 0

log "scenario 3 (systemd): power cut while diffota-update.service writes 4.0; the old slot boots; the next run resumes"
publish 4.0; action install
boot "installing 4.0 into slot a"
expect "installing 4.0 into slot a"
cut_mid_install=yes
if grep -aq "installed 4.0 into slot a" "$last_serial"; then cut_mid_install=no; log "(the install finished before the cut)"; fi
expect_env diffota_slot b; expect_env upgrade_available 0
action install
boot
expect "booted slot=b release=2.0"; expect "diffota\[[0-9]*\]: installed 4.0 into slot a"
if [ "$cut_mid_install" = yes ]; then
  serial_has "installed 4.0 into slot a: .*[1-9][0-9]* already in place" || fail "the resumed install found nothing in place"
fi
expect_env diffota_slot a; expect_env upgrade_available 1
boot
expect "booted slot=a release=4.0"; expect "diffota\[[0-9]*\]: slot a (4.0) committed"
expect "app: 4.0"; expect "settings: schema=2"
expect_env upgrade_available 0
log "boot times (systemd-analyze time, last boot): $(tr -d '\r' < "$last_serial" | sed -n 's/.*DIFFOTA-VM: startup: //p')"

fi
log "PASS ($mode): $boot_number boots in $(( $(date +%s) - started )) s (accel $accel)"
echo "vm: 3 passed, 0 failed"
