# Image type "diffota": turns the root filesystem image into a release of a diffota store.
#
#   IMAGE_CLASSES += "image_types_diffota"
#   IMAGE_FSTYPES += "diffota"
#   DIFFOTA_SIGNING_KEY = "/secure/path/release.key"     (required; minisign secret key)
#
# The store lands in ${DIFFOTA_STORE} (default ${DEPLOY_DIR_IMAGE}/diffota-store): upload
# its packs/ and releases/ to the server, then publish a channel with `chunk-server channel set`.
# The release gets delta frames against the releases the fleet runs, found in that store (the
# three newest older releases, and what its channels point at); keep the store between builds, or
# sync the published one down before the build (meta-diffota/README.md, "Delta frames").

DIFFOTA_ROOTFS_FSTYPE ??= "ext4"
DIFFOTA_STORE ??= "${DEPLOY_DIR_IMAGE}/diffota-store"
DIFFOTA_VERSION ??= "${DISTRO_VERSION}-${DATETIME}"
DIFFOTA_VERSION[vardepsexclude] += "DATETIME"
DIFFOTA_COMPATIBLE ??= "${MACHINE}"
DIFFOTA_IMAGE_NAME ??= "rootfs"
DIFFOTA_SIGNING_KEY ??= ""
DIFFOTA_SIGNING_KEY_PASSWORD_FILE ??= ""
DIFFOTA_ZSTD_LEVEL ??= "12"
DIFFOTA_MAKE_ARGS ??= ""
# A release of several images: the root file system (DIFFOTA_IMAGE_NAME) and other images of
# the build, space-separated NAME=FILE, e.g.
#   DIFFOTA_EXTRA_IMAGES = "appfs=${DEPLOY_DIR_IMAGE}/app-image-${MACHINE}.rootfs.erofs"
#   do_image_diffota[depends] += "app-image:do_image_complete"
# Devices install them into their slot groups ([images.NAME] in diffota.toml). Single-copy
# images (a bootloader, a second processor's firmware; [single_copy.NAME] on the device) go
# in DIFFOTA_SINGLE_COPY_IMAGES the same way. With either set, the release gets a signed
# manifest (releases/<version>/release.json) that channels point at.
DIFFOTA_EXTRA_IMAGES ??= ""
DIFFOTA_SINGLE_COPY_IMAGES ??= ""
# The same from image recipes of the build, with their dependencies made for you:
# space-separated NAME:RECIPE or NAME:RECIPE:FSTYPE (default ext4), e.g.
#   DIFFOTA_IMAGE_RECIPES = "appfs:diffota-appfs-example"
# The image file is the recipe's deployed link, ${DEPLOY_DIR_IMAGE}/RECIPE${IMAGE_MACHINE_SUFFIX}${IMAGE_NAME_SUFFIX}.FSTYPE;
# wks files name it with ${@diffota_image_file(d, 'NAME')}.
DIFFOTA_IMAGE_RECIPES ??= ""
DIFFOTA_RECIPE_IMAGES = "${@' '.join('%s=%s' % (name, path) for name, recipe, path in diffota_image_recipes(d))}"
do_image_diffota[depends] += "${@' '.join('%s:do_image_complete' % recipe for name, recipe, path in diffota_image_recipes(d))}"
do_image_wic[depends] += "${@' '.join('%s:do_image_complete' % recipe for name, recipe, path in diffota_image_recipes(d))}"

def diffota_image_recipes(d):
    """(name, recipe, image file) for each entry of DIFFOTA_IMAGE_RECIPES."""
    images = []
    for entry in (d.getVar('DIFFOTA_IMAGE_RECIPES') or '').split():
        parts = entry.split(':')
        if len(parts) not in (2, 3) or not all(parts):
            bb.fatal("DIFFOTA_IMAGE_RECIPES names %s: expected NAME:RECIPE or NAME:RECIPE:FSTYPE" % entry)
        fstype = parts[2] if len(parts) == 3 else 'ext4'
        path = '%s/%s%s%s.%s' % (d.getVar('DEPLOY_DIR_IMAGE'), parts[1],
                                 d.getVar('IMAGE_MACHINE_SUFFIX') or '',
                                 d.getVar('IMAGE_NAME_SUFFIX') or '', fstype)
        images.append((parts[0], parts[1], path))
    return images

def diffota_image_file(d, name):
    """The file of slot image NAME of the release (DIFFOTA_EXTRA_IMAGES or DIFFOTA_IMAGE_RECIPES),
    for wks files. Parsing never fails on it (WKS_FILE may be set for every image of the build):
    an image the release lacks gives a marker that diffota_check_wks stops the wic task on."""
    for entry in (d.getVar('DIFFOTA_EXTRA_IMAGES') or '').split() + (d.getVar('DIFFOTA_RECIPE_IMAGES') or '').split():
        if entry.split('=', 1)[0] == name:
            return entry.split('=', 1)[1]
    return 'diffota-image-%s-is-not-in-the-release' % name

