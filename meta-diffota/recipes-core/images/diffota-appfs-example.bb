SUMMARY = "An example application partition for a diffota slot group (appfs)"
DESCRIPTION = "A file system image of no packages: the application files its \
IMAGE_PREPROCESS_COMMAND writes. diffota-image-example releases it with the root file \
system (DIFFOTA_IMAGE_RECIPES = \"appfs:diffota-appfs-example\"); devices install it into \
their appfs A/B pair (DIFFOTA_SLOT_GROUP) and mount the running group's at /app \
(DIFFOTA_SLOT_GROUP_MOUNTS)."
LICENSE = "MIT"

inherit image

# Nothing from the package feed: local.conf's IMAGE_INSTALL:append (diffota, the boot
# tools) is for root file systems, not for this partition.
PACKAGE_INSTALL = ""
IMAGE_FEATURES = ""
IMAGE_LINGUAS = ""
ROOTFS_BOOTSTRAP_INSTALL = ""
# One ext4 file, never a release or a disk image of its own (local.conf's
# IMAGE_FSTYPES:append is for root file systems).
IMAGE_FSTYPES = "ext4"
IMAGE_FSTYPES:remove = "diffota wic"
# Its own fixed UUID (the class fixes one for unchanged blocks), not the root file system's.
DIFFOTA_FS_UUID = "3c1e9a52-7b4d-4e0f-8a6c-2d5b9e1f4a70"
IMAGE_ROOTFS_SIZE ?= "8192"
IMAGE_ROOTFS_EXTRA_SPACE = "0"

DIFFOTA_APPFS_EXAMPLE_VERSION ??= "${DISTRO_VERSION}"
IMAGE_PREPROCESS_COMMAND += "diffota_appfs_example_files"
diffota_appfs_example_files() {
	install -d ${IMAGE_ROOTFS}/bin ${IMAGE_ROOTFS}/share
	printf '%s\n' "${DIFFOTA_APPFS_EXAMPLE_VERSION}" > ${IMAGE_ROOTFS}/share/version
	printf '#!/bin/sh\necho "example application %s"\n' "${DIFFOTA_APPFS_EXAMPLE_VERSION}" > ${IMAGE_ROOTFS}/bin/example-app
	chmod 0755 ${IMAGE_ROOTFS}/bin/example-app
}
diffota_appfs_example_files[vardeps] += "DIFFOTA_APPFS_EXAMPLE_VERSION"
