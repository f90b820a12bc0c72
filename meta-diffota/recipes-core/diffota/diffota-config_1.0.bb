SUMMARY = "diffota device configuration (/etc/diffota.toml), trusted public keys, example hooks"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://diffota.toml.in file://render-config.sh file://diffota-migrate-data-example \
    file://render-group-mounts.sh file://diffota-mount-running"

# Where the device fetches releases from, and what it accepts.
DIFFOTA_SERVER_URL ??= "https://updates.example.com/store"
DIFFOTA_CHANNEL ??= "stable"
DIFFOTA_COMPATIBLE ??= "${MACHINE}"
# Space-separated minisign public key files (two during a key rotation).
DIFFOTA_PUBLIC_KEYS ??= ""
DIFFOTA_STATE_DIR ??= "/var/lib/diffota"
DIFFOTA_DEVICE_ID_FILE ??= "/etc/machine-id"
DIFFOTA_SLOT_A ??= "/dev/mmcblk0p2"
DIFFOTA_SLOT_B ??= "/dev/mmcblk0p3"
DIFFOTA_BOOTLOADER ??= "uboot"
DIFFOTA_BOOT_ATTEMPTS ??= "3"
DIFFOTA_GRUBENV ??= "/boot/EFI/BOOT/grubenv"
# Hooks ([hooks] in diffota.toml): space-separated absolute paths of executables per point,
# run in order (the top-level README, "Hooks"). The executables come from your own recipes;
# ${PN}-example-hooks ships diffota-migrate-data-example.
DIFFOTA_HOOKS_PRE_INSTALL ??= ""
DIFFOTA_HOOKS_POST_WRITE ??= ""
DIFFOTA_HOOKS_PRE_ARM ??= ""
DIFFOTA_HOOKS_POST_COMMIT ??= ""
DIFFOTA_HOOKS_POST_REVERT ??= ""
DIFFOTA_HOOKS_TIMEOUT ??= "300"
# The slot group's other A/B pairs ([images.NAME]), switched with the root file system:
# space-separated NAME:SLOT_A:SLOT_B, e.g. "appfs:/dev/mmcblk0p5:/dev/mmcblk0p6".
DIFFOTA_SLOT_GROUP ??= ""
# Images of the slot group to mount from the running group: space-separated NAME:MOUNTPOINT
# (e.g. "appfs:/app"). Each gets diffota-mount-NAME.service, which mounts the running group's
# device read-only before diffota-mark-good.service (so post-commit hooks find it).
DIFFOTA_SLOT_GROUP_MOUNTS ??= ""

inherit systemd
SYSTEMD_SERVICE:${PN} = "${@' '.join('diffota-mount-%s.service' % m.split(':')[0] for m in (d.getVar('DIFFOTA_SLOT_GROUP_MOUNTS') or '').split())}"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# Without trusted keys the device would accept no release. Checked when the recipe is built,
# not while parsing: adding the layer must not break builds that do not install diffota.
python diffota_config_check_keys() {
    keys = (d.getVar('DIFFOTA_PUBLIC_KEYS') or '').split()
    if not keys:
        bb.fatal("DIFFOTA_PUBLIC_KEYS is not set: give the release public key file(s) (minisign .pub) in local.conf")
    for key in keys:
        if not os.path.isfile(key):
            bb.fatal("DIFFOTA_PUBLIC_KEYS names %s, which does not exist" % key)
}
do_install[prefuncs] += "diffota_config_check_keys"

do_install[file-checksums] += "${@' '.join('%s:True' % k for k in (d.getVar('DIFFOTA_PUBLIC_KEYS') or '').split())}"
do_install[vardeps] += "DIFFOTA_SERVER_URL DIFFOTA_CHANNEL DIFFOTA_COMPATIBLE DIFFOTA_PUBLIC_KEYS DIFFOTA_STATE_DIR \
    DIFFOTA_DEVICE_ID_FILE DIFFOTA_SLOT_A DIFFOTA_SLOT_B DIFFOTA_BOOTLOADER DIFFOTA_BOOT_ATTEMPTS DIFFOTA_GRUBENV \
    DIFFOTA_HOOKS_PRE_INSTALL DIFFOTA_HOOKS_POST_WRITE DIFFOTA_HOOKS_PRE_ARM DIFFOTA_HOOKS_POST_COMMIT \
    DIFFOTA_HOOKS_POST_REVERT DIFFOTA_HOOKS_TIMEOUT DIFFOTA_SLOT_GROUP DIFFOTA_SLOT_GROUP_MOUNTS"

