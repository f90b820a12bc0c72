# The boot-side settings shared by the layer's boot recipes (the grub-efi bbappend and
# u-boot-diffota-script), and the render step that turns files/boot/*.in into the files the
# bootloader reads. The defaults fit the example wks files (boot partition 1, slots 2 and 3)
# on the layer's two example machines; set them in your machine or local configuration.

# root= of each slot (shared with diffota-config, which writes them into /etc/diffota.toml).
DIFFOTA_SLOT_A ??= "/dev/mmcblk0p2"
DIFFOTA_SLOT_B ??= "/dev/mmcblk0p3"
# The kernel (and optional initramfs, device tree) inside each slot's root filesystem: every
# slot boots its own kernel. The example image installs kernel-image for this.
DIFFOTA_KERNEL ??= "/boot/${KERNEL_IMAGETYPE}"
DIFFOTA_INITRD ??= ""
DIFFOTA_FDT ??= ""
DIFFOTA_KERNEL_ARGS ??= ""
DIFFOTA_BOOT_ATTEMPTS ??= "3"
# GRUB: the devices of the two slots.
DIFFOTA_GRUB_PART_A ??= "(hd0,gpt2)"
DIFFOTA_GRUB_PART_B ??= "(hd0,gpt3)"
# U-Boot: the device, the boot partition (boot.scr, diffota.scr, uboot.env), the slots' partitions.
DIFFOTA_UBOOT_DEV ??= "mmc 0"
DIFFOTA_UBOOT_BOOT_PART ??= "1"
DIFFOTA_UBOOT_PART_A ??= "2"
DIFFOTA_UBOOT_PART_B ??= "3"
DIFFOTA_UBOOT_ENV_SIZE ??= "0x4000"

DIFFOTA_BOOT_VARS = "DIFFOTA_SLOT_A DIFFOTA_SLOT_B DIFFOTA_KERNEL DIFFOTA_INITRD DIFFOTA_FDT \
    DIFFOTA_KERNEL_ARGS DIFFOTA_BOOT_ATTEMPTS DIFFOTA_GRUB_PART_A DIFFOTA_GRUB_PART_B \
    DIFFOTA_UBOOT_DEV DIFFOTA_UBOOT_BOOT_PART DIFFOTA_UBOOT_PART_A DIFFOTA_UBOOT_PART_B \
    DIFFOTA_UBOOT_ENV_SIZE"

FILESEXTRAPATHS:prepend := "${DIFFOTA_LAYERDIR}/files/boot:"
SRC_URI += "file://render-boot.sh"

# diffota_render_boot TEMPLATE OUT: files/boot/render-boot.sh with the settings above.
diffota_render_boot() {
    DIFFOTA_SLOT_A="${DIFFOTA_SLOT_A}" DIFFOTA_SLOT_B="${DIFFOTA_SLOT_B}" \
    DIFFOTA_KERNEL="${DIFFOTA_KERNEL}" DIFFOTA_INITRD="${DIFFOTA_INITRD}" DIFFOTA_FDT="${DIFFOTA_FDT}" \
    DIFFOTA_KERNEL_ARGS="${DIFFOTA_KERNEL_ARGS}" DIFFOTA_BOOT_ATTEMPTS="${DIFFOTA_BOOT_ATTEMPTS}" \
    DIFFOTA_GRUB_PART_A="${DIFFOTA_GRUB_PART_A}" DIFFOTA_GRUB_PART_B="${DIFFOTA_GRUB_PART_B}" \
    DIFFOTA_UBOOT_DEV="${DIFFOTA_UBOOT_DEV}" DIFFOTA_UBOOT_BOOT_PART="${DIFFOTA_UBOOT_BOOT_PART}" \
    DIFFOTA_UBOOT_PART_A="${DIFFOTA_UBOOT_PART_A}" DIFFOTA_UBOOT_PART_B="${DIFFOTA_UBOOT_PART_B}" \
    DIFFOTA_UBOOT_ENV_SIZE="${DIFFOTA_UBOOT_ENV_SIZE}" \
        sh ${UNPACKDIR}/render-boot.sh "$1" "$2"
}
diffota_render_boot[vardeps] += "${DIFFOTA_BOOT_VARS}"
