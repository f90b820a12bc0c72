#!/usr/bin/env bash
# meta-diffota under real bitbake, offline (BB_NO_NETWORK = "1"), on oe-core wrynose and
# whinlatter from the snapshots in $DIFFOTA_YOCTO_SNAPSHOTS (default ../shared/yocto). The
# layer is copied alone out of the repository first, so every step also shows that it stands
# on its own (no links out of it). For each release:
#   1. nothing but `bitbake-layers add-layer`: `bitbake -p`
#   2. the layer README's settings (common + U-Boot) on qemuarm64: `bitbake -p`,
#      `bitbake-layers show-recipes` / `show-appends`, `bitbake -e` of every recipe of the
#      layer (S, SRC_URI against Cargo.lock, LIC_FILES_CHKSUM, SRCREV, the image's
#      IMAGE_FSTYPES, IMAGE_CMD:diffota and the wks file found), `bitbake -g` and (see
#      $DIFFOTA_YOCTO_DRY_RUN) `bitbake -n` of the example image
#   3. the same through kas with the layer's kas files on qemux86-64 (common + GRUB/EFI)
#   4. oe-core's scripts/yocto-check-layer (on the releases in $DIFFOTA_YOCTO_CHECK_LAYER,
#      default wrynose)
# Any ERROR fails it, and so does any WARNING that names diffota; other warnings are listed
# at the end. As root it installs bitbake's host tools and creates the unprivileged user
# bitbake needs; as another user it runs bitbake as that user.
#
# Usage: tests/yocto/run.sh [wrynose|whinlatter ...]   (default: both)
# Work in $DIFFOTA_YOCTO_WORK (default /var/tmp/yocto-layer-test), logs in its logs/.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
log() { echo "yocto-test: $*"; }
fail() {
  echo "yocto-test: FAIL: $*" >&2
  exit 1
}
skip() {
  if [ "${DIFFOTA_REQUIRE_TOOLS:-0}" = 1 ]; then
    fail "$* (required: DIFFOTA_REQUIRE_TOOLS=1)"
  fi
  echo "yocto-test: ******** SKIPPED: $* ********" >&2
  exit 0
}

