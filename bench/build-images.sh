#!/usr/bin/env bash
# Builds the benchmark's releases from Debian packages, cached in bench/cache:
#   v1: debootstrap minbase of the release suite alone ("$suite") + what a device typically
#       has (ssh server, python3, networking tools, systemd)
#   v2: v1 + the pending upgrades from $suite-updates and $suite-security (a security
#       roll-up of rebuilt binaries; the script fails when there are none, since the pair
#       would then not look like a release) + a few added packages + changed config files +
#       an application directory of about 20 MB of new files
#   v3: v2 + two more packages, a rebuilt half of the application, more config changes
#       (for devices two releases behind: v1 -> v3)
#   v4: v3 + two more packages, another quarter of the application rebuilt, more config
#       changes (three releases behind: v1 -> v4)
#   major: a major upgrade of v2, debootstrap of $major_suite (trixie) with v2's packages and
#       application (for the "never worse" goal: a plan that costs more than the image)
# and the same four releases for arm64 (arm64-v1 ... arm64-v4), built without an arm64 CPU:
# `debootstrap --foreign --arch=arm64` downloads the packages and every one is unpacked
# (`dpkg-deb --fsys-tarfile`, no maintainer scripts); v2's roll-up is what apt, given the
# unpacked packages as its status, finds pending for arm64 in $suite-updates and
# $suite-security, and each later release unpacks its packages' .debs over the tree.
# Each tree becomes a reproducible 1 GiB ext4 image (fixed UUID, hash seed, timestamps), an
# erofs image (uncompressed) and a zstd-compressed squashfs image. Needs root (debootstrap,
# chroot).
set -euo pipefail
cd "$(dirname "$0")"
cache=$PWD/cache
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=${DEBIAN_SUITE:-bookworm}
major_suite=${DEBIAN_MAJOR_SUITE:-trixie}
base_packages=systemd,systemd-sysv,openssh-server,python3,iproute2,iputils-ping,ifupdown,isc-dhcp-client,ca-certificates,procps,kmod
v2_packages="curl less rsync nano python3-yaml"
v3_packages="jq vim-tiny"
v4_packages="file bzip2"
mkdir -p "$cache"
export SOURCE_DATE_EPOCH=1790000000

# What each release changes besides packages, the same on both architectures.
release_changes() {
  local tree=$1 release=$2
  echo "device-v$release" > "$tree/etc/hostname"
  printf 'Welcome to the device, release %s\n' "$release" > "$tree/etc/issue"
  case $release in
    2)
      printf '\nPermitRootLogin no\nClientAliveInterval 60\n' >> "$tree/etc/ssh/sshd_config"
      # An application directory: ~20 MB of new files, half compressible text, half binary.
      mkdir -p "$tree/opt/app/lib" "$tree/opt/app/share"
      for i in $(seq 1 40); do
        head -c 262144 /dev/urandom > "$tree/opt/app/lib/module-$i.so"
        python3 -c "import random; random.seed($i); print('\n'.join(' '.join(random.choice(['def','return','import','self','value','config','device','update']) for _ in range(12)) for _ in range(2600)))" > "$tree/opt/app/share/data-$i.py"
      done
      ;;
    3)
      printf 'MaxAuthTries 3\n' >> "$tree/etc/ssh/sshd_config"
      # Half of the application rebuilt: new binaries, edited sources.
      for i in $(seq 1 20); do
        head -c 262144 /dev/urandom > "$tree/opt/app/lib/module-$i.so"
        sed -i 's/config/settings/g' "$tree/opt/app/share/data-$i.py"
      done
      ;;
    4)
      printf 'LoginGraceTime 30\n' >> "$tree/etc/ssh/sshd_config"
      # Another quarter rebuilt and edited, and a new module.
      for i in $(seq 21 30); do
        head -c 262144 /dev/urandom > "$tree/opt/app/lib/module-$i.so"
        sed -i 's/device/node/g' "$tree/opt/app/share/data-$i.py"
      done
      head -c 524288 /dev/urandom > "$tree/opt/app/lib/module-41.so"
      ;;
  esac
}

# amd64: debootstrap, then apt inside the tree.
apt_in_tree() {
  local tree=$1; shift
  mount --bind /proc "$tree/proc"
  trap 'umount "$tree/proc" 2>/dev/null || true' EXIT
  chroot "$tree" "$@"
  umount "$tree/proc"
  trap - EXIT
}

