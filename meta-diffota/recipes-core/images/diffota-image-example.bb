SUMMARY = "An example image that updates itself with diffota"
LICENSE = "MIT"

inherit core-image

IMAGE_INSTALL:append = " diffota diffota-config libubootenv-bin"
IMAGE_CLASSES += "image_types_diffota"
IMAGE_FSTYPES:append = " ext4 diffota wic"
WKS_FILE ?= "diffota-uboot.wks"

