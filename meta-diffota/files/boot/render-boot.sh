#!/bin/sh
# Renders one of diffota's boot templates (grub.cfg.in, boot-env.cmd.in): every @NAME@ is
# replaced by the value of the environment variable DIFFOTA_NAME. A placeholder whose
# variable is not set stops the render with its name; an empty value is allowed (optional
# settings such as the initramfs).
# Usage: render-boot.sh TEMPLATE OUT
# Used by the layer's boot recipes and, with the same templates, by tests/vm/run.sh.
set -eu
template=$1
out=$2
awk '
{
    line = $0
    rendered = ""
    while (match(line, /@[A-Z0-9_]+@/)) {
        name = "DIFFOTA_" substr(line, RSTART + 1, RLENGTH - 2)
        if (!(name in ENVIRON)) {
            printf "render-boot.sh: %s, line %d, needs %s\n", FILENAME, NR, name > "/dev/stderr"
            failed = 1
            exit 1
        }
        rendered = rendered substr(line, 1, RSTART - 1) ENVIRON[name]
        line = substr(line, RSTART + RLENGTH)
    }
    print rendered line
}
END { if (failed) exit 1 }' "$template" > "$out.tmp"
mv "$out.tmp" "$out"