if [ ! -f "$cache/v1-tree.done" ]; then
  rm -rf "$cache/v1-tree"
  debootstrap --variant=minbase --include="$base_packages" "$suite" "$cache/v1-tree" "$mirror"
  rm -rf "$cache/v1-tree/var/cache/apt/archives/"*.deb "$cache/v1-tree/var/lib/apt/lists/"*_Packages
  touch "$cache/v1-tree.done"
fi

if [ ! -f "$cache/v2-tree.done" ]; then
  rm -rf "$cache/v2-tree"
  cp -a "$cache/v1-tree" "$cache/v2-tree"
  tree=$cache/v2-tree
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$security_mirror" "$suite" > "$tree/etc/apt/sources.list"
  apt_in_tree "$tree" apt-get update -qq
  apt_in_tree "$tree" apt-get -s upgrade | awk '/^Inst /{print $2, $3, $4}' | tr -d '[]()' > "$cache/v2-upgrades.txt"
  if [ ! -s "$cache/v2-upgrades.txt" ]; then
    echo "build-images: no pending upgrades for $suite: v2 would not be a security roll-up" >&2
    exit 1
  fi
  echo "build-images: v2 upgrades $(wc -l < "$cache/v2-upgrades.txt") packages (list in $cache/v2-upgrades.txt)" >&2
  apt_in_tree "$tree" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade
  # shellcheck disable=SC2086
  apt_in_tree "$tree" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq install --no-install-recommends $v2_packages
  apt_in_tree "$tree" apt-get clean
  rm -rf "$tree/var/lib/apt/lists/"*_Packages
  release_changes "$tree" 2
  touch "$cache/v2-tree.done"
fi

for release in 3 4; do
  if [ ! -f "$cache/v$release-tree.done" ]; then
    rm -rf "$cache/v$release-tree"
    cp -a "$cache/v$((release - 1))-tree" "$cache/v$release-tree"
    tree=$cache/v$release-tree
    packages=v${release}_packages
    apt_in_tree "$tree" apt-get update -qq
    # shellcheck disable=SC2086
    apt_in_tree "$tree" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq install --no-install-recommends ${!packages}
    apt_in_tree "$tree" apt-get clean
    rm -rf "$tree/var/lib/apt/lists/"*_Packages
    release_changes "$tree" "$release"
    touch "$cache/v$release-tree.done"
  fi
done

if [ ! -f "$cache/major-tree.done" ]; then
  rm -rf "$cache/major-tree"
  tree=$cache/major-tree
  debootstrap --variant=minbase --include="$base_packages,${v2_packages// /,}" "$major_suite" "$tree" "$mirror"
  rm -rf "$tree/var/cache/apt/archives/"*.deb "$tree/var/lib/apt/lists/"*_Packages
  release_changes "$tree" 2
  echo "device-major" > "$tree/etc/hostname"
  touch "$cache/major-tree.done"
fi

# arm64: packages are downloaded by apt for arm64 in a private directory (nothing of the
# host's apt state is touched) and unpacked into the tree.
arm64_apt=$cache/arm64-apt
arm_apt() {
  apt-get -q -o Dir::State="$arm64_apt/state" -o Dir::State::status="$arm64_apt/status" \
    -o Dir::Cache="$arm64_apt/cache" -o Dir::Etc::SourceList="$arm64_apt/sources.list" \
    -o Dir::Etc::SourceParts=/dev/null -o Dir::Etc::Preferences=/dev/null \
    -o Dir::Etc::PreferencesParts=/dev/null -o APT::Architecture=arm64 \
    -o APT::Architectures::=arm64 -o APT::Install-Recommends=false "$@"
}
# unpack TREE DEB...: what dpkg would unpack, into TREE, keeping the merged-/usr links.
unpack() {
  local tree=$1; shift
  for deb in "$@"; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$tree" -f -
  done
}
# record_status TREE DEB...: the packages' control fields as installed, for apt.
record_status() {
  local status=$1; shift
  for deb in "$@"; do
    local package
    package=$(dpkg-deb -f "$deb" Package)
    # An upgrade replaces the package's entry.
    awk -v p="$package" 'BEGIN {RS=""; ORS="\n\n"} $0 !~ ("(^|\n)Package: " p "\n")' "$status" > "$status.new"
    { dpkg-deb -f "$deb" | sed '/^Package:/a Status: install ok installed'; echo; } >> "$status.new"
    mv "$status.new" "$status"
  done
}
# arm_fetch DIR SPEC...: downloads the .debs of SPEC (names, or name=version) and what they
# need that the status lacks into DIR.
arm_fetch() {
  local dir=$1; shift
  rm -rf "$dir" && mkdir -p "$dir"
  arm_apt -o Dir::Cache::archives="$dir" -y --download-only install "$@" >/dev/null
}

