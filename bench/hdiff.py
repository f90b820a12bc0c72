#!/usr/bin/env python3
"""HDiffPatch as a benchmark peer (PyPI `hdiffpatch`): diff OLD NEW PATCH, apply OLD PATCH OUT.

The diff is `hdiffpatch.diff(old, new, ZStdConfig(level=19))`, the reference issue 17 names.
Both steps hold the images in memory, as the Python binding requires.
"""
import sys

import hdiffpatch


def main() -> int:
    if len(sys.argv) != 5 or sys.argv[1] not in ("diff", "apply"):
        print("usage: hdiff.py diff OLD NEW PATCH | apply OLD PATCH OUT", file=sys.stderr)
        return 2
    command, first, second, out = sys.argv[1:]
    with open(first, "rb") as f:
        old = f.read()
    with open(second, "rb") as f:
        other = f.read()
    if command == "diff":
        result = hdiffpatch.diff(old, other, hdiffpatch.ZStdConfig(level=19))
    else:
        result = hdiffpatch.apply(old, other)
    with open(out, "wb") as f:
        f.write(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
