"""Link throughput: APDUs/s and µs/APDU, in-process vs through pcscd + vpcd,
our bridge vs vsmartcard's own Python emulator (vicc) on the second slot.

    .venv/bin/python bench/bench_link.py [--seconds 1.0]

Needs pcscd running (scripts/pcscd.sh) and both vpcd slots free. vicc rows are
left out (with the reason printed) when vicc cannot start.

Debian 12's vsmartcard-vpicc installs its module under
/usr/lib/python3/site-packages/virtualsmartcard (not on sys.path) and imports
PyCrypto's ``Crypto``; we run it with that path and, if needed, a shim mapping
``Crypto`` to python3-pycryptodome's ``Cryptodome``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from card.vpcd import VpcdBridge, slot_lock  # noqa: E402
from host.link import Apdu, EmulatorTransport, Link, PcscTransport, wait_for_card  # noqa: E402
from host.link.echo_card import EchoCard  # noqa: E402

READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
PORTS = (35963, 35964)
VICC_MODULE_DIR = "/usr/lib/python3/site-packages/virtualsmartcard"


@dataclass
class Case:
    label: str
    apdu: Apdu
    echo_only: bool = False  # vicc has no ECHO command


BIG = bytes(range(256)) * 253 + bytes(232)  # 65,000 bytes
CASES = [
    Case("SELECT MF (case 3, 2 B)", Apdu(0x00, 0xA4, 0x00, 0x0C, b"\x3F\x00")),
    Case("GET CHALLENGE (case 2, 8 B)", Apdu(0x00, 0x84, 0x00, 0x00, le=8)),
    Case("SELECT MF, extended form", Apdu(0x00, 0xA4, 0x00, 0x0C, b"\x3F\x00", extended=True)),
    Case("ECHO 255 B (case 4 short)", Apdu(0x80, 0x10, data=bytes(255), le=0), echo_only=True),
    Case("ECHO 4 KiB (extended)", Apdu(0x80, 0x10, data=bytes(4096), le=0), echo_only=True),
    Case("ECHO 65,000 B (extended)", Apdu(0x80, 0x10, data=BIG, le=65000), echo_only=True),
]


@dataclass
class Row:
    target: str
    case: str
    apdus: int
    seconds: float
    sw: int
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.apdus / self.seconds if self.seconds else 0.0

    @property
    def us_per_apdu(self) -> float:
        return self.seconds * 1e6 / self.apdus if self.apdus else 0.0


def measure(target: str, link: Link, case: Case, budget: float, max_apdus: int = 200_000) -> Row:
    response = link.transmit(case.apdu)  # warm-up, and the SW we report
    link.stats.reset()
    start = time.perf_counter()
    deadline = start + budget
    while time.perf_counter() < deadline and link.stats.apdus < max_apdus:
        link.transmit(case.apdu)
    # wall time: includes the link's own work, not only the transport's
    return Row(target, case.label, link.stats.apdus, time.perf_counter() - start, response.sw)


def start_vicc(port: int, workdir: Path) -> tuple[subprocess.Popen | None, str]:
    vicc = shutil.which("vicc")
    if vicc is None:
        return None, "vicc not installed (apt: vsmartcard-vpicc)"
    python = "/usr/bin/python3"
    paths = [VICC_MODULE_DIR]
    probe = subprocess.run([python, "-c", "import Crypto"], capture_output=True)
    if probe.returncode != 0:
        has_dome = subprocess.run([python, "-c", "import Cryptodome"], capture_output=True).returncode == 0
        if not has_dome:
            return None, "vicc needs PyCrypto: apt-get install python3-pycryptodome"
        shim = workdir / "Crypto"
        shim.mkdir(exist_ok=True)
        (shim / "__init__.py").write_text("import sys, Cryptodome\nsys.modules[__name__] = Cryptodome\n")
        paths.insert(0, str(workdir))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    with open(workdir / "vicc.log", "w") as log:
        proc = subprocess.Popen([python, vicc, "--type", "iso7816", "-P", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    if not wait_for_card(READERS[PORTS.index(port)], True, 10.0):
        proc.terminate()
        proc.wait(5)
        return None, f"vicc did not attach: see {workdir / 'vicc.log'}"
    return proc, ""


def run(budget: float) -> list[Row]:
    rows: list[Row] = []
    # 1. in-process
    link = Link(EmulatorTransport(EchoCard()))
    link.connect()
    for case in CASES:
        rows.append(measure("in-process EchoCard", link, case, budget))

    # 2. pcscd + vpcd + our bridge (slot locks: test sessions may share pcscd)
    with slot_lock(PORTS[0], 120):
        if not wait_for_card(READERS[0], False, 5.0):
            raise SystemExit(f"{READERS[0]} already has a card: stop the other bridge/vicc first")
        rows += run_bridge(budget)
    # 3. pcscd + vpcd + vsmartcard's vicc: slot 1, or slot 0 when someone holds slot 1
    for index in (1, 0):
        with slot_lock(PORTS[index], 120):
            if wait_for_card(READERS[index], False, 3.0):
                rows += run_vicc(budget, index)
                return rows
    rows.append(Row("pcscd+vpcd vicc", "(not run)", 0, 0.0, 0, "both vpcd slots are busy"))
    return rows


def run_bridge(budget: float) -> list[Row]:
    rows: list[Row] = []
    bridge = VpcdBridge(EchoCard(), port=PORTS[0])
    bridge.run_in_thread()
    try:
        if not wait_for_card(READERS[0], True):
            raise SystemExit("pcscd does not see the bridged card: run scripts/pcscd.sh")
        with PcscTransport(READERS[0]) as transport:
            link = Link(transport)
            link.connect()
            for case in CASES:
                rows.append(measure(f"pcscd+vpcd VpcdBridge ({transport.protocol})", link, case, budget))
    finally:
        bridge.stop()
        wait_for_card(READERS[0], False, 5.0)
    return rows


def run_vicc(budget: float, index: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-vicc-") as tmp:
        proc, why = start_vicc(PORTS[index], Path(tmp))
        if proc is None:
            rows.append(Row("pcscd+vpcd vicc", "(not run)", 0, 0.0, 0, why))
            return rows
        try:
            with PcscTransport(READERS[index]) as transport:
                link = Link(transport)
                link.connect()
                for case in CASES:
                    if case.echo_only:
                        continue
                    # vicc answers ~44 ms per APDU: cap the count, not just the time
                    rows.append(measure(f"pcscd+vpcd vicc ({transport.protocol}, slot {index})", link, case, budget, 50))
        finally:
            proc.terminate()
            proc.wait(5)
            wait_for_card(READERS[index], False, 5.0)
    return rows


def print_table(rows: list[Row]) -> None:
    header = f"{'target':34} {'APDU':30} {'SW':>4} {'APDUs':>7} {'APDU/s':>9} {'µs/APDU':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if not r.apdus:
            print(f"{r.target:34} {r.case:30} {'':>4} {'':>7} {'':>9} {'':>10}  {r.note}")
            continue
        print(f"{r.target:34} {r.case:30} {r.sw:04X} {r.apdus:7d} {r.per_second:9.0f} {r.us_per_apdu:10.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per row")
    args = parser.parse_args()
    print_table(run(args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
