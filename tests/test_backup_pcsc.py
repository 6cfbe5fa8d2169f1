"""Backups through the real pcscd + vpcd: a round trip, and a `simvault card serve`
process killed with SIGKILL in the middle of an upload."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import build_test_card, pcsc_card
from conftest import served_image, vpcd_slot_lock

from host.backup import ops
from host.archive import verify_archive
from host.errors import SimvaultError
from host.backup.keys import generate_identity
from host.link import card_present
from host.tree.generate import generate_tree, mutate_leaves
from host.tree.tnds import read_tnds

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "phone_tree.tnds.xml"


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


def _gone(reader: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and card_present(reader):
        time.sleep(0.05)


def test_card_serve_killed_mid_backup(pcscd, tmp_path):
    ident = generate_identity(tmp_path / "keys")
    image = tmp_path / "card.img"
    build_test_card(image, anchors=[ident.signer.public_point]).close()
    pending = tmp_path / "pending"
    tree = generate_tree(300_000, 4)
    with vpcd_slot_lock(1):
        with served_image(image, 1, locked=False) as (reader, proc):
            card = pcsc_card(reader)
            first, _ = ops.backup_tree_to_card(card, tree, ident, pending_dir=pending)
            mutate_leaves(tree, 0.3, seed=9)
            killed = []

            def kill_midway(done: int, total: int) -> None:
                if not killed and done > total // 3:
                    os.kill(proc.pid, signal.SIGKILL)        # power cut: the process dies at once
                    proc.wait(5)
                    # Let pcscd notice before the next APDU: Debian's ifd-vpcd that transmits to a
                    # dead vicc never sees a new one on that slot again (until pcscd restarts).
                    _gone(reader)
                    killed.append(done)
            with pytest.raises(SimvaultError):
                ops.backup_tree_to_card(card, tree, ident, pending_dir=pending, progress=kill_midway)
            assert killed
            try:
                card.link.disconnect()                        # let go of the dead card handle
            except SimvaultError:
                pass
        with served_image(image, 1, locked=False) as (reader, _):   # the image survived kill -9
            card = pcsc_card(reader)
            assert [e.backup_id for e in card.list_backups()] == [first.backup_id]
            assert verify_archive(ops.archive_from_card(card, first.backup_id), ident.trust, ident.decryptor)
            second, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=pending)
            assert report.resumed and report.chunks_sent < report.chunks_total
            assert verify_archive(ops.archive_from_card(card, second.backup_id), ident.trust,
                                  ident.decryptor).tree == tree
            card.link.disconnect()