python diffota_check_wks() {
    import re
    for name in re.findall(r'diffota-image-([a-z0-9_-]+)-is-not-in-the-release', d.getVar('_WKS_TEMPLATE') or ''):
        bb.fatal("the wks file %s wants image %s, which neither DIFFOTA_EXTRA_IMAGES nor DIFFOTA_IMAGE_RECIPES of %s names" % (d.getVar('WKS_FILE'), name, d.getVar('PN')))
}
do_image_wic[prefuncs] += "diffota_check_wks"

# A release's slot images must be the device's slot group (diffota-config's DIFFOTA_SLOT_GROUP,
# when set globally): a device whose config lacks one refuses the release.
python diffota_check_slot_group() {
    group = [pair.split(':', 1)[0] for pair in (d.getVar('DIFFOTA_SLOT_GROUP') or '').split()]
    images = [entry.split('=', 1)[0] for entry in ((d.getVar('DIFFOTA_EXTRA_IMAGES') or '').split() + (d.getVar('DIFFOTA_RECIPE_IMAGES') or '').split())]
    for name in images:
        if name not in group:
            bb.warn("diffota: the release has image %s, which DIFFOTA_SLOT_GROUP (%s) does not name: devices configured with it refuse the release" % (name, d.getVar('DIFFOTA_SLOT_GROUP') or 'empty'))
    for name in group:
        if name not in images:
            bb.warn("diffota: DIFFOTA_SLOT_GROUP names %s, which the release lacks (DIFFOTA_EXTRA_IMAGES, DIFFOTA_IMAGE_RECIPES): devices configured with it refuse the release" % name)
}
do_image_diffota[prefuncs] += "diffota_check_slot_group"

# Chunks are reused between releases only if the filesystem is laid out the same way when
# nothing changed: fixed UUID, fixed directory hash seed, timestamps from SOURCE_DATE_EPOCH.
DIFFOTA_FS_UUID ??= "6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d"
DIFFOTA_FS_HASH_SEED ??= "1d2c3b4a-0f9e-4d8c-8b7a-6e5d4c3b2a19"
EXTRA_IMAGECMD:ext4:append = " -U ${DIFFOTA_FS_UUID} -E hash_seed=${DIFFOTA_FS_HASH_SEED}"
REPRODUCIBLE_TIMESTAMP_ROOTFS ??= "${SOURCE_DATE_EPOCH}"

# Every release mounts the boot partition (the bootloader environment lives there) and the
# data partition (the state directory) from its own /etc/fstab: the release is the root file
# system image itself, so nothing may add these lines later (wic would add them only to its
# copy of the root file system). Empty a line to leave that mount to your own fstab.
DIFFOTA_FSTAB_BOOT ??= "LABEL=${@'esp' if d.getVar('DIFFOTA_BOOTLOADER') == 'grub' else 'boot'} /boot vfat defaults 0 0"
DIFFOTA_FSTAB_DATA ??= "LABEL=data /data ext4 defaults 0 2"
ROOTFS_POSTPROCESS_COMMAND += "${@'diffota_fstab' if 'diffota' in d.getVar('IMAGE_FSTYPES').split() else ''}"
diffota_fstab() {
	diffota_fstab_file=${IMAGE_ROOTFS}${sysconfdir}/fstab
	install -d ${IMAGE_ROOTFS}${sysconfdir} ${IMAGE_ROOTFS}/boot ${IMAGE_ROOTFS}/data
	touch "$diffota_fstab_file"
	for diffota_line in "${DIFFOTA_FSTAB_BOOT}" "${DIFFOTA_FSTAB_DATA}"; do
		[ -n "$diffota_line" ] || continue
		diffota_mountpoint=$(echo "$diffota_line" | awk '{ print $2 }')
		if awk -v m="$diffota_mountpoint" '$1 !~ /^#/ && $2 == m { found = 1 } END { exit !found }' "$diffota_fstab_file"; then
			bbnote "diffota: $diffota_fstab_file already mounts $diffota_mountpoint"
		else
			echo "$diffota_line" >> "$diffota_fstab_file"
		fi
	done
}
diffota_fstab[vardeps] += "DIFFOTA_FSTAB_BOOT DIFFOTA_FSTAB_DATA"

# The factory image (wic, with the layer's wks files): partition A is the image file the
# release is made from (DIFFOTA_RELEASE_IMAGE), and the data partition holds that release's
# signed index in diffota-factory/, with provision.env naming it. On the first boot
# diffota-provision.service checks the slot against it and records it: `status` names the
# factory release and `rollback` to it works. The wic image is made after the release.
DIFFOTA_RELEASE_IMAGE ??= "${IMGDEPLOYDIR}/${IMAGE_NAME}${IMAGE_NAME_SUFFIX}.${DIFFOTA_ROOTFS_FSTYPE}"
DIFFOTA_FACTORY_DATA ??= "${WORKDIR}/diffota-factory-data"
IMAGE_TYPEDEP:wic:append = "${@' diffota' if 'diffota' in d.getVar('IMAGE_FSTYPES').split() else ''}"
do_image_wic[prefuncs] += "${@'diffota_factory_data' if 'diffota' in d.getVar('IMAGE_FSTYPES').split() else ''}"
do_image_wic[file-checksums] += "${DIFFOTA_LAYERDIR}/files/diffota-factory-data.sh:True"
diffota_factory_data() {
	sh ${DIFFOTA_LAYERDIR}/files/diffota-factory-data.sh "${DIFFOTA_STORE}" \
		"$(cat ${IMGDEPLOYDIR}/${IMAGE_NAME}${IMAGE_NAME_SUFFIX}.diffota-version)" \
		"${DIFFOTA_IMAGE_NAME}" "${DIFFOTA_FACTORY_DATA}"
}
diffota_factory_data[vardeps] += "DIFFOTA_STORE DIFFOTA_IMAGE_NAME DIFFOTA_FACTORY_DATA"