snapshots=${DIFFOTA_YOCTO_SNAPSHOTS:-$repo/../shared/yocto}
work=${DIFFOTA_YOCTO_WORK:-/var/tmp/yocto-layer-test}
kas_version=5.5
# yocto-check-layer computes world signatures three times (about 11 minutes a release on
# 2 cores): by default on the LTS only, to keep CI's run inside its budget.
check_layer_releases=${DIFFOTA_YOCTO_CHECK_LAYER-wrynose}
# `bitbake -n` of the image resolves about 6,400 tasks (3-4 minutes): by default once per
# release, on the U-Boot machine for wrynose and the EFI machine for whinlatter, so both
# machines and both releases are covered; "all" runs it for every release and machine.
dry_runs=${DIFFOTA_YOCTO_DRY_RUN:-wrynose:uboot whinlatter:grub}
dry_run_wanted() { [ "$dry_runs" = all ] || case " $dry_runs " in *" $1 "*) true ;; *) false ;; esac; }
declare -A bitbake_version=([wrynose]=2.18 [whinlatter]=2.16)
releases=("$@")
[ ${#releases[@]} -gt 0 ] || releases=(wrynose whinlatter)
for release in "${releases[@]}"; do
  [ -n "${bitbake_version[$release]:-}" ] || fail "unknown release $release (wrynose, whinlatter)"
  [ -f "$snapshots/$release.tar.zst" ] || skip "no oe-core snapshot $snapshots/$release.tar.zst (set DIFFOTA_YOCTO_SNAPSHOTS)"
done

host_packages=(gawk wget git diffstat unzip texinfo gcc g++ build-essential chrpath socat cpio python3
  python3-pip python3-venv python3-pexpect xz-utils debianutils iputils-ping python3-git python3-jinja2
  python3-subunit zstd liblz4-tool lz4 file locales rpcsvc-proto minisign)
if [ "$(id -u)" = 0 ]; then
  missing=()
  for package in "${host_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing bitbake's host tools: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! locale -a 2>/dev/null | grep -qi '^en_US.utf-\?8$'; then
    sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    locale-gen >/dev/null
  fi
  user=diffota-bitbake
  id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
  home=$(getent passwd "$user" | cut -d: -f6)
  as_user() { runuser -u "$user" -- "$@"; }
else
  for tool in gawk git chrpath diffstat minisign python3; do
    command -v "$tool" >/dev/null || skip "bitbake's host tool $tool is missing (run as root to install them)"
  done
  home=$HOME
  as_user() { "$@"; }
fi

rm -rf "$work"
mkdir -p "$work"
[ "$(id -u)" = 0 ] && chown "$user:" "$work"
logs=$work/logs
as_user mkdir -p "$logs" "$work/keys" "$work/src"
: >"$work/other-warnings.txt"

log "meta-diffota copied alone to $work/src (a git repository of its own, for kas)"
links=$(find meta-diffota -type l)
[ -z "$links" ] || fail "meta-diffota holds symbolic links (a copied layer loses them): $links"
# Copied (and snapshots unpacked) by the calling user, then handed to the bitbake user: the
# checkout and the snapshots need not be readable by it.
cp -r "$repo/meta-diffota" "$work/src/meta-diffota"
[ "$(id -u)" = 0 ] && chown -R "$user:" "$work/src"
as_user git -C "$work/src" init -q
as_user git -C "$work/src" add meta-diffota
as_user git -C "$work/src" -c user.name=test -c user.email=test@example.invalid commit -qm "meta-diffota"
layer=$work/src/meta-diffota
as_user minisign -G -W -p "$work/keys/release.pub" -s "$work/keys/release.key" >/dev/null

log "kas $kas_version in a virtual environment"
as_user python3 -m venv "$work/kas-venv"
as_user "$work/kas-venv/bin/pip" install -q "kas==$kas_version" >"$logs/kas-install.log" 2>&1 ||
  fail "pip install kas==$kas_version failed: $(tail -3 "$logs/kas-install.log")"

# One of the layer README's local.conf blocks (<!-- local.conf: NAME --> before a fence),
# with its key paths pointed at this test's keys.
readme_block() {
  awk -v tag="<!-- local.conf: $1 -->" '
    $0 == tag { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    found && inside { print }' "$repo/meta-diffota/README.md" |
    sed "s#/secure/keys/#$work/keys/#g"
}
for block in common uboot grub; do
  [ -n "$(readme_block "$block")" ] || fail "meta-diffota/README.md has no local.conf block '$block'"
done

# Fails on any ERROR and on any WARNING naming diffota; keeps the others for the summary.
check_log() {
  local file=$1 step=$2 errors layer_warnings
  errors=$(grep -E '^(ERROR|FATAL|CRITICAL)' "$file" || true)
  [ -z "$errors" ] || fail "$step printed errors (log $file):"$'\n'"$errors"
  layer_warnings=$(grep -E '^WARNING' "$file" | grep -i diffota || true)
  [ -z "$layer_warnings" ] || fail "$step printed warnings about the layer (log $file):"$'\n'"$layer_warnings"
  grep -E '^WARNING' "$file" | sed "s#^#$step: #" >>"$work/other-warnings.txt" || true
}

# Runs a command in the build environment of BUILD_DIR as the bitbake user, with a clean
# environment; output in logs/STEP.log, checked by check_log.
in_build() {
  local build=$1 step=$2
  shift 2
  local file=$logs/$step.log
  # shellcheck disable=SC2016 # expanded by the inner shell
  if ! as_user env -i HOME="$home" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=en_US.UTF-8 \
    TEMPLATECONF="$oe/meta/conf/templates/default" \
    bash -c 'oe=$1 build=$2; shift 2; . "$oe/oe-init-build-env" "$build" >/dev/null && "$@"' \
    _ "$oe" "$build" "$@" >"$file" 2>&1; then
    tail -n 40 "$file" >&2
    fail "$step: '$*' failed (log $file)"
  fi
  check_log "$file" "$step"
}

# The value of VAR in a `bitbake -e` dump.
var_of() { sed -n "s/^\(export \)\?$2=\"\(.*\)\"\$/\2/p" "$1" | tail -n 1; }
expect_var() {
  local dump=$1 var=$2 want=$3 got
  got=$(var_of "$dump" "$var")
  [ "$got" = "$want" ] || fail "$(basename "$dump"): $var is '$got', expected '$want'"
}
expect_contains() {
  local dump=$1 var=$2 want=$3
  case " $(var_of "$dump" "$var") " in
    *" $want "*) ;;
    *) fail "$(basename "$dump"): $var lacks '$want': $(var_of "$dump" "$var" | cut -c1-300)" ;;
  esac
}

registry_crates=$(awk '
  /^\[\[package\]\]/ { name = ""; version = "" }
  /^name = / { name = $3 }
  /^version = / { version = $3 }
  /^source = "registry\+/ { gsub(/"/, "", name); gsub(/"/, "", version); print name "/" version }' Cargo.lock)
[ "$(echo "$registry_crates" | wc -l)" -gt 100 ] || fail "could not read the crates of Cargo.lock"
license_md5=$(md5sum LICENSE-MIT | cut -d' ' -f1)
srcrev=$(sed -n 's/^SRCREV ?= "\([0-9a-f]\{40\}\)"$/\1/p' meta-diffota/recipes-core/diffota/diffota.inc)
[ -n "$srcrev" ] || fail "diffota.inc pins no SRCREV"

# A Rust recipe of the layer: S where the git fetcher unpacks, every crate of Cargo.lock in
# SRC_URI, the license checksum of the repository's LICENSE-MIT, the pinned commit.
check_rust_recipe() {
  local dump=$1 crate=$2 unpackdir destsuffix
  unpackdir=$(var_of "$dump" UNPACKDIR)
  destsuffix=$(var_of "$dump" BB_GIT_DEFAULT_DESTSUFFIX)
  expect_var "$dump" S "$unpackdir/$destsuffix"
  expect_var "$dump" SRCREV "$srcrev"
  expect_var "$dump" LIC_FILES_CHKSUM "file://LICENSE-MIT;md5=$license_md5"
  local nv
  for nv in $registry_crates; do
    expect_contains "$dump" SRC_URI "crate://crates.io/$nv"
  done
  case "$(var_of "$dump" CARGO_BUILD_FLAGS)" in
    *"-p $crate"*) ;;
    *) fail "$(basename "$dump"): CARGO_BUILD_FLAGS does not build -p $crate" ;;
  esac
}

