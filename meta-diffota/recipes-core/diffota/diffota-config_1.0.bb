SUMMARY = "diffota device configuration (/etc/diffota.toml) and trusted public keys"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://diffota.toml.in file://render-config.sh"

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
    DIFFOTA_DEVICE_ID_FILE DIFFOTA_SLOT_A DIFFOTA_SLOT_B DIFFOTA_BOOTLOADER DIFFOTA_BOOT_ATTEMPTS DIFFOTA_GRUBENV"

do_install() {
    install -d ${D}${sysconfdir}
    DIFFOTA_SERVER_URL="${DIFFOTA_SERVER_URL}" DIFFOTA_CHANNEL="${DIFFOTA_CHANNEL}" \
    DIFFOTA_COMPATIBLE="${DIFFOTA_COMPATIBLE}" DIFFOTA_PUBLIC_KEYS="${DIFFOTA_PUBLIC_KEYS}" \
    DIFFOTA_STATE_DIR="${DIFFOTA_STATE_DIR}" DIFFOTA_DEVICE_ID_FILE="${DIFFOTA_DEVICE_ID_FILE}" \
    DIFFOTA_SLOT_A="${DIFFOTA_SLOT_A}" DIFFOTA_SLOT_B="${DIFFOTA_SLOT_B}" \
    DIFFOTA_BOOTLOADER="${DIFFOTA_BOOTLOADER}" DIFFOTA_BOOT_ATTEMPTS="${DIFFOTA_BOOT_ATTEMPTS}" \
    DIFFOTA_GRUBENV="${DIFFOTA_GRUBENV}" \
        sh ${UNPACKDIR}/render-config.sh ${UNPACKDIR}/diffota.toml.in ${D}${sysconfdir}/diffota.toml \
            ${D}${sysconfdir}/diffota/keys ${sysconfdir}/diffota/keys
}

FILES:${PN} = "${sysconfdir}/diffota.toml ${sysconfdir}/diffota"
CONFFILES:${PN} = "${sysconfdir}/diffota.toml"
