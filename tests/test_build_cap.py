"""The CAP build for real SIMs (scripts/build-cap.sh, Oracle's Java Card kit) fails on what it
must fail on: a CAP that verifycap rejects (the tool itself exits 0 then), and a component
table in javacard/README.md that no longer matches the CAP (scripts/cap_sizes.py)."""
from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build-cap.sh"
SIZES = ROOT / "scripts" / "cap_sizes.py"
KIT = Path(os.environ.get("JC_HOME", ROOT.parent / "shared" / "tools" / "javacard-sdk" / "jc320v25.1_kit"))


def _component(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + len(body).to_bytes(2, "big") + body


def _fake_cap(path: Path, method: bytes = b"\x00" * 40) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("org/x/javacard/Header.cap", _component(1, b"\x00" * 19))
        z.writestr("org/x/javacard/Method.cap", _component(7, method))
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    return path


def _sizes(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(["python3", str(SIZES), *map(str, args)], capture_output=True, text=True)


def test_cap_sizes_table_check_and_write(tmp_path):
    cap = _fake_cap(tmp_path / "a.cap")
    out = _sizes(cap)
    assert out.returncode == 0 and out.stdout.splitlines() == [
        "| component | bytes |", "|---|---|", "| Header | 22 |", "| Method | 43 |",
        "| **load file (all components)** | **65** |"]
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- cap-sizes: scripts/cap_sizes.py -->\nold\n<!-- /cap-sizes -->\nrest\n")
    stale = _sizes(cap, "--check", readme)
    assert stale.returncode == 1 and "is stale" in stale.stderr and "--write" in stale.stderr
    assert _sizes(cap, "--write", readme).returncode == 0
    assert readme.read_text().startswith("intro\n<!-- cap-sizes") and readme.read_text().endswith("-->\nrest\n")
    assert _sizes(cap, "--check", readme).returncode == 0
    assert _sizes(_fake_cap(tmp_path / "b.cap", b"\x00" * 41), "--check", readme).returncode == 1
    broken = tmp_path / "c.cap"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("org/x/javacard/Header.cap", b"\x01\x00\x30" + b"\x00" * 5)    # size says 48
    assert "size field 48" in _sizes(broken).stderr


def test_the_cap_builds_and_a_damaged_cap_fails_verification(tmp_path):
    if not (KIT / "lib" / "api_classic-3.0.4.jar").exists():
        pytest.fail(f"no Java Card kit at {KIT}: set JC_HOME to jc320v25.1_kit (javacard/README.md, CAP file)")
    built = subprocess.run(["bash", str(SCRIPT), "--jc-home", str(KIT)], capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stderr
    assert "conversion completed with 0 errors" in built.stdout
    assert "Verification completed with 0 warnings and 0 errors" in built.stdout
    cap = ROOT / "javacard" / "target" / "simvault.cap"
    damaged = tmp_path / "damaged.cap"
    with zipfile.ZipFile(cap) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/Method.cap"):
                data = data[:100] + b"\x00\x01\x02" + data[103:]      # three bytecodes changed
            dst.writestr(info, data)
    bad = subprocess.run(["bash", str(SCRIPT), "--jc-home", str(KIT), "--verify", str(damaged)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "verifycap found errors" in bad.stderr and "SEVERE" in bad.stderr
    good = subprocess.run(["bash", str(SCRIPT), "--jc-home", str(KIT), "--verify", str(cap)],
                          capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stderr
