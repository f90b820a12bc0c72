#!/bin/sh
# Renders diffota.toml.in into /etc/diffota.toml and installs the public keys.
# Usage: render-config.sh TEMPLATE OUT_CONFIG KEY_DIR KEY_INSTALL_DIR
# Every DIFFOTA_* value comes from the environment; DIFFOTA_PUBLIC_KEYS is a space-separated
# list of public key files (a key rotation ships two).
set -eu

template=$1
out=$2
key_dir=$3
key_install_dir=$4

fail() {
    echo "render-config.sh: $*" >&2
    exit 1
}

for name in DIFFOTA_SERVER_URL DIFFOTA_CHANNEL DIFFOTA_COMPATIBLE DIFFOTA_PUBLIC_KEYS \
    DIFFOTA_STATE_DIR DIFFOTA_DEVICE_ID_FILE DIFFOTA_SLOT_A DIFFOTA_SLOT_B \
    DIFFOTA_BOOTLOADER DIFFOTA_BOOT_ATTEMPTS DIFFOTA_GRUBENV; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || fail "$name is not set"
done

case "$DIFFOTA_BOOTLOADER" in
    uboot|grub|custom|none) ;;
    *) fail "DIFFOTA_BOOTLOADER=$DIFFOTA_BOOTLOADER is not one of uboot, grub, custom, none" ;;
esac
case "$DIFFOTA_BOOT_ATTEMPTS" in
    [1-9]) ;;
    *) fail "DIFFOTA_BOOT_ATTEMPTS=$DIFFOTA_BOOT_ATTEMPTS is not 1 to 9" ;;
esac

mkdir -p "$key_dir"
paths=""
for key in $DIFFOTA_PUBLIC_KEYS; do
    [ -f "$key" ] || fail "public key $key does not exist"
    name=$(basename "$key")
    cp "$key" "$key_dir/$name"
    chmod 0644 "$key_dir/$name"
    paths="$paths${paths:+, }\"$key_install_dir/$name\""
done

# DIFFOTA_HOOKS_<POINT>: space-separated absolute paths, rendered as a TOML list.
hook_list() {
    set -f
    list=""
    for hook in $2; do
        case "$hook" in
            /*) ;;
            *) fail "$1 names $hook, which is not an absolute path" ;;
        esac
        case "$hook" in
            *\"*|*\\*|*@*|*\|*) fail "$1 names $hook, which has a character that cannot go into the config" ;;
        esac
        list="$list${list:+, }\"$hook\""
    done
    printf '%s' "$list"
}
pre_install=$(hook_list DIFFOTA_HOOKS_PRE_INSTALL "${DIFFOTA_HOOKS_PRE_INSTALL:-}")
post_write=$(hook_list DIFFOTA_HOOKS_POST_WRITE "${DIFFOTA_HOOKS_POST_WRITE:-}")
pre_arm=$(hook_list DIFFOTA_HOOKS_PRE_ARM "${DIFFOTA_HOOKS_PRE_ARM:-}")
post_commit=$(hook_list DIFFOTA_HOOKS_POST_COMMIT "${DIFFOTA_HOOKS_POST_COMMIT:-}")
post_revert=$(hook_list DIFFOTA_HOOKS_POST_REVERT "${DIFFOTA_HOOKS_POST_REVERT:-}")
hooks_timeout=${DIFFOTA_HOOKS_TIMEOUT:-300}
# DIFFOTA_SLOT_GROUP: the slot group's other A/B pairs, space-separated NAME:SLOT_A:SLOT_B
# (e.g. appfs:/dev/mmcblk0p5:/dev/mmcblk0p6), rendered as [images.NAME] tables.
slot_group=""
set -f
for pair in ${DIFFOTA_SLOT_GROUP:-}; do
    case "$pair" in
        *\"*|*\\*) fail "DIFFOTA_SLOT_GROUP names $pair, which has a character that cannot go into the config" ;;
        [a-z0-9_-]*:/*:/*) ;;
        *) fail "DIFFOTA_SLOT_GROUP names $pair: expected NAME:SLOT_A:SLOT_B with absolute slot paths" ;;
    esac
    group_name=${pair%%:*}
    group_slots=${pair#*:}
    slot_group="$slot_group
[images.$group_name]
a = \"${group_slots%%:*}\"
b = \"${group_slots#*:}\"
"
done
set +f
case "$hooks_timeout" in
    ''|*[!0-9]*) fail "DIFFOTA_HOOKS_TIMEOUT=$hooks_timeout is not a number of seconds" ;;
esac

# Values go into TOML strings: refuse characters that would need escaping.
for name in DIFFOTA_SERVER_URL DIFFOTA_CHANNEL DIFFOTA_COMPATIBLE DIFFOTA_SLOT_A DIFFOTA_SLOT_B; do
    eval "value=\${$name}"
    case "$value" in
        *\"*|*\\*|*@*@*) fail "$name contains a character that cannot go into the config: $value" ;;
    esac
done

sed -e "s|@DIFFOTA_SERVER_URL@|$DIFFOTA_SERVER_URL|" \
    -e "s|@DIFFOTA_CHANNEL@|$DIFFOTA_CHANNEL|" \
    -e "s|@DIFFOTA_COMPATIBLE@|$DIFFOTA_COMPATIBLE|" \
    -e "s|@DIFFOTA_PUBLIC_KEY_PATHS@|$paths|" \
    -e "s|@DIFFOTA_STATE_DIR@|$DIFFOTA_STATE_DIR|" \
    -e "s|@DIFFOTA_DEVICE_ID_FILE@|$DIFFOTA_DEVICE_ID_FILE|" \
    -e "s|@DIFFOTA_SLOT_A@|$DIFFOTA_SLOT_A|" \
    -e "s|@DIFFOTA_SLOT_B@|$DIFFOTA_SLOT_B|" \
    -e "s|@DIFFOTA_BOOTLOADER@|$DIFFOTA_BOOTLOADER|" \
    -e "s|@DIFFOTA_BOOT_ATTEMPTS@|$DIFFOTA_BOOT_ATTEMPTS|" \
    -e "s|@DIFFOTA_GRUBENV@|$DIFFOTA_GRUBENV|" \
    -e "s|@DIFFOTA_HOOKS_PRE_INSTALL@|$pre_install|" \
    -e "s|@DIFFOTA_HOOKS_POST_WRITE@|$post_write|" \
    -e "s|@DIFFOTA_HOOKS_PRE_ARM@|$pre_arm|" \
    -e "s|@DIFFOTA_HOOKS_POST_COMMIT@|$post_commit|" \
    -e "s|@DIFFOTA_HOOKS_POST_REVERT@|$post_revert|" \
    -e "s|@DIFFOTA_HOOKS_TIMEOUT@|$hooks_timeout|" \
    "$template" > "$out"
printf '%s' "$slot_group" >> "$out"
if grep -q '@DIFFOTA_' "$out"; then
    fail "unrendered placeholders left in $out"
fi