if [ ! -f "$cache/arm64-v1-tree.done" ]; then
  rm -rf "$cache/arm64-v1-tree" "$arm64_apt"
  tree=$cache/arm64-v1-tree
  debootstrap --foreign --arch=arm64 --variant=minbase --include="$base_packages" "$suite" "$tree" "$mirror"
  # The first stage unpacks only the required packages; the second (which would need an
  # arm64 CPU) would unpack the rest and run their scripts. Unpack every package.
  unpack "$tree" "$tree"/var/cache/apt/archives/*.deb
  mkdir -p "$arm64_apt/state/lists/partial" "$arm64_apt/cache/archives/partial"
  : > "$arm64_apt/status"
  record_status "$arm64_apt/status" "$tree"/var/cache/apt/archives/*.deb
  cp "$arm64_apt/status" "$tree/var/lib/dpkg/status"
  rm -rf "$tree/debootstrap" "$tree/var/cache/apt/archives/"*.deb
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$security_mirror" "$suite" | tee "$arm64_apt/sources.list" > "$tree/etc/apt/sources.list"
  touch "$cache/arm64-v1-tree.done"
fi

for release in 2 3 4; do
  if [ ! -f "$cache/arm64-v$release-tree.done" ]; then
    tree=$cache/arm64-v$release-tree
    rm -rf "$tree"
    cp -a "$cache/arm64-v$((release - 1))-tree" "$tree"
    cp "$tree/var/lib/dpkg/status" "$arm64_apt/status"
    arm_apt update >/dev/null
    debs=$cache/arm64-debs
    if [ "$release" = 2 ]; then
      arm_apt -s upgrade | awk '/^Inst /{print $2, $3, $4}' | tr -d '[]()' > "$cache/arm64-v2-upgrades.txt"
      if [ ! -s "$cache/arm64-v2-upgrades.txt" ]; then
        echo "build-images: no pending arm64 upgrades for $suite" >&2
        exit 1
      fi
      echo "build-images: arm64 v2 upgrades $(wc -l < "$cache/arm64-v2-upgrades.txt") packages" >&2
      # shellcheck disable=SC2046
      arm_fetch "$debs" $(awk '{print $1 "=" $3}' "$cache/arm64-v2-upgrades.txt") $v2_packages
    else
      packages=v${release}_packages
      # shellcheck disable=SC2086
      arm_fetch "$debs" ${!packages}
    fi
    unpack "$tree" "$debs"/*.deb
    record_status "$arm64_apt/status" "$debs"/*.deb
    cp "$arm64_apt/status" "$tree/var/lib/dpkg/status"
    rm -rf "$debs"
    release_changes "$tree" "$release"
    touch "$cache/arm64-v$release-tree.done"
  fi
done

for version in v1 v2 v3 v4 major arm64-v1 arm64-v2 arm64-v3 arm64-v4; do
  tree=$cache/$version-tree
  if [ ! -f "$cache/$version.ext4" ]; then
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -d "$tree" \
      -U 6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d -E hash_seed=1d2c3b4a-0f9e-4d8c-8b7a-6e5d4c3b2a19 \
      -T default -b 4096 "$cache/$version.ext4.tmp" 1G
    mv "$cache/$version.ext4.tmp" "$cache/$version.ext4"
  fi
  if [ ! -f "$cache/$version.erofs" ]; then
    mkfs.erofs -T "$SOURCE_DATE_EPOCH" -U 6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d "$cache/$version.erofs.tmp" "$tree" >/dev/null
    mv "$cache/$version.erofs.tmp" "$cache/$version.erofs"
  fi
  if [ ! -f "$cache/$version.squashfs" ]; then
    mksquashfs "$tree" "$cache/$version.squashfs.tmp" -quiet -noappend -comp zstd >/dev/null
    mv "$cache/$version.squashfs.tmp" "$cache/$version.squashfs"
  fi
done
ls -l "$cache"/*.ext4 "$cache"/*.erofs "$cache"/*.squashfs
