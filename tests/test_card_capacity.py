"""Card capacity on the in-process emulator: the chunk-entries parameter, the preflight
check before an upload (refused before BEGIN: nothing written), what the host's need
model predicts against what the card really uses, and a card full mid-upload that
says whether bytes or entries ran out."""
from __future__ import annotations

import dataclasses
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import build_test_card, emulator_client

from apdu_specs import constants as C
from apdu_specs.sw import SW
from host.backup import ops
from host.backup.card_fit import CardRoom, check_fits, upload_need
from host.backup.keys import generate_identity
from host.errors import CardFullError, UsageError
from host.tree.generate import generate_tree


class InsCounter:
    def __init__(self) -> None:
        self.by_ins: Counter[int] = Counter()

    def trace(self, apdu, response, seconds, protocol=""):
        if apdu.cla & 0x80:                      # simvault's (VERIFY shares INS 20 with BEGIN BACKUP)
            self.by_ins[apdu.ins] += 1


@pytest.fixture
def ident(tmp_path):
    return generate_identity(tmp_path / "keys")


def make_card(path: Path, ident, capacity: int = 1 << 20, entries: int | None = None):
    return build_test_card(path, capacity=capacity, anchors=[ident.signer.public_point], chunk_entries=entries)


def open_card(vcard, tracer=None):
    card = emulator_client(vcard)
    card.link.tracer = tracer
    return card


def blob_tree(n: int, size: int, seed: int = 1):
    """n random (incompressible) values of size bytes: one chunk each in format 1 at small chunk sizes."""
    tree = generate_tree(1_000, seed)
    rnd = os.urandom
    for i in range(n):
        tree.add(f"./Vendor/Blob{i}", rnd(size), format="bin", create_parents=True)
    return tree


def test_default_entries_follow_the_capacity_within_bounds():
    assert C.default_chunk_entries(16384) == 64                   # the floor
    assert C.default_chunk_entries(1 << 20) == 512                # one per 8 blocks of 256 bytes
    assert C.default_chunk_entries(4 << 20) == 2048
    assert C.default_chunk_entries(1 << 30) == C.CHUNK_ENTRIES_MAX


def test_chunk_entries_are_an_install_parameter_and_reported(tmp_path, ident):
    vcard = make_card(tmp_path / "c.img", ident, entries=3000)
    status = open_card(vcard).status()
    assert (status.chunk_entries, status.free_entries, status.block_size) == (3000, 3000, 256)
    vcard.close()
    vcard = make_card(tmp_path / "d.img", ident, capacity=4 << 20)
    assert open_card(vcard).status().chunk_entries == 2048
    vcard.close()
    for bad in (0, C.CHUNK_ENTRIES_MAX + 1):
        with pytest.raises(UsageError, match="chunk entries"):
            make_card(tmp_path / f"bad{bad}.img", ident, entries=bad)
        assert not (tmp_path / f"bad{bad}.img").exists()


def test_preflight_refuses_bytes_before_begin_and_writes_nothing(tmp_path, ident):
    vcard = make_card(tmp_path / "small.img", ident, capacity=96 * 1024)
    counter = InsCounter()
    card = open_card(vcard, counter)
    before = card.status()
    archive = ops.backup_tree(blob_tree(60, 2000), ident, max_chunk_size=card.fci.max_chunk_size)
    with pytest.raises(CardFullError) as exc:
        ops.backup_to_card(card, archive)
    msg = str(exc.value)
    assert exc.value.sw == SW.NOT_ENOUGH_MEMORY and "\n" not in msg
    assert msg.startswith("card full, nothing written: bytes ran out: this backup needs ")
    assert f"the card has {before.free} of {before.capacity} bytes and 64 of 64 entries free" in msg
    assert "'simvault delete --id ID'" in msg and "'simvault backup --full'" in msg and "--capacity" in msg
    assert counter.by_ins[C.Ins.BEGIN_BACKUP] == 0 and counter.by_ins[C.Ins.PUT_CHUNK] == 0
    assert card.status() == before and not before.session_active
    vcard.close()


