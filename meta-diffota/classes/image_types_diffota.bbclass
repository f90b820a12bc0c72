# Image type "diffota": turns the root filesystem image into a release of a diffota store.
#
#   IMAGE_CLASSES += "image_types_diffota"
#   IMAGE_FSTYPES += "diffota"
#   DIFFOTA_SIGNING_KEY = "/secure/path/release.key"     (required; minisign secret key)
#
# The store lands in ${DIFFOTA_STORE} (default ${DEPLOY_DIR_IMAGE}/diffota-store): upload
# its packs/ and releases/ to the server, then publish a channel with `chunk-server channel set`.

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

# Chunks are reused between releases only if the filesystem is laid out the same way when
# nothing changed: fixed UUID, fixed directory hash seed, timestamps from SOURCE_DATE_EPOCH.
DIFFOTA_FS_UUID ??= "6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d"
DIFFOTA_FS_HASH_SEED ??= "1d2c3b4a-0f9e-4d8c-8b7a-6e5d4c3b2a19"
EXTRA_IMAGECMD:ext4:append = " -U ${DIFFOTA_FS_UUID} -E hash_seed=${DIFFOTA_FS_HASH_SEED}"
REPRODUCIBLE_TIMESTAMP_ROOTFS ??= "${SOURCE_DATE_EPOCH}"

IMAGE_TYPEDEP:diffota = "${DIFFOTA_ROOTFS_FSTYPE}"
do_image_diffota[depends] += "chunk-server-native:do_populate_sysroot"
do_image_diffota[file-checksums] += "${@'%s:True' % d.getVar('DIFFOTA_SIGNING_KEY') if d.getVar('DIFFOTA_SIGNING_KEY') else ''}"
do_image_diffota[vardeps] += "DIFFOTA_VERSION DIFFOTA_COMPATIBLE DIFFOTA_STORE DIFFOTA_ZSTD_LEVEL DIFFOTA_MAKE_ARGS"

IMAGE_CMD:diffota () {
	if [ -z "${DIFFOTA_SIGNING_KEY}" ]; then
		bbfatal "DIFFOTA_SIGNING_KEY is not set: point it at the minisign secret key that signs releases (chunk-server keygen)"
	fi
	if [ ! -f "${DIFFOTA_SIGNING_KEY}" ]; then
		bbfatal "DIFFOTA_SIGNING_KEY=${DIFFOTA_SIGNING_KEY} does not exist"
	fi
	diffota_image="${IMGDEPLOYDIR}/${IMAGE_NAME}${IMAGE_NAME_SUFFIX}.${DIFFOTA_ROOTFS_FSTYPE}"
	if [ ! -f "$diffota_image" ]; then
		bbfatal "no ${DIFFOTA_ROOTFS_FSTYPE} image at $diffota_image to make a diffota release from"
	fi
	diffota_password_args=""
	if [ -n "${DIFFOTA_SIGNING_KEY_PASSWORD_FILE}" ]; then
		diffota_password_args="--password-file ${DIFFOTA_SIGNING_KEY_PASSWORD_FILE}"
	fi
	mkdir -p "${DIFFOTA_STORE}"
	# shellcheck disable=SC2086 # the argument lists are meant to split
	chunk-server make \
		--store "${DIFFOTA_STORE}" \
		--version "${DIFFOTA_VERSION}" \
		--compatible "${DIFFOTA_COMPATIBLE}" \
		--name "${DIFFOTA_IMAGE_NAME}" \
		--zstd-level "${DIFFOTA_ZSTD_LEVEL}" \
		--key "${DIFFOTA_SIGNING_KEY}" $diffota_password_args \
		${DIFFOTA_MAKE_ARGS} \
		"$diffota_image" > "${IMGDEPLOYDIR}/${IMAGE_NAME}${IMAGE_NAME_SUFFIX}.diffota"
	bbnote "diffota release ${DIFFOTA_VERSION} written to ${DIFFOTA_STORE}"
}