# The example image and the class: the release image type, its command, the wks file found
# in the layer on this release.
# check_image DUMP WKS APPFS_IMAGE: the example image, a release of rootfs and appfs (the
# appfs example image's deployed file APPFS_IMAGE).
check_image() {
  local dump=$1 wks=$2 appfs_image=$3 fstype
  for fstype in ext4 diffota wic; do expect_contains "$dump" IMAGE_FSTYPES "$fstype"; done
  grep -q '^IMAGE_CMD:diffota=' "$dump" || fail "$(basename "$dump"): no IMAGE_CMD:diffota"
  # The task made from IMAGE_CMD:diffota, with the settings expanded.
  local task
  task=$(sed -n '/^do_image_diffota() {/,/^}/p' "$dump")
  case "$task" in
    *"chunk-server make"*"--key \"$work/keys/release.key\""*) ;;
    *) fail "$(basename "$dump"): do_image_diffota does not run chunk-server make with the signing key" ;;
  esac
  # kas writes layer paths relative to the build directory.
  local wks_found
  # A .wks.in is a template: WKS_TEMPLATE_PATH is the file found, WKS_FULL_PATH where
  # do_write_wks_template writes it expanded.
  wks_found=$(var_of "$dump" WKS_TEMPLATE_PATH)
  if [ -z "$wks_found" ] || [ "$(realpath -m "$wks_found")" != "$layer/files/wic/$wks" ]; then
    fail "$(basename "$dump"): WKS_TEMPLATE_PATH is '$wks_found', expected $layer/files/wic/$wks"
  fi
  expect_contains "$dump" IMAGE_INSTALL diffota
  expect_contains "$dump" IMAGE_INSTALL diffota-config
  expect_contains "$dump" IMAGE_INSTALL kernel-image
  # The factory image: slot A is the file do_image_diffota makes the release from, the data
  # partition the factory data the prefunc stages, every release's fstab gets the mounts.
  local release_image factory_data
  release_image=$(var_of "$dump" DIFFOTA_RELEASE_IMAGE)
  factory_data=$(var_of "$dump" DIFFOTA_FACTORY_DATA)
  case "$release_image" in
    "$(var_of "$dump" IMGDEPLOYDIR)"/*.ext4) ;;
    *) fail "$(basename "$dump"): DIFFOTA_RELEASE_IMAGE is '$release_image'" ;;
  esac
  case "$task" in
    *"diffota_image=\"$release_image\""*) ;;
    *) fail "$(basename "$dump"): do_image_diffota does not make the release from $release_image" ;;
  esac
  local wks_expanded
  # shellcheck disable=SC2016 # the wks file's python call, matched literally
  wks_expanded=$(sed -e "s#\${DIFFOTA_RELEASE_IMAGE}#$release_image#g" -e "s#\${DIFFOTA_FACTORY_DATA}#$factory_data#g" \
    -e "s#\${DEPLOY_DIR_IMAGE}#$(var_of "$dump" DEPLOY_DIR_IMAGE)#g" \
    -e 's#\${@diffota_image_file(d, .appfs.)}#'"$appfs_image#g" "$wks_found")
  # shellcheck disable=SC2016 # a literal ${, left by an unexpanded variable
  if grep -qF '${' <<<"$wks_expanded"; then
    fail "$(basename "$dump"): $wks uses a variable this test does not expand: (see $wks_found)"
  fi
  grep -q -- "--source rawcopy --sourceparams=\"file=$release_image\"" <<<"$wks_expanded" ||
    fail "$(basename "$dump"): $wks does not copy $release_image into slot A"
  grep -q -- "--rootfs-dir=$factory_data " <<<"$wks_expanded" ||
    fail "$(basename "$dump"): $wks does not make the data partition from $factory_data"
  # The slot group: appfs A is the appfs image of the release, as bitbake expands the
  # template (the class's diffota_image_file), and the release is made of both images.
  expect_var "$dump" DIFFOTA_IMAGE_RECIPES "appfs:diffota-appfs-example"
  expect_var "$dump" DIFFOTA_RECIPE_IMAGES "appfs=$appfs_image"
  sed -n '/^_WKS_TEMPLATE="/,/^"$/p' "$dump" | grep -qF -- "--source rawcopy --sourceparams=\\\"file=$appfs_image\\\"" ||
    fail "$(basename "$dump"): the expanded wks template does not copy $appfs_image into appfs A"
  case "$task" in
    *'for diffota_extra in appfs='"$appfs_image"'; do'*) ;;
    *) fail "$(basename "$dump"): do_image_diffota does not add appfs=$appfs_image to the release" ;;
  esac
  expect_contains "$dump" ROOTFS_POSTPROCESS_COMMAND diffota_fstab
  sed -n '/^diffota_factory_data() {/,/^}/p' "$dump" | grep -q "diffota-factory-data.sh" ||
    fail "$(basename "$dump"): no diffota_factory_data function"
}

check_task_graph() {
  local build=$1 step=$2
  grep -q '^"diffota-image-example.do_image_diffota" -> "chunk-server-native.do_populate_sysroot"' \
    "$build/task-depends.dot" || fail "$step: do_image_diffota does not depend on chunk-server-native in the task graph"
  grep -q '"diffota-image-example.do_build"' "$build/task-depends.dot" || fail "$step: no image in the task graph"
  # The factory image is made from the release (slot A) and after it (the factory data).
  grep -q '^"diffota-image-example.do_image_wic" -> "diffota-image-example.do_image_diffota"' \
    "$build/task-depends.dot" || fail "$step: do_image_wic does not come after do_image_diffota"
  grep -q "^\"diffota-image-example.do_image_wic\" -> \"$3.do_deploy\"" "$build/task-depends.dot" ||
    fail "$step: do_image_wic does not depend on $3:do_deploy (the boot files)"
  # The appfs image of the slot group is built before the release and the factory image.
  local task
  for task in do_image_diffota do_image_wic; do
    grep -q "^\"diffota-image-example.$task\" -> \"diffota-appfs-example.do_image_complete\"" "$build/task-depends.dot" ||
      fail "$step: $task does not depend on diffota-appfs-example:do_image_complete"
  done
}

check_dry_run() {
  local file=$logs/$1.log
  grep -q "all succeeded" "$file" || fail "$1: bitbake -n did not resolve every task (log $file)"
}

layer_recipes=$(find "$layer" -name '*.bb' | sed 's#.*/##; s/_[^_]*\.bb$//; s/\.bb$//' | sort)

