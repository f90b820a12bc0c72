#!/usr/bin/env bash
# Builds the benchmark's release pair from Debian packages, cached in bench/cache:
#   v1: debootstrap minbase + what a device typically has (ssh server, python3, networking
#       tools, systemd)
#   v1: from the release suite alone (debootstrap sees only "$suite")
#   v2: v1 + the pending upgrades from $suite-updates and $suite-security (a security
#       roll-up of rebuilt binaries; the script fails when there are none, since the pair
#       would then not look like a release) + a few added packages + changed config files +
#       an application directory of about 20 MB of new files
#   v3: v2 + two more packages, a rebuilt half of the application, more config changes
#       (for devices two releases behind: v1 -> v3)
# and turns each tree into reproducible ext4 (fixed UUID, hash seed, timestamps), erofs and
# squashfs images. Needs root (debootstrap, chroot).
set -euo pipefail
cd "$(dirname "$0")"
cache=$PWD/cache
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
mkdir -p "$cache"
export SOURCE_DATE_EPOCH=1790000000

if [ ! -f "$cache/v1-tree.done" ]; then
  rm -rf "$cache/v1-tree"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,openssh-server,python3,iproute2,iputils-ping,ifupdown,isc-dhcp-client,ca-certificates,procps,kmod \
    "$suite" "$cache/v1-tree" "$mirror"
  rm -rf "$cache/v1-tree/var/cache/apt/archives/"*.deb "$cache/v1-tree/var/lib/apt/lists/"*_Packages
  touch "$cache/v1-tree.done"
fi

if [ ! -f "$cache/v2-tree.done" ]; then
  rm -rf "$cache/v2-tree"
  cp -a "$cache/v1-tree" "$cache/v2-tree"
  tree=$cache/v2-tree
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$suite" > "$tree/etc/apt/sources.list"
  mount --bind /proc "$tree/proc"
  trap 'umount "$tree/proc" 2>/dev/null || true' EXIT
  chroot "$tree" apt-get update -qq
  chroot "$tree" apt-get -s upgrade | awk '/^Inst /{print $2, $3, $4}' | tr -d '[]()' > "$cache/v2-upgrades.txt"
  if [ ! -s "$cache/v2-upgrades.txt" ]; then
    echo "build-images: no pending upgrades for $suite: v2 would not be a security roll-up" >&2
    umount "$tree/proc"; exit 1
  fi
  echo "build-images: v2 upgrades $(wc -l < "$cache/v2-upgrades.txt") packages (list in $cache/v2-upgrades.txt)" >&2
  chroot "$tree" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade
  chroot "$tree" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq install --no-install-recommends curl less rsync nano python3-yaml
  chroot "$tree" apt-get clean
  rm -rf "$tree/var/lib/apt/lists/"*_Packages
  umount "$tree/proc"
  trap - EXIT
  # Configuration changes a release typically carries.
  echo "device-v2" > "$tree/etc/hostname"
  printf 'Welcome to the device, release 2\n' > "$tree/etc/issue"
  printf '\nPermitRootLogin no\nClientAliveInterval 60\n' >> "$tree/etc/ssh/sshd_config"
  # An application directory: ~20 MB of new files, half compressible text, half binary.
  mkdir -p "$tree/opt/app/lib" "$tree/opt/app/share"
  for i in $(seq 1 40); do
    head -c 262144 /dev/urandom > "$tree/opt/app/lib/module-$i.so"
    python3 -c "import random; random.seed($i); print('\n'.join(' '.join(random.choice(['def','return','import','self','value','config','device','update']) for _ in range(12)) for _ in range(2600)))" > "$tree/opt/app/share/data-$i.py"
  done
  touch "$cache/v2-tree.done"
fi

if [ ! -f "$cache/v3-tree.done" ]; then
  rm -rf "$cache/v3-tree"
  cp -a "$cache/v2-tree" "$cache/v3-tree"
  tree=$cache/v3-tree
  mount --bind /proc "$tree/proc"
  trap 'umount "$tree/proc" 2>/dev/null || true' EXIT
  chroot "$tree" apt-get update -qq
  chroot "$tree" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq install --no-install-recommends jq vim-tiny
  chroot "$tree" apt-get clean
  rm -rf "$tree/var/lib/apt/lists/"*_Packages
  umount "$tree/proc"
  trap - EXIT
  echo "device-v3" > "$tree/etc/hostname"
  printf 'Welcome to the device, release 3\n' > "$tree/etc/issue"
  printf 'MaxAuthTries 3\n' >> "$tree/etc/ssh/sshd_config"
  # Half of the application rebuilt: new binaries, edited sources.
  for i in $(seq 1 20); do
    head -c 262144 /dev/urandom > "$tree/opt/app/lib/module-$i.so"
    sed -i 's/config/settings/g' "$tree/opt/app/share/data-$i.py"
  done
  touch "$cache/v3-tree.done"
fi

for version in v1 v2 v3; do
  tree=$cache/$version-tree
  if [ ! -f "$cache/$version.ext4" ]; then
    rm -f "$cache/$version.ext4"
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -d "$tree" \
      -U 6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d -E hash_seed=1d2c3b4a-0f9e-4d8c-8b7a-6e5d4c3b2a19 \
      -T default -b 4096 "$cache/$version.ext4" 1G
  fi
  if [ ! -f "$cache/$version.erofs" ]; then
    mkfs.erofs -T "$SOURCE_DATE_EPOCH" -U 6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d "$cache/$version.erofs" "$tree" >/dev/null
  fi
  if [ ! -f "$cache/$version.squashfs" ]; then
    mksquashfs "$tree" "$cache/$version.squashfs" -quiet -noappend -comp zstd >/dev/null
  fi
done
ls -l "$cache"/*.ext4 "$cache"/*.erofs "$cache"/*.squashfs
