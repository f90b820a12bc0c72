SUMMARY = "diffota publishing tool: chunk images into a store of packs and signed indexes"

require recipes-core/diffota/diffota.inc

DIFFOTA_CRATE = "chunk-server"

BBCLASSEXTEND = "native nativesdk"
