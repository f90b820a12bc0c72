SUMMARY = "An example image that updates itself with diffota"
LICENSE = "MIT"

inherit core-image features_check

# The grub-efi and libubootenv additions apply only with this distro feature.
REQUIRED_DISTRO_FEATURES = "diffota systemd"

# The same default as diffota-config: set DIFFOTA_BOOTLOADER in local.conf for both.
DIFFOTA_BOOTLOADER ??= "uboot"

IMAGE_INSTALL:append = " diffota diffota-config"
IMAGE_INSTALL:append = "${@' libubootenv-bin u-boot-diffota-script' if d.getVar('DIFFOTA_BOOTLOADER') == 'uboot' else ''}"
IMAGE_CLASSES += "image_types_diffota"
IMAGE_FSTYPES:append = " ext4 diffota wic"
WKS_FILE ?= "${@'diffota-efi.wks' if d.getVar('DIFFOTA_BOOTLOADER') == 'grub' else 'diffota-uboot.wks'}"

# The U-Boot boot partition (bootimg_partition) holds the kernel and the diffota boot script.
IMAGE_BOOT_FILES ?= "${@'${KERNEL_IMAGETYPE} boot.scr' if d.getVar('DIFFOTA_BOOTLOADER') == 'uboot' else ''}"
do_image_wic[depends] += "${@'u-boot-diffota-script:do_deploy' if d.getVar('DIFFOTA_BOOTLOADER') == 'uboot' else ''}"
