# Applied only with DISTRO_FEATURES "diffota": adding the layer changes no other build.
include ${@bb.utils.contains('DISTRO_FEATURES', 'diffota', 'grub-efi-diffota.inc', '', d)}
