"""Backups through the in-process emulator: round trip, incremental, refusals at COMMIT,
a full card, power loss mid-upload, export/import byte for byte."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from cards import TEST_PIN, build_test_card

from apdu_specs import constants as C
from card.nvm import PowerLoss
from host.backup import ops
from host.archive import Archive, make_archive, verify_archive
from host.client import BackupCard
from host.errors import CardError, SimvaultError
from host.backup.keys import generate_identity
from host.link import EmulatorTransport, Link
from host.tree.generate import generate_tree, mutate_leaves
from host.tree.tnds import read_tnds

SAMPLE = Path(__file__).parent / "data" / "phone_tree.tnds.xml"


class InsCounter:
    """A link tracer that counts APDUs on the wire by INS."""

    def __init__(self) -> None:
        self.by_ins: Counter[int] = Counter()
        self.bytes_by_ins: Counter[int] = Counter()

    def trace(self, apdu, response, seconds, protocol=""):
        self.by_ins[apdu.ins] += 1
        self.bytes_by_ins[apdu.ins] += len(apdu.data)


@pytest.fixture
def ident(tmp_path):
    return generate_identity(tmp_path / "keys")


def open_card(vcard, tracer=None) -> BackupCard:
    link = Link(EmulatorTransport(vcard), tracer=tracer)
    link.connect()
    card = BackupCard(link)
    card.select()
    card.verify_pin(TEST_PIN)
    return card


@pytest.fixture
def vcard(tmp_path, ident):
    card = build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point])
    yield card
    card.close()


def test_sample_round_trip_through_the_card(vcard, ident, tmp_path):
    tree = read_tnds(SAMPLE.read_bytes())
    card = open_card(vcard)
    archive = ops.backup_tree(tree, ident, max_chunk_size=card.fci.max_chunk_size)
    report = ops.backup_to_card(card, archive)
    assert report.chunks_sent == len(archive.manifest.chunks)
    back = ops.archive_from_card(card, archive.backup_id)
    assert back.to_bytes() == archive.to_bytes()          # byte for byte the same archive
    live = tmp_path / "live.xml"
    live.write_bytes(SAMPLE.read_bytes())
    mutated = read_tnds(SAMPLE.read_bytes())
    mutated.replace("./DevDetail/SwV", "9.9.9") if mutated.exists("./DevDetail/SwV") else None
    report = ops.restore_tree_file(live, back, ident, dry_run=True)
    assert report.changes == []
    assert verify_archive(back, ident.trust, ident.decryptor).tree == tree


def test_incremental_sends_only_changed_chunks(vcard, ident):
    tree = generate_tree(600_000, 11)   # large enough for a chain dictionary
    counter = InsCounter()
    card = open_card(vcard, counter)
    # format 1 (CDC chunks; format 3 is tests/test_incremental*.py)
    full = ops.backup_tree(tree, ident, max_chunk_size=card.fci.max_chunk_size, archive_format=1)
    ops.backup_to_card(card, full)
    full_puts = counter.by_ins[C.Ins.PUT_CHUNK]
    mutate_leaves(tree, 0.01, seed=1)
    counter.by_ins.clear()
    previous = ops.latest_archive_on_card(card, full.device_id)
    assert previous is not None and previous.backup_id == full.backup_id
    inc = ops.backup_tree(tree, ident, previous=previous, max_chunk_size=card.fci.max_chunk_size,
                          archive_format=1)
    report = ops.backup_to_card(card, inc)
    new_ids = {c.chunk_id for c in inc.manifest.chunks} - {c.chunk_id for c in full.manifest.chunks}
    assert report.chunks_sent == len(new_ids) < len(inc.manifest.chunks)
    # a chunk may need several chained APDUs; there are no PUTs for reused chunks
    assert counter.by_ins[C.Ins.PUT_CHUNK] < full_puts
    assert inc.host.dictionary is not None and inc.host.dictionary == full.host.dictionary
    restored = verify_archive(ops.archive_from_card(card, inc.backup_id), ident.trust, ident.decryptor)
    assert restored.tree == tree


@pytest.mark.parametrize("attack", ["untrusted", "bad_signature", "chunk_hash", "rollback"])
def test_card_refuses_at_commit(vcard, ident, tmp_path, attack):
    tree = generate_tree(20_000, 3)
    card = open_card(vcard)
    good = ops.backup_tree(tree, ident, max_chunk_size=card.fci.max_chunk_size)
    ops.backup_to_card(card, good)
    before = ops.archive_from_card(card, good.backup_id).to_bytes()
    if attack == "untrusted":
        mallory = generate_identity(tmp_path / "m", "m")
        bad, sw = make_archive(tree, mallory.signer, ident.recipients(), sequence=good.sequence + 1), 0x6984
    elif attack == "bad_signature":
        a = make_archive(tree, ident.signer, ident.recipients(), sequence=good.sequence + 1)
        sig = bytearray(a.signature)
        sig[5] ^= 1
        bad, sw = Archive(a.manifest_bytes, bytes(sig), a.chunks), 0x6688
    elif attack == "chunk_hash":
        a = make_archive(tree, ident.signer, ident.recipients(), sequence=good.sequence + 1)
        cid = a.manifest.chunks[0].chunk_id
        data = bytearray(a.chunks[cid])
        data[-1] ^= 1
        bad, sw = Archive(a.manifest_bytes, a.signature, {**a.chunks, cid: bytes(data)}), 0x6689
    else:
        bad, sw = make_archive(tree, ident.signer, ident.recipients(), sequence=good.sequence), 0x668A
    with pytest.raises(CardError) as exc:
        ops.backup_to_card(card, bad)
    assert exc.value.sw == sw
    assert [e.backup_id for e in card.list_backups()] == [good.backup_id]
    assert ops.archive_from_card(card, good.backup_id).to_bytes() == before


def test_full_card_is_a_clear_error_and_keeps_earlier_backups(tmp_path, ident):
    vcard = build_test_card(tmp_path / "small.img", capacity=96 * 1024, anchors=[ident.signer.public_point])
    card = open_card(vcard)
    small = ops.backup_tree(generate_tree(20_000, 1), ident, max_chunk_size=card.fci.max_chunk_size)
    ops.backup_to_card(card, small)
    # random-looking values do not compress: far more than the card holds
    big_tree = generate_tree(20_000, 2)
    import os
    for i in range(60):
        big_tree.add(f"./Vendor/Blob{i}", os.urandom(2000), format="bin", create_parents=True)
    big_tree.replace("./DevInfo/DevId", small.device_id)
    with pytest.raises(CardError) as exc:
        ops.backup_tree_to_card(card, big_tree, ident, incremental=False)
    assert exc.value.sw == 0x6A84 and "\n" not in str(exc.value)
    card.abort()
    assert [e.backup_id for e in card.list_backups()] == [small.backup_id]
    assert verify_archive(ops.archive_from_card(card, small.backup_id), ident.trust, ident.decryptor)
    vcard.close()


def test_power_loss_mid_upload_keeps_previous_and_rerun_finishes(vcard, ident):
    tree = generate_tree(60_000, 5)
    card = open_card(vcard)
    first = ops.backup_tree(tree, ident, max_chunk_size=card.fci.max_chunk_size, archive_format=1)
    ops.backup_to_card(card, first)
    mutate_leaves(tree, 0.2, seed=2)
    second = ops.backup_tree(tree, ident, previous=first, max_chunk_size=card.fci.max_chunk_size,
                             archive_format=1)   # format 1: enough NVM writes to cut at 40
    vcard.arm_fault(cut_after=40)
    with pytest.raises((SimvaultError, PowerLoss)):
        ops.backup_to_card(card, second)
    vcard.disarm_fault()
    vcard.power_off()
    card = open_card(vcard)                       # power back on: NVM recovery ran
    assert [e.backup_id for e in card.list_backups()] == [first.backup_id]
    assert verify_archive(ops.archive_from_card(card, first.backup_id), ident.trust, ident.decryptor)
    report = ops.backup_to_card(card, second)     # the same archive again: resumes
    assert report.resumed
    assert report.chunks_sent < len([c for c in second.manifest.chunks if c.chunk_id not in first.chunks]) + 1
    assert verify_archive(ops.archive_from_card(card, second.backup_id), ident.trust,
                          ident.decryptor).tree == tree


def test_export_import_byte_for_byte(tmp_path, ident):
    a = build_test_card(tmp_path / "a.img", anchors=[ident.signer.public_point])
    b = build_test_card(tmp_path / "b.img", anchors=[ident.signer.public_point])
    tree = generate_tree(30_000, 9)
    card_a = open_card(a)
    archive = ops.backup_tree(tree, ident, max_chunk_size=card_a.fci.max_chunk_size)
    ops.backup_to_card(card_a, archive)
    path = ops.write_archive_file(tmp_path, ops.archive_from_card(card_a, archive.backup_id))
    card_b = open_card(b)
    ops.backup_to_card(card_b, ops.read_archive_file(path))
    assert ops.archive_from_card(card_b, archive.backup_id).to_bytes() == path.read_bytes() == archive.to_bytes()
    a.close()
    b.close()


def test_interrupted_backup_resumes_with_the_same_id(vcard, ident, tmp_path):
    tree = generate_tree(80_000, 6)
    pending = tmp_path / "pending"
    card = open_card(vcard)
    vcard.arm_fault(cut_after=25)
    with pytest.raises((SimvaultError, PowerLoss)):
        ops.backup_tree_to_card(card, tree, ident, pending_dir=pending)
    vcard.disarm_fault()
    vcard.power_off()
    assert len(list(pending.iterdir())) == 1          # the archive waits for its COMMIT
    waiting = ops.read_archive_file(next(pending.iterdir()))
    counter = InsCounter()
    card = open_card(vcard, counter)
    archive, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=pending)
    assert archive.backup_id == waiting.backup_id and report.resumed
    assert report.chunks_sent < len(archive.manifest.chunks)   # what arrived before the cut is skipped
    assert not list(pending.glob("*.svarch")) and len(list((pending / "last").iterdir())) == 1
    assert verify_archive(ops.archive_from_card(card, archive.backup_id), ident.trust,
                          ident.decryptor).tree == tree


def test_host_copy_spares_reading_the_previous_backup(vcard, ident, tmp_path):
    """With the host's copy of the last backup, an incremental reads no manifest or dictionary."""
    tree = generate_tree(600_000, 12)
    counter = InsCounter()
    card = open_card(vcard, counter)
    host_dir = tmp_path / "host"
    first, _ = ops.backup_tree_to_card(card, tree, ident, pending_dir=host_dir)
    mutate_leaves(tree, 0.01, seed=4)
    tree.replace("./DevInfo/DevId", first.device_id)
    counter.by_ins.clear()
    second, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=host_dir)
    assert second.host.previous == first.backup_id and report.chunks_sent < report.chunks_total
    assert counter.by_ins[C.Ins.READ_MANIFEST] == 0 and counter.by_ins[C.Ins.READ_CHUNK] == 0
    # a stale host copy (another backup is newest on the card) is not used
    other = generate_tree(30_000, 13)
    other.replace("./DevInfo/DevId", first.device_id)
    ops.backup_tree_to_card(card, other, ident, incremental=False)
    counter.by_ins.clear()
    third, _ = ops.backup_tree_to_card(card, tree, ident, pending_dir=host_dir)
    assert counter.by_ins[C.Ins.READ_MANIFEST] > 0 and third.host.previous != second.backup_id
    assert verify_archive(ops.archive_from_card(card, third.backup_id), ident.trust,
                          ident.decryptor).tree == tree


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(6_000, 120_000), seed=st.integers(0, 10_000))
def test_generated_trees_round_trip_through_the_card(vcard, ident, size, seed):
    tree = generate_tree(size, seed)
    card = open_card(vcard)
    archive, _ = ops.backup_tree_to_card(card, tree, ident, incremental=False)
    back = ops.archive_from_card(card, archive.backup_id)
    assert back.to_bytes() == archive.to_bytes()
    assert verify_archive(back, ident.trust, ident.decryptor).tree == tree
    card.delete_backup(archive.backup_id)
    vcard.power_off()
