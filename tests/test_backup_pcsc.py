"""Backups through the real pcscd + vpcd: a round trip, and a `simvault card serve`
process killed with SIGKILL in the middle of an upload."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import TEST_PIN, build_test_card

from host import backup_ops as ops
from host.archive import verify_archive
from host.client import BackupCard
from host.errors import SimvaultError
from host.keys import generate_identity
from host.link import Link, PcscTransport, card_present
from host.tree.generate import generate_tree, mutate_leaves
from host.tree.tnds import read_tnds

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "phone_tree.tnds.xml"
SLOT1 = ("Virtual PCD 00 01", 35964)
# runs the real `simvault card serve` handler (host.cli_card) in its own process
SERVE = ("import argparse, sys\nfrom host import cli_card\np = argparse.ArgumentParser()\n"
         "cli_card.register(p.add_subparsers())\na = p.parse_args(sys.argv[1:])\nsys.exit(a.func(a))\n")


def pcsc_card(reader: str) -> BackupCard:
    link = Link(PcscTransport(reader))
    link.connect()
    card = BackupCard(link)
    card.select()
    card.verify_pin(TEST_PIN)
    return card


def test_sample_round_trip_through_pcscd(vpcd_card, tmp_path):
    ident = generate_identity(tmp_path / "keys")
    vcard = build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point])
    reader = vpcd_card(vcard, slot=0)
    card = pcsc_card(reader)
    tree = read_tnds(SAMPLE.read_bytes())
    archive, report = ops.backup_tree_to_card(card, tree, ident)
    assert report.chunks_sent == len(archive.manifest.chunks)
    back = ops.archive_from_card(card, archive.backup_id)
    assert back.to_bytes() == archive.to_bytes()
    live = tmp_path / "live.xml"
    live.write_bytes(SAMPLE.read_bytes())
    assert ops.restore_tree_file(live, back, ident).changes == []
    assert verify_archive(back, ident.trust, ident.decryptor).tree == tree
    card.link.disconnect()


def _serve(image: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "card", "serve", "--image", str(image),
                             "--vpcd", f"127.0.0.1:{SLOT1[1]}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if card_present(SLOT1[0]):
            return proc
        if proc.poll() is not None:
            pytest.fail(f"card serve exited: {proc.stderr.read().decode()[-300:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"pcscd did not see the served card: {proc.stderr.read().decode()[-300:]}")


def _gone(reader: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and card_present(reader):
        time.sleep(0.05)


def test_card_serve_killed_mid_backup(pcscd, tmp_path):
    if card_present(SLOT1[0]):
        pytest.fail(f"{SLOT1[0]} already holds a card: another test or vicc uses port {SLOT1[1]}")
    ident = generate_identity(tmp_path / "keys")
    image = tmp_path / "card.img"
    build_test_card(image, anchors=[ident.signer.public_point]).close()
    pending = tmp_path / "pending"
    tree = generate_tree(300_000, 4)
    proc = _serve(image)
    try:
        card = pcsc_card(SLOT1[0])
        first, _ = ops.backup_tree_to_card(card, tree, ident, pending_dir=pending)
        mutate_leaves(tree, 0.3, seed=9)
        killed = []

        def kill_midway(done: int, total: int) -> None:
            if not killed and done > total // 3:
                os.kill(proc.pid, signal.SIGKILL)        # power cut: the process dies at once
                proc.wait(5)
                # Let pcscd notice before the next APDU: Debian's ifd-vpcd that transmits to a
                # dead vicc never sees a new one on that slot again (until pcscd restarts).
                _gone(SLOT1[0])
                killed.append(done)
        with pytest.raises(SimvaultError):
            ops.backup_tree_to_card(card, tree, ident, pending_dir=pending, progress=kill_midway)
        assert killed
        try:
            card.link.disconnect()                        # let go of the dead card handle
        except SimvaultError:
            pass
        _gone(SLOT1[0])
        proc = _serve(image)                              # the card image survived kill -9
        card = pcsc_card(SLOT1[0])
        assert [e.backup_id for e in card.list_backups()] == [first.backup_id]
        assert verify_archive(ops.archive_from_card(card, first.backup_id), ident.trust, ident.decryptor)
        second, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=pending)
        assert report.resumed and report.chunks_sent < report.chunks_total
        assert verify_archive(ops.archive_from_card(card, second.backup_id), ident.trust,
                              ident.decryptor).tree == tree
        card.link.disconnect()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        _gone(SLOT1[0])
