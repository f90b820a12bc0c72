SUMMARY = "U-Boot boot scripts and initial environment for diffota A/B slots with boot counting"
DESCRIPTION = "boot.scr (the board part: where the slots are, the environment kept in \
uboot.env on the boot partition), diffota.scr (the A/B logic) and the initial uboot.env, \
deployed for wic and installed in /boot."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

DEPENDS = "u-boot-mkimage-native u-boot-mkenvimage-native"
SRC_URI = "file://diffota.cmd file://boot-env.cmd.in"

inherit deploy diffota-boot

DIFFOTA_UBOOT_ARCH ??= "${@'arm64' if d.getVar('TARGET_ARCH') == 'aarch64' else d.getVar('TARGET_ARCH')}"

do_compile() {
    diffota_render_boot ${UNPACKDIR}/boot-env.cmd.in ${B}/boot.cmd
    uboot-mkimage -A ${DIFFOTA_UBOOT_ARCH} -T script -C none -n "diffota board script" \
        -d ${B}/boot.cmd ${B}/boot.scr
    uboot-mkimage -A ${DIFFOTA_UBOOT_ARCH} -T script -C none -n "diffota boot script" \
        -d ${UNPACKDIR}/diffota.cmd ${B}/diffota.scr
    printf 'diffota_slot=a\nupgrade_available=0\nbootcount=0\nbootlimit=%s\n' "${DIFFOTA_BOOT_ATTEMPTS}" > ${B}/uboot-env.txt
    uboot-mkenvimage -s ${DIFFOTA_UBOOT_ENV_SIZE} -o ${B}/uboot.env ${B}/uboot-env.txt
}

do_install() {
    install -d ${D}/boot
    install -m 0644 ${B}/boot.scr ${B}/diffota.scr ${D}/boot/
}

do_deploy() {
    install -m 0644 ${B}/boot.scr ${B}/diffota.scr ${B}/uboot.env ${DEPLOYDIR}/
}
addtask deploy after do_compile before do_build

FILES:${PN} = "/boot/boot.scr /boot/diffota.scr"
PACKAGE_ARCH = "${MACHINE_ARCH}"