do_install() {
    install -d ${D}${sysconfdir}
    DIFFOTA_SERVER_URL="${DIFFOTA_SERVER_URL}" DIFFOTA_CHANNEL="${DIFFOTA_CHANNEL}" \
    DIFFOTA_COMPATIBLE="${DIFFOTA_COMPATIBLE}" DIFFOTA_PUBLIC_KEYS="${DIFFOTA_PUBLIC_KEYS}" \
    DIFFOTA_STATE_DIR="${DIFFOTA_STATE_DIR}" DIFFOTA_DEVICE_ID_FILE="${DIFFOTA_DEVICE_ID_FILE}" \
    DIFFOTA_SLOT_A="${DIFFOTA_SLOT_A}" DIFFOTA_SLOT_B="${DIFFOTA_SLOT_B}" \
    DIFFOTA_BOOTLOADER="${DIFFOTA_BOOTLOADER}" DIFFOTA_BOOT_ATTEMPTS="${DIFFOTA_BOOT_ATTEMPTS}" \
    DIFFOTA_GRUBENV="${DIFFOTA_GRUBENV}" \
    DIFFOTA_HOOKS_PRE_INSTALL="${DIFFOTA_HOOKS_PRE_INSTALL}" DIFFOTA_HOOKS_POST_WRITE="${DIFFOTA_HOOKS_POST_WRITE}" \
    DIFFOTA_HOOKS_PRE_ARM="${DIFFOTA_HOOKS_PRE_ARM}" DIFFOTA_HOOKS_POST_COMMIT="${DIFFOTA_HOOKS_POST_COMMIT}" \
    DIFFOTA_HOOKS_POST_REVERT="${DIFFOTA_HOOKS_POST_REVERT}" DIFFOTA_HOOKS_TIMEOUT="${DIFFOTA_HOOKS_TIMEOUT}" \
    DIFFOTA_SLOT_GROUP="${DIFFOTA_SLOT_GROUP}" \
        sh ${UNPACKDIR}/render-config.sh ${UNPACKDIR}/diffota.toml.in ${D}${sysconfdir}/diffota.toml \
            ${D}${sysconfdir}/diffota/keys ${sysconfdir}/diffota/keys
    install -d ${D}${libexecdir}/diffota/hooks
    install -m 0755 ${UNPACKDIR}/diffota-migrate-data-example ${D}${libexecdir}/diffota/hooks/
    if [ -n "${DIFFOTA_SLOT_GROUP_MOUNTS}" ]; then
        install -m 0755 ${UNPACKDIR}/diffota-mount-running ${D}${libexecdir}/diffota/
        # The mount points exist in the image (its root file system may be read-only).
        for mount in ${DIFFOTA_SLOT_GROUP_MOUNTS}; do
            install -d ${D}$(echo "$mount" | cut -d: -f2-)
        done
        DIFFOTA_SLOT_GROUP="${DIFFOTA_SLOT_GROUP}" DIFFOTA_SLOT_GROUP_MOUNTS="${DIFFOTA_SLOT_GROUP_MOUNTS}" \
            sh ${UNPACKDIR}/render-group-mounts.sh ${D}${systemd_system_unitdir} \
                ${libexecdir}/diffota/diffota-mount-running
    fi
}

# The example post-commit hook (a /data migration safe against power cuts), only where an
# image asks for it: IMAGE_INSTALL:append = " diffota-config-example-hooks".
PACKAGES =+ "${PN}-example-hooks"
FILES:${PN}-example-hooks = "${libexecdir}/diffota/hooks/diffota-migrate-data-example"
RDEPENDS:${PN}-example-hooks = "${PN}"

FILES:${PN} = "${sysconfdir}/diffota.toml ${sysconfdir}/diffota \
    ${libexecdir}/diffota/diffota-mount-running ${systemd_system_unitdir} \
    ${@' '.join(m.split(':', 1)[1] for m in (d.getVar('DIFFOTA_SLOT_GROUP_MOUNTS') or '').split() if ':' in m)}"
CONFFILES:${PN} = "${sysconfdir}/diffota.toml"