IMAGE_TYPEDEP:diffota = "${DIFFOTA_ROOTFS_FSTYPE}"
do_image_diffota[depends] += "chunk-server-native:do_populate_sysroot"
do_image_diffota[file-checksums] += "${@'%s:True' % d.getVar('DIFFOTA_SIGNING_KEY') if d.getVar('DIFFOTA_SIGNING_KEY') else ''}"
do_image_diffota[vardeps] += "DIFFOTA_VERSION DIFFOTA_COMPATIBLE DIFFOTA_STORE DIFFOTA_ZSTD_LEVEL DIFFOTA_MAKE_ARGS DIFFOTA_EXTRA_IMAGES DIFFOTA_SINGLE_COPY_IMAGES DIFFOTA_RECIPE_IMAGES"

IMAGE_CMD:diffota () {
	if [ -z "${DIFFOTA_SIGNING_KEY}" ]; then
		bbfatal "DIFFOTA_SIGNING_KEY is not set: point it at the minisign secret key that signs releases (chunk-server keygen)"
	fi
	if [ ! -f "${DIFFOTA_SIGNING_KEY}" ]; then
		bbfatal "DIFFOTA_SIGNING_KEY=${DIFFOTA_SIGNING_KEY} does not exist"
	fi
	diffota_image="${DIFFOTA_RELEASE_IMAGE}"
	if [ ! -f "$diffota_image" ]; then
		bbfatal "no ${DIFFOTA_ROOTFS_FSTYPE} image at $diffota_image to make a diffota release from"
	fi
	diffota_password_args=""
	if [ -n "${DIFFOTA_SIGNING_KEY_PASSWORD_FILE}" ]; then
		diffota_password_args="--password-file ${DIFFOTA_SIGNING_KEY_PASSWORD_FILE}"
	fi
	# One image: the image file and its name. Several: --image/--single-copy NAME=FILE each.
	set -- --name "${DIFFOTA_IMAGE_NAME}" "$diffota_image"
	if [ -n "${DIFFOTA_EXTRA_IMAGES}${DIFFOTA_RECIPE_IMAGES}${DIFFOTA_SINGLE_COPY_IMAGES}" ]; then
		set -- --image "${DIFFOTA_IMAGE_NAME}=$diffota_image"
		for diffota_extra in ${DIFFOTA_EXTRA_IMAGES}; do
			[ -f "$(printf '%s' "$diffota_extra" | cut -d= -f2-)" ] || bbfatal "DIFFOTA_EXTRA_IMAGES names $diffota_extra: no such file (NAME=FILE; make this image depend on the recipe that builds it)"
			set -- "$@" --image "$diffota_extra"
		done
		for diffota_extra in ${DIFFOTA_RECIPE_IMAGES}; do
			[ -f "$(printf '%s' "$diffota_extra" | cut -d= -f2-)" ] || bbfatal "DIFFOTA_IMAGE_RECIPES: the image $diffota_extra was not deployed (does the recipe build that image type?)"
			set -- "$@" --image "$diffota_extra"
		done
		for diffota_extra in ${DIFFOTA_SINGLE_COPY_IMAGES}; do
			[ -f "$(printf '%s' "$diffota_extra" | cut -d= -f2-)" ] || bbfatal "DIFFOTA_SINGLE_COPY_IMAGES names $diffota_extra: no such file (NAME=FILE)"
			set -- "$@" --single-copy "$diffota_extra"
		done
	fi
	mkdir -p "${DIFFOTA_STORE}"
	# shellcheck disable=SC2086 # the argument lists are meant to split
	chunk-server make \
		--store "${DIFFOTA_STORE}" \
		--version "${DIFFOTA_VERSION}" \
		--compatible "${DIFFOTA_COMPATIBLE}" \
		--zstd-level "${DIFFOTA_ZSTD_LEVEL}" \
		--key "${DIFFOTA_SIGNING_KEY}" $diffota_password_args \
		${DIFFOTA_MAKE_ARGS} \
		"$@" > "${IMGDEPLOYDIR}/${IMAGE_NAME}${IMAGE_NAME_SUFFIX}.diffota"
	# The version this run made, for the factory image's data partition (DATETIME may differ
	# in a later bitbake run that makes only the wic image).
	echo "${DIFFOTA_VERSION}" > "${IMGDEPLOYDIR}/${IMAGE_NAME}${IMAGE_NAME_SUFFIX}.diffota-version"
	bbnote "diffota release ${DIFFOTA_VERSION} written to ${DIFFOTA_STORE}"
}
