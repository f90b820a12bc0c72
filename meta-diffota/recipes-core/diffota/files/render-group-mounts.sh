#!/bin/sh
# Renders one systemd unit per entry of DIFFOTA_SLOT_GROUP_MOUNTS (space-separated
# NAME:MOUNTPOINT): diffota-mount-NAME.service mounts, read-only, the running slot group's
# image NAME (its A and B devices from DIFFOTA_SLOT_GROUP) at MOUNTPOINT, before
# diffota-mark-good.service (so post-commit hooks find it) and before multi-user.target.
# Usage: render-group-mounts.sh UNIT_DIR HELPER
#   HELPER: the installed path of diffota-mount-running.
# Used by diffota-config and, the same way, by tests/vm/run.sh.
set -eu
unit_dir=$1
helper=$2
fail() {
    echo "render-group-mounts.sh: $*" >&2
    exit 1
}
mkdir -p "$unit_dir"
set -f
for mount in ${DIFFOTA_SLOT_GROUP_MOUNTS:-}; do
    case "$mount" in
        [a-z0-9_-]*:/*) ;;
        *) fail "DIFFOTA_SLOT_GROUP_MOUNTS names $mount: expected NAME:MOUNTPOINT with an absolute mount point" ;;
    esac
    name=$(printf '%s' "$mount" | cut -d: -f1)
    mountpoint=$(printf '%s' "$mount" | cut -d: -f2-)
    case "$name$mountpoint" in
        *[!A-Za-z0-9_./-]*) fail "DIFFOTA_SLOT_GROUP_MOUNTS names $mount, which has a character a unit line cannot carry as is" ;;
    esac
    slots=""
    for pair in ${DIFFOTA_SLOT_GROUP:-}; do
        if [ "$(printf '%s' "$pair" | cut -d: -f1)" = "$name" ]; then
            slots=$(printf '%s' "$pair" | cut -d: -f2-)
        fi
    done
    [ -n "$slots" ] || fail "DIFFOTA_SLOT_GROUP_MOUNTS names $name, which DIFFOTA_SLOT_GROUP ($DIFFOTA_SLOT_GROUP) does not"
    slot_a=$(printf '%s' "$slots" | cut -d: -f1)
    slot_b=$(printf '%s' "$slots" | cut -d: -f2-)
    cat > "$unit_dir/diffota-mount-$name.service" <<UNIT
[Unit]
Description=diffota: the running slot group's $name at $mountpoint
DefaultDependencies=no
After=local-fs.target
Before=diffota-mark-good.service diffota-provision.service multi-user.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$helper $name $slot_a $slot_b $mountpoint
ExecStop=umount $mountpoint

[Install]
WantedBy=multi-user.target
UNIT
done
set +f
