# diffota A/B boot script for U-Boot, run by boot.scr (files/boot/boot-env.cmd.in). Build: mkimage -A arm64 -T script -C none -d diffota.cmd diffota.scr
#
# Boot variables (kept in the U-Boot environment, written by diffota on Linux):
#   diffota_slot       a or b: the slot to boot
#   upgrade_available  1 while diffota_slot is on trial
#   bootcount          boots of the trial slot so far
#   bootlimit          boots a trial slot gets before falling back (1 to 9)
# Board variables (set by boot.scr before it runs this script):
#   diffota_dev        device for `load`, e.g. "mmc 0"
#   diffota_part_a/b   partition number of each slot's root filesystem
#   diffota_root_a/b   root= for each slot, e.g. /dev/mmcblk0p2
#   diffota_kernel     kernel path inside the root filesystem, e.g. /boot/Image
#   diffota_initrd     initramfs path inside the root filesystem (optional)
#   diffota_fdt        device tree path inside the root filesystem (optional)
#   diffota_args       extra kernel arguments
#   diffota_save_env   how to store the environment (default: saveenv); boards whose U-Boot
#                      keeps no environment (ENV_IS_NOWHERE) import it from a file before
#                      running this script and set this to `env export` + `fatwrite`
# The counting follows U-Boot's bootcount/bootlimit/upgrade_available convention. It steps
# bootcount through its values instead of using setexpr, which many U-Boot builds (Debian's
# qemu-x86_64 among them) leave out.

# [defaults] a missing variable never stops the boot
test -n "${diffota_slot}" || setenv diffota_slot a
test -n "${bootlimit}" || setenv bootlimit 3
test -n "${bootcount}" || setenv bootcount 0
test -n "${diffota_save_env}" || setenv diffota_save_env saveenv

# [trial] count this boot of a trial slot; past the limit, fall back to the other slot
if test "${upgrade_available}" = "1"; then
    if test ${bootcount} -ge ${bootlimit}; then
        echo "diffota: slot ${diffota_slot} did not come up healthy in ${bootlimit} boots; falling back"
        if test "${diffota_slot}" = "a"; then setenv diffota_slot b; else setenv diffota_slot a; fi
        setenv upgrade_available 0
        setenv bootcount 0
    elif test "${bootcount}" = "0"; then setenv bootcount 1
    elif test "${bootcount}" = "1"; then setenv bootcount 2
    elif test "${bootcount}" = "2"; then setenv bootcount 3
    elif test "${bootcount}" = "3"; then setenv bootcount 4
    elif test "${bootcount}" = "4"; then setenv bootcount 5
    elif test "${bootcount}" = "5"; then setenv bootcount 6
    elif test "${bootcount}" = "6"; then setenv bootcount 7
    elif test "${bootcount}" = "7"; then setenv bootcount 8
    else setenv bootcount 9
    fi
    run diffota_save_env
fi

# [boot] load and start the selected slot's kernel
if test "${diffota_slot}" = "b"; then
    setenv diffota_part ${diffota_part_b}
    setenv diffota_root ${diffota_root_b}
else
    setenv diffota_part ${diffota_part_a}
    setenv diffota_root ${diffota_root_a}
fi
echo "diffota: booting slot ${diffota_slot} (try ${bootcount} of ${bootlimit}, upgrade_available=${upgrade_available})"
setenv bootargs "${diffota_args} root=${diffota_root} rootwait ro diffota.slot=${diffota_slot}"
load ${diffota_dev}:${diffota_part} ${kernel_addr_r} ${diffota_kernel}
setenv diffota_rd -
setenv diffota_rd_size 0
if test -n "${diffota_initrd}" && load ${diffota_dev}:${diffota_part} ${ramdisk_addr_r} ${diffota_initrd}; then
    setenv diffota_rd ${ramdisk_addr_r}:${filesize}
    setenv diffota_rd_size ${filesize}
fi
if test -n "${diffota_fdt}" && load ${diffota_dev}:${diffota_part} ${fdt_addr_r} ${diffota_fdt}; then
    booti ${kernel_addr_r} ${diffota_rd} ${fdt_addr_r} || bootz ${kernel_addr_r} ${diffota_rd} ${fdt_addr_r}
elif test "${diffota_rd}" != "-"; then
    zboot ${kernel_addr_r} 0 ${ramdisk_addr_r} ${diffota_rd_size} || booti ${kernel_addr_r} ${diffota_rd} ${fdtcontroladdr}
else
    booti ${kernel_addr_r} - ${fdtcontroladdr} || bootz ${kernel_addr_r} - ${fdtcontroladdr} || zboot ${kernel_addr_r}
fi
echo "diffota: slot ${diffota_slot} did not boot; resetting"
reset
