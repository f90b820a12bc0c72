SUMMARY = "U-Boot boot script for diffota A/B slots with boot counting"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

DEPENDS = "u-boot-mkimage-native"
SRC_URI = "file://boot.cmd"

inherit deploy

DIFFOTA_UBOOT_ARCH ??= "${@'arm64' if d.getVar('TARGET_ARCH') == 'aarch64' else d.getVar('TARGET_ARCH')}"

do_compile() {
    uboot-mkimage -A ${DIFFOTA_UBOOT_ARCH} -T script -C none -n "diffota boot script" \
        -d ${UNPACKDIR}/boot.cmd ${B}/boot.scr
}

do_install() {
    install -d ${D}/boot
    install -m 0644 ${B}/boot.scr ${D}/boot/boot.scr
}

do_deploy() {
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
}
addtask deploy after do_compile before do_build

FILES:${PN} = "/boot/boot.scr"
PACKAGE_ARCH = "${MACHINE_ARCH}"
