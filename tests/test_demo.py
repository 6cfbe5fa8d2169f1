"""`simvault demo` as a user runs it: a separate process, the real servers, the
card in-process (--no-pcsc) and through pcscd + vpcd; exit code 0 and every
use case verified in its output. Through pcscd the demo takes the vpcd slot
lock itself (card.vpcd.slot_lock), so it queues behind other pytest sessions."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from host.tree.tnds import read_tnds

ROOT = Path(__file__).resolve().parent.parent
SIMVAULT = [sys.executable, "-m", "host.cli"]

VERIFIED_LINES = (
    r"Exec Backup destination=server; job \d+ queued -> (notified -> )?running -> succeeded",
    r"Exec Backup destination=card; job \d+ .*succeeded.*committed on the card",
    r"server policy accepted: job \d+, origin device:user, destination server",
    r"firmware_update .*Policy/BeforeFirmwareUpdate backed up to the card first .*origin device:firmware.*"
    r"FUMO State 100, FUMO result 200 \(Successful",
    r"restore from the DM server: .*tree == original",
    r"restore from the smart card: .*tree == original",
    r"Exec BackupViaDS; .*ds-status 200, 1 item",
    r"Exec RestoreViaDS: .*tree == original",
    r"restore refused by the server before sending anything: server copy of backup [0-9a-f]+ is damaged",
    r"restore refused by the device: chunk [0-9a-f]+ does not match its signed hash",
    r"tree untouched",
    r"ALL 5 STEPS VERIFIED",
)


def run_demo(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIMVAULT_PIN": ""}  # the demo sets its own PIN, never ours
    return subprocess.run([*SIMVAULT, "demo", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def check_output(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    for pattern in VERIFIED_LINES:
        assert re.search(pattern, out), f"missing {pattern!r} in:\n{out}"
    assert "✔" in out and "FAILED" not in out and "Traceback" not in out + proc.stderr
    return out


def no_secrets_in(text: str, workdir: Path) -> None:
    """No secret leaf of the tree (the DM passwords the demo generated, the operator's)
    and no private key appears in the demo's output."""
    tree = read_tnds((workdir / "device" / "phone.tnds.xml").read_bytes())
    secrets = [str(n.value) for u, n in tree.walk() if u.endswith(("/AAuthSecret", "/AuthSecret"))]
    assert len(secrets) >= 4, "the kept tree has no DM account secrets to look for"
    for value in secrets:
        assert value not in text
    for pem in (workdir / "device" / "keys").glob("*.pem"):
        body = "".join(pem.read_text().splitlines()[1:-1])
        assert body[:40] not in text


def test_demo_in_process(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = run_demo("--no-pcsc", "--workdir", str(workdir))
    out = check_output(proc)
    assert "in-process emulator" in out and "APDUs through pcscd" not in out
    rows = [line for line in out.splitlines() if re.match(r"\s+(1 server|2 |restore|3 |tampered)", line)]
    assert len(rows) == 10, out
    no_secrets_in(proc.stdout + proc.stderr, workdir)


@pytest.mark.pcsc
@pytest.mark.timeout(400)  # the vpcd slot is shared: other suites may hold it a while
def test_demo_through_pcscd(pcscd: list[str], tmp_path: Path) -> None:
    proc = run_demo("--slot", "1", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    narrative = proc.stderr
    assert report["ok"] and report["steps_verified"] == report["steps"] == 5
    assert report["card"] == "pcscd + vpcd slot 1" and report["workdir"] is None  # temp dir removed
    card_rows = [r for r in report["summary"] if r["destination"] == "smart card"]
    assert len(card_rows) == 3 and all(r["apdus"] and r["apdus"] > 0 for r in card_rows)
    assert "PC/SC reader 'Virtual PCD 00 01'" in narrative
    for pattern in VERIFIED_LINES:
        assert re.search(pattern, narrative), f"missing {pattern!r} in:\n{narrative}"
