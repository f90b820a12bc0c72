SUMMARY = "diffota device updater: A/B updates that download only the chunks the device lacks"
DESCRIPTION = "Installs releases from a diffota chunk store into the inactive root filesystem \
slot, verifies them, and hands them to the bootloader for a trial boot; a systemd unit \
commits a healthy boot."

require diffota.inc

DIFFOTA_CRATE = "diffota"

inherit systemd

SYSTEMD_SERVICE:${PN} = "diffota-update.timer diffota-mark-good.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# The units come from the fetched source tree (systemd/), the same commit as the binary.
# diffota-health-failed.service and diffota-report.service have no [Install]: health checks
# start the first with OnFailure=, diffota-mark-good.service the second with Wants=.
DIFFOTA_UNITS = "diffota-update.service diffota-update.timer diffota-mark-good.service diffota-health-failed.service diffota-report.service"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    for unit in ${DIFFOTA_UNITS}; do
        install -m 0644 ${S}/systemd/${unit} ${D}${systemd_system_unitdir}/${unit}
    done
    install -d ${D}${localstatedir}/lib/diffota
}

FILES:${PN} += "${systemd_system_unitdir} ${localstatedir}/lib/diffota"
RDEPENDS:${PN} += "diffota-config"
RRECOMMENDS:${PN} += "ca-certificates"
