"""Card capacity through pcscd + vpcd, on the emulator and (pytest --card javacard) on the
Java Card applet in jCardSim personalised alike: the issue's 2 MB backup on a 4 MiB card
commits (chunk entries and manifest buffer sized from the capacity), and a card whose chunk
table is too small refuses the upload before anything is written, naming the entries."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import build_test_card, pcsc_card

from apdu_specs.sw import SW
from host.backup import ops
from host.backup.keys import generate_identity
from host.errors import CardFullError
from host.tree.generate import generate_tree

pytestmark = pytest.mark.pcsc


def random_tree(blobs: int):
    tree = generate_tree(2_000, 2)
    for i in range(blobs):                   # random values do not compress: 2000 bytes each
        tree.add(f"./Vendor/Blob{i}", os.urandom(2000), format="bin", create_parents=True)
    return tree


def test_a_2mb_backup_commits_on_a_4mib_card(vpcd_card, tmp_path):
    ident = generate_identity(tmp_path / "keys")
    vcard = build_test_card(tmp_path / "card.img", capacity=4 << 20, anchors=[ident.signer.public_point])
    card = pcsc_card(vpcd_card(vcard, slot=0))
    before = card.status()
    assert before.chunk_entries == 2048 and before.max_manifest >= 8574
    archive, report = ops.backup_tree_to_card(card, random_tree(1000), ident)
    assert len(archive.manifest_bytes) > 8192 and sum(c.size for c in archive.manifest.chunks) > 2_000_000
    after = card.status()
    assert after.backups == 1 and not after.session_active
    assert before.free_entries - after.free_entries == len(archive.manifest.chunks)
    card.link.disconnect()


def test_a_small_chunk_table_refuses_before_anything_is_written(vpcd_card, tmp_path):
    ident = generate_identity(tmp_path / "keys")
    vcard = build_test_card(tmp_path / "card.img", capacity=1 << 20, anchors=[ident.signer.public_point],
                            chunk_entries=16)
    card = pcsc_card(vpcd_card(vcard, slot=0))
    before = card.status()
    assert (before.chunk_entries, before.free_entries) == (16, 16)
    archive = ops.backup_tree(random_tree(40), ident, max_chunk_size=card.fci.max_chunk_size, archive_format=1)
    assert len(archive.manifest.chunks) > 16
    with pytest.raises(CardFullError) as exc:
        ops.backup_to_card(card, archive)
    assert exc.value.sw == SW.CHUNK_TABLE_FULL
    assert str(exc.value).startswith("card full, nothing written: chunk entries ran out: ")
    assert "and 16 of 16 entries free" in str(exc.value)
    assert card.status() == before
    card.link.disconnect()
