SUMMARY = "diffota device updater: A/B updates that download only the chunks the device lacks"
DESCRIPTION = "Installs releases from a diffota chunk store into the inactive root filesystem \
slot, verifies them, and hands them to the bootloader for a trial boot; a systemd unit \
commits a healthy boot."

require diffota.inc

DIFFOTA_CRATE = "diffota"

inherit systemd useradd

SYSTEMD_SERVICE:${PN} = "diffota-update.timer diffota-mark-good.service diffota-provision.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# The units come from the fetched source tree (systemd/), the same commit as the binary.
# diffota-health-failed.service and diffota-report.service have no [Install]: health checks
# start the first with OnFailure=, diffota-mark-good.service the second with Wants=.
# diffota-service.service (the D-Bus API) is started by D-Bus activation on first use.
# diffota-provision.service records the factory release once (the factory image's /data).
DIFFOTA_UNITS = "diffota-update.service diffota-update.timer diffota-mark-good.service diffota-health-failed.service diffota-report.service diffota-service.service diffota-provision.service"

# Besides root, members of this group may call the D-Bus API (org.diffota.Updater1).
DIFFOTA_DBUS_GROUP ??= "diffota"
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system ${DIFFOTA_DBUS_GROUP}"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    for unit in ${DIFFOTA_UNITS}; do
        install -m 0644 ${S}/systemd/${unit} ${D}${systemd_system_unitdir}/${unit}
    done
    install -d ${D}${localstatedir}/lib/diffota
    # The D-Bus API: policy (with the configured group), activation, introspection.
    install -d ${D}${datadir}/dbus-1/system.d ${D}${datadir}/dbus-1/system-services \
        ${D}${datadir}/dbus-1/interfaces
    sed -e 's|<policy group="diffota">|<policy group="${DIFFOTA_DBUS_GROUP}">|' \
        ${S}/dbus/org.diffota.Updater1.conf > ${D}${datadir}/dbus-1/system.d/org.diffota.Updater1.conf
    chmod 0644 ${D}${datadir}/dbus-1/system.d/org.diffota.Updater1.conf
    install -m 0644 ${S}/dbus/org.diffota.Updater1.service ${D}${datadir}/dbus-1/system-services/
    install -m 0644 ${S}/dbus/org.diffota.Updater1.xml ${D}${datadir}/dbus-1/interfaces/
}

FILES:${PN} += "${systemd_system_unitdir} ${localstatedir}/lib/diffota ${datadir}/dbus-1"
RDEPENDS:${PN} += "diffota-config"
RRECOMMENDS:${PN} += "ca-certificates dbus"
