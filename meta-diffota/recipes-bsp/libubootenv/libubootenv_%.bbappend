# fw_env.config for diffota: where the (redundant) U-Boot environment lives. Override
# DIFFOTA_FW_ENV_CONFIG in your machine layer with your board's offsets.
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
SRC_URI += "file://fw_env.config"

do_install:append() {
    install -d ${D}${sysconfdir}
    install -m 0644 ${UNPACKDIR}/fw_env.config ${D}${sysconfdir}/fw_env.config
}

FILES:${PN}-bin += "${sysconfdir}/fw_env.config"
CONFFILES:${PN}-bin += "${sysconfdir}/fw_env.config"
