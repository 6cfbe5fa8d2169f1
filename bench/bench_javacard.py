"""The Python emulator vs the Java Card applet in jCardSim, both behind pcscd + vpcd:
APDUs/s for small commands, and a backup of tests/data/phone_tree.tnds.xml and of a
generated 3 MB tree (host.tree.generate) (upload, then read back) with APDUs, bytes and seconds side by side. A third column runs
jCardSim with TCP_QUICKACK off, to show what it buys on vpcd's socket.

    .venv/bin/python bench/bench_javacard.py [--seconds 1.0] [--slot 1] [--no-quickack-column]

Needs pcscd (scripts/pcscd.sh start), a free vpcd slot (taken under the slot lock) and
the Java card built (card/jcardsim.py builds it on first use: cd javacard && mvn -q package).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apdu_specs import constants as C  # noqa: E402
from card.emulator import VirtualCard, personalise  # noqa: E402
from card.jcardsim import JavaCard, Personalisation  # noqa: E402
from card.vpcd import VpcdBridge, slot_lock  # noqa: E402
from host.backup import ops  # noqa: E402
from host.client import BackupCard  # noqa: E402
from host.backup.keys import generate_identity  # noqa: E402
from host.link import Apdu, Link, PcscTransport, wait_for_card  # noqa: E402
from host.tree.generate import generate_tree  # noqa: E402
from host.tree.tnds import read_tnds  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "phone_tree.tnds.xml"
PORTS = (35963, 35964)
READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
PIN, PUK = "1234", "12345678"
ADMIN_KEY = bytes(range(0x40, 0x50))


class CountingTransport(PcscTransport):
    """PcscTransport that counts the APDUs and bytes the host sends and receives."""

    apdus = 0
    sent = 0
    received = 0

    def transmit_raw(self, apdu: bytes) -> bytes:
        out = super().transmit_raw(apdu)
        self.apdus += 1
        self.sent += len(apdu)
        self.received += len(out)
        return out


@dataclass
class Column:
    name: str
    cells: dict[str, str] = field(default_factory=dict)


def rate(link: Link, apdu: Apdu, budget: float) -> tuple[float, float]:
    """(APDUs/s, ms per APDU) over ``budget`` seconds, after a short warm-up."""
    for _ in range(50):
        link.transmit(apdu)
    n, start = 0, time.perf_counter()
    while True:
        link.transmit(apdu)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return n / elapsed, elapsed / n * 1000


def measure(col: Column, reader: str, signer_ident, budget: float) -> None:
    transport = CountingTransport(reader)
    link = Link(transport)
    link.connect()
    card = BackupCard(link)
    card.select()
    card.verify_pin(PIN)
    status = Apdu(C.CLA_PROPRIETARY, C.Ins.GET_STATUS, le=0)
    anchors = Apdu(C.CLA_PROPRIETARY, C.Ins.LIST_ANCHORS, le=0)
    for label, apdu in (("GET STATUS (case 2)", status), ("LIST ANCHORS (case 2)", anchors)):
        per_s, ms = rate(link, apdu, budget)
        col.cells[f"{label}: APDUs/s"] = f"{per_s:,.0f}"
        col.cells[f"{label}: ms/APDU"] = f"{ms:.3f}"
    trees = (("phone_tree", read_tnds(SAMPLE.read_bytes())), ("3 MB tree", generate_tree(3_000_000, seed=9)))
    for name, tree in trees:
        a0, s0, r0 = transport.apdus, transport.sent, transport.received
        t0 = time.perf_counter()
        archive, _report = ops.backup_tree_to_card(card, tree, signer_ident, incremental=False)
        seconds = time.perf_counter() - t0
        col.cells[f"backup of {name}: APDUs"] = str(transport.apdus - a0)
        col.cells[f"backup of {name}: bytes sent/received"] = f"{transport.sent - s0:,} / {transport.received - r0:,}"
        col.cells[f"backup of {name}: seconds"] = f"{seconds:.3f}"
        a0, s0, r0 = transport.apdus, transport.sent, transport.received
        t0 = time.perf_counter()
        back = ops.archive_from_card(card, archive.backup_id)
        seconds = time.perf_counter() - t0
        assert back.to_bytes() == archive.to_bytes(), "read-back differs"
        col.cells[f"read back {name}: APDUs"] = str(transport.apdus - a0)
        col.cells[f"read back {name}: bytes sent/received"] = \
            f"{transport.sent - s0:,} / {transport.received - r0:,}"
        col.cells[f"read back {name}: seconds"] = f"{seconds:.3f}"
        col.cells[f"{name} archive: bytes / chunks"] = f"{len(archive.to_bytes()):,} / {len(archive.manifest.chunks)}"
    link.disconnect()


def serve_python(port: int, reader: str, tmp: Path, anchor: bytes) -> Callable[[], None]:
    image = tmp / "card.img"
    personalise(image, 1 << 20, PIN, PUK, ADMIN_KEY, [anchor])
    card = VirtualCard.open(image)
    bridge = VpcdBridge(card, "127.0.0.1", port)
    bridge.run_in_thread()
    if not wait_for_card(reader, True, 10):
        raise SystemExit(f"pcscd did not see the emulator in {reader}")

    def stop() -> None:
        bridge.stop()
        card.close()
        wait_for_card(reader, False, 10)
    return stop


def serve_java(port: int, reader: str, anchor: bytes, quickack: bool) -> Callable[[], None]:
    perso = Personalisation(pin=PIN, puk=PUK, admin_key=ADMIN_KEY, trust_anchors=(anchor,), capacity=1 << 20)
    java = JavaCard(perso, "127.0.0.1", port, java_options=() if quickack else ("-Dsimvault.vpcd.noQuickAck=true",))
    java.start()
    java.wait_connected()
    if not wait_for_card(reader, True, 10):
        raise SystemExit(f"pcscd did not see the Java card in {reader}")

    def stop() -> None:
        counters = java.counters()
        java.stop()
        wait_for_card(reader, False, 10)
        if counters["sw6f00"]:
            print(f"warning: the Java card answered 6F00 {counters['sw6f00']} times", file=sys.stderr)
    return stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per APDU rate (default 1.0)")
    parser.add_argument("--slot", type=int, choices=(0, 1), default=1)
    parser.add_argument("--no-quickack-column", action="store_true", help="skip jCardSim without TCP_QUICKACK")
    args = parser.parse_args()
    port, reader = PORTS[args.slot], READERS[args.slot]
    columns = [Column("Python emulator"), Column("jCardSim")]
    if not args.no_quickack_column:
        columns.append(Column("jCardSim, no QUICKACK"))
    with tempfile.TemporaryDirectory() as tmp_dir, slot_lock(port, timeout=300):
        tmp = Path(tmp_dir)
        ident = generate_identity(tmp / "keys")
        anchor = ident.signer.public_point
        if not wait_for_card(reader, False, 10):
            raise SystemExit(f"{reader} shows a card: stop whatever serves vpcd port {port}")
        for col in columns:
            if col.name == "Python emulator":
                stop = serve_python(port, reader, tmp, anchor)
            else:
                stop = serve_java(port, reader, anchor, quickack="no QUICKACK" not in col.name)
            try:
                measure(col, reader, ident, args.seconds)
            finally:
                stop()
    rows = list(columns[0].cells)
    width = max(len(r) for r in rows)
    print(f"{'through pcscd + vpcd (' + reader + ')':{width}}  " + "  ".join(f"{c.name:>22}" for c in columns))
    print("-" * (width + 24 * len(columns)))
    for r in rows:
        print(f"{r:{width}}  " + "  ".join(f"{c.cells.get(r, '-'):>22}" for c in columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
