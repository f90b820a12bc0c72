SUMMARY = "An example image that updates itself with diffota"
LICENSE = "MIT"

inherit core-image features_check

# The grub-efi and libubootenv additions apply only with this distro feature.
REQUIRED_DISTRO_FEATURES = "diffota systemd"

# The same default as diffota-config: set DIFFOTA_BOOTLOADER in local.conf for both.
DIFFOTA_BOOTLOADER ??= "uboot"

# Each slot boots its own kernel: /boot/${KERNEL_IMAGETYPE} inside the root file system.
IMAGE_INSTALL:append = " diffota diffota-config kernel-image"
IMAGE_INSTALL:append = "${@' libubootenv-bin u-boot-diffota-script' if d.getVar('DIFFOTA_BOOTLOADER') == 'uboot' else ''}"
IMAGE_CLASSES += "image_types_diffota"
IMAGE_FSTYPES:append = " ext4 diffota wic"
# A slot group of two images: the root file system and an application partition, released
# together (one signed manifest), installed into their A/B pairs together. Devices need the
# pair in their config (diffota-config's DIFFOTA_SLOT_GROUP, the layer README's settings);
# set DIFFOTA_IMAGE_RECIPES = "" and a wks file without appfs for one image.
DIFFOTA_IMAGE_RECIPES ?= "appfs:diffota-appfs-example"
WKS_FILE ?= "${@'diffota-efi-appfs.wks.in' if d.getVar('DIFFOTA_BOOTLOADER') == 'grub' else 'diffota-uboot-appfs.wks.in'}"

# The boot partition as the layer ships it. U-Boot (bootimg_partition): boot.scr,
# diffota.scr and the initial uboot.env from u-boot-diffota-script. GRUB (bootimg_efi): the
# wks file's --configfile is diffota-grub.cfg; diffota.cfg and grubenv go beside it.
IMAGE_BOOT_FILES ?= "${@'boot.scr diffota.scr uboot.env' if d.getVar('DIFFOTA_BOOTLOADER') == 'uboot' else ''}"
IMAGE_EFI_BOOT_FILES:append = "${@' diffota.cfg;EFI/BOOT/diffota.cfg grubenv;EFI/BOOT/grubenv' if d.getVar('DIFFOTA_BOOTLOADER') == 'grub' else ''}"
do_image_wic[depends] += "${@'u-boot-diffota-script:do_deploy' if d.getVar('DIFFOTA_BOOTLOADER') == 'uboot' else ''}"
do_image_wic[depends] += "${@'grub-efi:do_deploy' if d.getVar('DIFFOTA_BOOTLOADER') == 'grub' else ''}"
