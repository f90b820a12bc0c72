# diffota's A/B fragment and an initial environment block for GRUB (EFI).
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
SRC_URI += "file://diffota.cfg"

DEPENDS += "grub-native"

do_deploy:append:class-target() {
    install -m 0644 ${UNPACKDIR}/diffota.cfg ${DEPLOYDIR}/diffota.cfg
    grub-editenv ${DEPLOYDIR}/grubenv create
    grub-editenv ${DEPLOYDIR}/grubenv set diffota_slot=a upgrade_available=0 bootcount=0 bootlimit=${DIFFOTA_BOOT_ATTEMPTS}
}

DIFFOTA_BOOT_ATTEMPTS ??= "3"