def test_preflight_refuses_entries_and_names_them(tmp_path, ident):
    vcard = make_card(tmp_path / "c.img", ident, entries=4)
    counter = InsCounter()
    card = open_card(vcard, counter)
    before = card.status()
    archive = ops.backup_tree(blob_tree(12, 3000), ident, max_chunk_size=1024, archive_format=1)
    assert len(archive.manifest.chunks) > 4
    with pytest.raises(CardFullError) as exc:
        ops.backup_to_card(card, archive)
    assert exc.value.sw == SW.CHUNK_TABLE_FULL
    assert str(exc.value).startswith("card full, nothing written: chunk entries ran out: ")
    assert f"and {len(archive.manifest.chunks)} chunk entries; " in str(exc.value)
    assert "and 4 of 4 entries free" in str(exc.value)
    assert counter.by_ins[C.Ins.BEGIN_BACKUP] == 0 and card.status() == before
    vcard.close()


def test_the_need_model_is_what_the_card_uses(tmp_path, ident):
    """Bytes and entries a committed backup took equal what the preflight predicted, also for
    an incremental that shares chunks; so a backup the check lets through fits."""
    vcard = make_card(tmp_path / "c.img", ident)
    card = open_card(vcard)
    tree = blob_tree(10, 1500)
    previous = None
    for round_ in range(2):
        archive = ops.backup_tree(tree, ident, previous=previous, max_chunk_size=card.fci.max_chunk_size,
                                  archive_format=1)
        before = card.status()
        on_card = card.query_chunks([c.chunk_id for c in archive.manifest.chunks])
        new = {c.chunk_id: c.size for c, here in zip(archive.manifest.chunks, on_card) if not here}
        need = upload_need(new.values(), len(archive.manifest_bytes), len(archive.manifest.chunks),
                           before.block_size)
        ops.backup_to_card(card, archive)
        after = card.status()
        assert before.free - after.free == need.bytes
        assert before.free_entries - after.free_entries == need.entries
        tree.replace("./Vendor/Blob0", os.urandom(1500))
        previous = archive
    vcard.close()


def test_exactly_full_fits_and_one_block_more_does_not():
    room = CardRoom(free_bytes=2048, total_bytes=4096, free_entries=2, total_entries=8, block_size=256)
    check_fits(room, upload_need([1000, 300], 256, 2, 256))        # 1024 + 512 + 256 + 256 (id list) = 2048
    check_fits(room, upload_need([1024, 512], 200, 8, 256))        # 1024 + 512 + 256 + 256 = 2048
    with pytest.raises(CardFullError, match="bytes ran out"):
        check_fits(room, upload_need([1024, 512], 200, 9, 256))    # 9 ids: 288 bytes, two blocks
    with pytest.raises(CardFullError, match="chunk entries ran out"):
        check_fits(room, upload_need([1, 1, 1], 10, 3, 256))
    with pytest.raises(CardFullError, match="bytes and chunk entries ran out"):
        check_fits(room, upload_need([2048, 1, 1], 10, 3, 256))
    old = CardRoom(free_bytes=2048, total_bytes=4096, free_entries=None, total_entries=None, block_size=256)
    check_fits(old, upload_need([1] * 6, 10, 6, 256))              # entries unknown: bytes only
    with pytest.raises(CardFullError, match="does not report its chunk entries"):
        check_fits(old, upload_need([1] * 7, 10, 7, 256))


def test_a_card_that_does_not_report_entries_fails_mid_upload_naming_entries(tmp_path, ident, monkeypatch):
    """A card of an earlier version reports no chunk table: the preflight checks bytes only, and
    the card's CHUNK_TABLE_FULL during PUT CHUNK becomes a message that names the entries."""
    vcard = make_card(tmp_path / "c.img", ident, entries=4)
    card = open_card(vcard)
    real_status = card.status
    monkeypatch.setattr(card, "status", lambda: dataclasses.replace(real_status(), chunk_entries=None,
                                                                    block_size=None))
    archive = ops.backup_tree(blob_tree(12, 3000), ident, max_chunk_size=1024, archive_format=1)
    with pytest.raises(CardFullError) as exc:
        ops.backup_to_card(card, archive)
    assert exc.value.sw == SW.CHUNK_TABLE_FULL
    msg = str(exc.value)
    assert msg.startswith("card full: chunk entries ran out: this backup needs ") and "\n" not in msg
    assert "'simvault card abort-upload'" in msg
    assert real_status().session_active and real_status().chunks == 4
    card.abort()
    assert real_status().chunks == 0
    vcard.close()