run_release() {
  local release=$1 top=$work/$1 started=$SECONDS
  local bbdir=$top/bitbake-${bitbake_version[$1]}
  oe=$top/openembedded-core-$release
  mkdir -p "$top"
  tar --zstd -xf "$snapshots/$release.tar.zst" -C "$top"
  [ "$(id -u)" = 0 ] && chown -R "$user:" "$top"
  if [ ! -d "$oe" ] || [ ! -d "$bbdir" ]; then fail "$release snapshot does not hold $oe and $bbdir"; fi
  # oe-init-build-env looks for bitbake beside oe-core.
  as_user ln -s "bitbake-${bitbake_version[$release]}" "$top/bitbake"

  log "$release: nothing but add-layer, qemuarm64: bitbake -p"
  local build=$top/build
  in_build "$build" "$release-setup" true
  as_user sh -c "printf '\nBB_NO_NETWORK = \"1\"\nMACHINE = \"qemuarm64\"\n' >> '$build/conf/local.conf'"
  in_build "$build" "$release-add-layer" bitbake-layers add-layer "$layer"
  in_build "$build" "$release-parse-plain" bitbake -p

  log "$release: README settings (common + U-Boot), qemuarm64"
  as_user sh -c "cat >> '$build/conf/local.conf'" <<EOF
$(readme_block common)
$(readme_block uboot)
EOF
  in_build "$build" "$release-parse-uboot" bitbake -p
  in_build "$build" "$release-show-recipes" bitbake-layers show-recipes
  local recipe
  for recipe in $layer_recipes; do
    grep -A1 "^$recipe:\$" "$logs/$release-show-recipes.log" | grep -q "meta-diffota" ||
      fail "$release: show-recipes does not list $recipe from meta-diffota"
  done
  in_build "$build" "$release-show-appends" bitbake-layers show-appends
  for recipe in grub-efi libubootenv; do
    grep -A1 "^${recipe}[_.]" "$logs/$release-show-appends.log" | grep -q "$layer/recipes-bsp/.*/${recipe}_%.bbappend" ||
      fail "$release: show-appends does not apply ${recipe}_%.bbappend"
  done
  for recipe in diffota chunk-server chunk-server-native diffota-config u-boot-diffota-script libubootenv diffota-image-example diffota-appfs-example; do
    in_build "$build" "$release-env-$recipe" sh -c "bitbake -e $recipe > '$top/env-uboot-$recipe.txt'"
  done
  check_rust_recipe "$top/env-uboot-diffota.txt" diffota
  check_rust_recipe "$top/env-uboot-chunk-server.txt" chunk-server
  check_rust_recipe "$top/env-uboot-chunk-server-native.txt" chunk-server
  expect_var "$top/env-uboot-diffota.txt" DIFFOTA_UNITS "diffota-update.service diffota-update.timer diffota-mark-good.service diffota-health-failed.service diffota-report.service diffota-service.service diffota-provision.service"
  expect_var "$top/env-uboot-diffota-config.txt" DIFFOTA_PUBLIC_KEYS "$work/keys/release.pub"
  expect_var "$top/env-uboot-diffota-config.txt" DIFFOTA_BOOTLOADER uboot
  local mit
  mit=$(var_of "$top/env-uboot-diffota-config.txt" COMMON_LICENSE_DIR)/MIT
  expect_var "$top/env-uboot-diffota-config.txt" LIC_FILES_CHKSUM "file://$mit;md5=$(md5sum "$mit" | cut -d' ' -f1)"
  expect_var "$top/env-uboot-diffota-config.txt" DIFFOTA_HOOKS_TIMEOUT 300
  expect_var "$top/env-uboot-diffota-config.txt" DIFFOTA_HOOKS_POST_COMMIT ""
  expect_var "$top/env-uboot-diffota-config.txt" DIFFOTA_SLOT_GROUP "appfs:/dev/mmcblk0p5:/dev/mmcblk0p6"
  expect_var "$top/env-uboot-diffota-config.txt" DIFFOTA_SLOT_GROUP_MOUNTS "appfs:/app"
  expect_var "$top/env-uboot-diffota-config.txt" SYSTEMD_SERVICE:diffota-config "diffota-mount-appfs.service"
  expect_contains "$top/env-uboot-diffota-config.txt" SRC_URI file://render-group-mounts.sh
  expect_contains "$top/env-uboot-diffota-config.txt" FILES:diffota-config /app
  expect_contains "$top/env-uboot-diffota-config.txt" SRC_URI file://diffota-migrate-data-example
  expect_contains "$top/env-uboot-diffota-config.txt" PACKAGES diffota-config-example-hooks
  expect_var "$top/env-uboot-u-boot-diffota-script.txt" DIFFOTA_UBOOT_ARCH arm64
  expect_var "$top/env-uboot-u-boot-diffota-script.txt" DIFFOTA_KERNEL /boot/Image
  expect_var "$top/env-uboot-u-boot-diffota-script.txt" DIFFOTA_SLOT_B /dev/mmcblk0p3
  expect_contains "$top/env-uboot-u-boot-diffota-script.txt" SRC_URI file://render-boot.sh
  expect_contains "$top/env-uboot-libubootenv.txt" SRC_URI file://fw_env.config
  check_image "$top/env-uboot-diffota-image-example.txt" diffota-uboot-appfs.wks.in \
    "$(var_of "$top/env-uboot-diffota-image-example.txt" DEPLOY_DIR_IMAGE)/diffota-appfs-example-qemuarm64.rootfs.ext4"
  expect_contains "$top/env-uboot-diffota-image-example.txt" IMAGE_INSTALL u-boot-diffota-script
  expect_var "$top/env-uboot-diffota-image-example.txt" DIFFOTA_EXTRA_IMAGES ""
  expect_var "$top/env-uboot-diffota-image-example.txt" DIFFOTA_SINGLE_COPY_IMAGES ""
  in_build "$build" "$release-graph-uboot" sh -c "cd '$build' && bitbake -g diffota-image-example"
  check_task_graph "$build" "$release-graph-uboot" u-boot-diffota-script
  if dry_run_wanted "$release:uboot"; then
    in_build "$build" "$release-dry-run-uboot" bitbake -n diffota-image-example
    check_dry_run "$release-dry-run-uboot"
  fi

  log "$release: through kas, README settings (common + GRUB/EFI), qemux86-64"
  as_user tee "$work/src/offline-$release.yml" >/dev/null <<EOF
# This test's additions: the snapshots instead of git checkouts, no network, its keys.
header:
  version: 14
repos:
  openembedded-core:
    url: null
    path: $oe
  bitbake:
    url: null
    path: $bbdir
local_conf_header:
  test-keys: |
    DIFFOTA_SIGNING_KEY = "$work/keys/release.key"
    DIFFOTA_PUBLIC_KEYS = "$work/keys/release.pub"
  test-offline: |
    BB_NO_NETWORK = "1"
EOF
  local kas_build=$top/build-kas
  local kas_config=$layer/kas/$release.yml:$layer/kas/qemux86-64-efi.yml:$work/src/offline-$release.yml
  in_build "$build" "$release-kas-parse" env KAS_WORK_DIR="$top/kas-work" KAS_BUILD_DIR="$kas_build" \
    "$work/kas-venv/bin/kas" shell "$kas_config" -c "bitbake -p"
  grep -q "^DIFFOTA_BOOTLOADER = \"grub\"" "$kas_build/conf/local.conf" || fail "$release: kas wrote no GRUB settings"
  for recipe in diffota-config grub-efi diffota-image-example; do
    in_build "$kas_build" "$release-kas-env-$recipe" sh -c "bitbake -e $recipe > '$top/env-grub-$recipe.txt'"
  done
  expect_var "$top/env-grub-diffota-config.txt" DIFFOTA_BOOTLOADER grub
  expect_contains "$top/env-grub-grub-efi.txt" SRC_URI file://diffota.cfg
  expect_contains "$top/env-grub-grub-efi.txt" SRC_URI file://grub.cfg.in
  expect_var "$top/env-grub-grub-efi.txt" DIFFOTA_SLOT_A /dev/sda2
  expect_var "$top/env-grub-grub-efi.txt" DIFFOTA_KERNEL /boot/bzImage
  expect_contains "$top/env-grub-diffota-image-example.txt" IMAGE_EFI_BOOT_FILES "grubenv;EFI/BOOT/grubenv"
  check_image "$top/env-grub-diffota-image-example.txt" diffota-efi-appfs.wks.in \
    "$(var_of "$top/env-grub-diffota-image-example.txt" DEPLOY_DIR_IMAGE)/diffota-appfs-example-qemux86-64.rootfs.ext4"
  expect_var "$top/env-grub-diffota-config.txt" DIFFOTA_SLOT_GROUP "appfs:/dev/sda5:/dev/sda6"
  in_build "$kas_build" "$release-kas-graph" sh -c "cd '$kas_build' && bitbake -g diffota-image-example"
  check_task_graph "$kas_build" "$release-kas-graph" grub-efi
  if dry_run_wanted "$release:grub"; then
    in_build "$kas_build" "$release-kas-dry-run" bitbake -n diffota-image-example
    check_dry_run "$release-kas-dry-run"
  fi

  case " $check_layer_releases " in
    *" $release "*) ;;
    *)
      log "$release: yocto-check-layer not run (DIFFOTA_YOCTO_CHECK_LAYER=\"$check_layer_releases\")"
      log "$release: passed in $((SECONDS - started)) s"
      return
      ;;
  esac
  log "$release: yocto-check-layer"
  local check_build=$top/build-check
  in_build "$check_build" "$release-check-setup" true
  as_user sh -c "printf '\nBB_NO_NETWORK = \"1\"\nMACHINE = \"qemuarm64\"\n' >> '$check_build/conf/local.conf'"
  in_build "$check_build" "$release-check-layer" yocto-check-layer --no-auto-dependency \
    --output-log "$logs/$release-check-layer-detail.log" "$layer"
  grep -q "INFO: meta-diffota \.\.\. PASS" "$logs/$release-check-layer.log" ||
    fail "$release: yocto-check-layer did not pass (log $logs/$release-check-layer.log)"
  log "$release: passed in $((SECONDS - started)) s"
}

for release in "${releases[@]}"; do
  run_release "$release"
done
if [ -s "$work/other-warnings.txt" ]; then
  log "warnings not about the layer:"
  sort -u "$work/other-warnings.txt" | sed 's/^/  /'
fi
log "PASS (${releases[*]}): in ${SECONDS} s"
