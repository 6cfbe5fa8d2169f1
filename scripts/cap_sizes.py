#!/usr/bin/env python3
"""The component sizes of a CAP file, as the table of javacard/README.md ("CAP file").

    python3 scripts/cap_sizes.py javacard/target/simvault.cap                  # print the table
    python3 scripts/cap_sizes.py CAP --check javacard/README.md                # exit 1 if it differs
    python3 scripts/cap_sizes.py CAP --write javacard/README.md                # update it

A CAP file is a JAR whose */javacard/*.cap entries are the components (JCVM spec 3.0.4,
chapter 6): tag (1), size (2), then size bytes. The card loads them concatenated (the
GlobalPlatform load file): their sum is what the package costs before the applet
allocates anything. Standard library only: build-cap.sh runs it before any venv.
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

# JCVM 3.0.4 table 6-1, in load order
ORDER = ("Header", "Directory", "Import", "Applet", "Class", "Method", "StaticField", "Export",
         "ConstantPool", "RefLocation", "Descriptor", "Debug")
BEGIN, END = "<!-- cap-sizes: scripts/cap_sizes.py -->", "<!-- /cap-sizes -->"


def components(cap: Path) -> dict[str, int]:
    """Component name -> its size in bytes (the u2 size field + 3 for tag and size)."""
    out: dict[str, int] = {}
    with zipfile.ZipFile(cap) as z:
        for info in z.infolist():
            m = re.fullmatch(r".*/javacard/(\w+)\.cap", info.filename)
            if not m:
                continue
            raw = z.read(info)
            size = int.from_bytes(raw[1:3], "big")
            if len(raw) != size + 3:
                raise SystemExit(f"cap_sizes: {info.filename}: size field {size} but {len(raw) - 3} bytes follow")
            out[m.group(1)] = len(raw)
    if "Header" not in out or "Method" not in out:
        raise SystemExit(f"cap_sizes: {cap} holds no CAP components")
    return out


def table(sizes: dict[str, int]) -> str:
    names = [n for n in ORDER if n in sizes] + sorted(set(sizes) - set(ORDER))
    rows = ["| component | bytes |", "|---|---|"]
    rows += [f"| {n} | {sizes[n]} |" for n in names]
    rows.append(f"| **load file (all components)** | **{sum(sizes.values())}** |")
    return "\n".join(rows)


def _section(text: str) -> tuple[int, int]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"cap_sizes: no '{BEGIN}' ... '{END}' section in the README")
    return start + len(BEGIN), end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cap", type=Path)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", type=Path, metavar="README")
    group.add_argument("--write", type=Path, metavar="README")
    args = parser.parse_args(argv)
    want = table(components(args.cap))
    readme = args.check or args.write
    if readme is None:
        print(want)
        return 0
    text = readme.read_text()
    start, end = _section(text)
    if args.write:
        readme.write_text(text[:start] + "\n" + want + "\n" + text[end:])
        return 0
    have = text[start:end].strip()
    if have != want:
        print(f"cap_sizes: the CAP component table of {readme} is stale; it should read:\n{want}\n"
              f"(run: python3 scripts/cap_sizes.py {args.cap} --write {readme})", file=sys.stderr)
        return 1
    print(f"cap_sizes: {readme} lists the CAP's {want.count(chr(10)) - 2} components")
    return 0


if __name__ == "__main__":
    sys.exit(main())