def test_cli_init_takes_chunk_entries_and_status_shows_both(tmp_path, capsys, monkeypatch):
    import json

    from cards import run_cli
    from host.cli import card as cli_card
    monkeypatch.chdir(tmp_path)
    init = ["card", "init", "--pin", "2468", "--puk", "13572468", "--admin-key-file", "admin.key"]
    code, out, err = run_cli([*init, "--image", "c.img", "--chunk-entries", "100"], capsys, cli_card)
    assert code == 0, err
    assert out.endswith(", 0 trust anchor(s), 100 chunk entries\n")
    code, out, err = run_cli(["card", "status", "--emulator", "c.img"], capsys, cli_card)
    assert code == 0, err
    assert "bytes free; 100 of 100 chunk entries free\n" in out
    doc = json.loads(run_cli(["card", "status", "--json", "--emulator", "c.img"], capsys, cli_card)[1])
    assert (doc["chunk_entries"], doc["free_entries"], doc["block_size"]) == (100, 100, 256)
    for bad in ("0", "8193"):
        code, out, err = run_cli([*init, "--image", "bad.img", "--chunk-entries", bad], capsys, cli_card)
        assert code == 2 and err == (f"simvault: error: chunk entries {bad}: 1 to 8192 (default one per 2048 "
                                     "bytes of capacity, at least 64)\n")
        assert not (tmp_path / "bad.img").exists()


def test_a_manifest_longer_than_the_card_takes_is_refused_first():
    """The Java card's manifest buffer (install parameter 09, reported in GET STATUS) bounds the
    chunks of one backup: a 2 MB archive of 16 KiB chunks has a manifest over the old 8192."""
    room = CardRoom(free_bytes=4 << 20, total_bytes=4 << 20, free_entries=2048, total_entries=2048,
                    block_size=256, max_manifest=8192)
    need = upload_need([16384] * 124, 8574, 124, 256)
    with pytest.raises(CardFullError) as exc:
        check_fits(room, need)
    assert str(exc.value) == ("nothing written: this backup's manifest (8574 bytes for 124 chunks) is longer than "
                              "the card takes (8192 bytes, install parameter 09): back up less at a time (--scope), "
                              "or install the applet with a larger 09 (up to 32767: about 480 chunks); the Python "
                              "emulator takes 256 KiB")
    check_fits(dataclasses.replace(room, max_manifest=C.default_max_manifest(4 << 20)), need)   # 32767 now


def test_a_card_that_refuses_the_manifest_at_begin_says_so(tmp_path, ident, monkeypatch):
    """A card that does not report its manifest limit answers 6A84 to BEGIN BACKUP: the host
    names the manifest's length, not the bytes (BEGIN reserves none), and nothing is open."""
    from card import store as card_store
    vcard = make_card(tmp_path / "c.img", ident)
    card = open_card(vcard)
    monkeypatch.setattr(card_store, "MAX_MANIFEST", 1000)        # the emulator's limit, as a small card's
    real_status = card.status
    monkeypatch.setattr(card, "status", lambda: dataclasses.replace(real_status(), max_manifest=None))
    archive = ops.backup_tree(blob_tree(30, 500), ident, max_chunk_size=1024, archive_format=1)
    assert len(archive.manifest_bytes) > 1000
    with pytest.raises(CardFullError) as exc:
        ops.backup_to_card(card, archive)
    assert exc.value.sw == SW.NOT_ENOUGH_MEMORY
    assert str(exc.value).startswith(f"this backup's manifest ({len(archive.manifest_bytes)} bytes for "
                                     f"{len(archive.manifest.chunks)} chunks) is longer than the card takes "
                                     "(BEGIN BACKUP answered 6A84): ")
    assert not real_status().session_active and real_status().chunks == 0
    vcard.close()


def test_a_card_with_every_backup_slot_used_is_refused_first(tmp_path, ident):
    vcard = make_card(tmp_path / "c.img", ident)
    card = open_card(vcard)
    tree = generate_tree(500, 3)
    for i in range(C.MAX_BACKUPS):
        tree.replace("./DevInfo/DevId", f"IMEI:{i:015d}")          # another device each time: full backups
        ops.backup_tree_to_card(card, tree, ident, incremental=False)
    before = card.status()
    assert before.backups == before.max_backups == C.MAX_BACKUPS
    with pytest.raises(CardFullError, match=r"^card full, nothing written: every backup slot is used: delete"):
        ops.backup_tree_to_card(card, tree, ident, incremental=False)
    assert card.status() == before
    vcard.close()
