"""Format-3 chains on a card: older backups deleted, interrupted uploads resumed, a card read back;
in-process and through pcscd + vpcd."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import TEST_PIN, build_test_card

from apdu_specs import constants as C
from card.nvm import PowerLoss
from card.runtime import CardLimits
from host.backup import ops
from host.archive import Archive, verify_archive
from host.client import BackupCard
from host.errors import CardError, SimvaultError
from host.backup.keys import generate_identity
from host.link import EmulatorTransport, Link, PcscTransport
from host.tree.generate import generate_tree, mutate_leaves


class InsCounter:
    def __init__(self) -> None:
        self.by_ins: Counter[int] = Counter()

    def trace(self, apdu, response, seconds, protocol=""):
        self.by_ins[apdu.ins] += 1


@pytest.fixture
def ident(tmp_path):
    return generate_identity(tmp_path / "keys")


def open_card(transport, tracer=None) -> BackupCard:
    link = Link(transport, tracer=tracer)
    link.connect()
    card = BackupCard(link)
    card.select()
    card.verify_pin(TEST_PIN)
    return card


def _chain_on_card(card, ident, host_dir, n: int, size: int = 150_000):
    tree = generate_tree(size, 31)
    devid = tree.get("./DevInfo/DevId").value
    made, trees = [], []
    for i in range(n):
        if i:
            mutate_leaves(tree, 0.05, seed=i)      # layers above the merge threshold (256 B): one per backup
            tree.replace("./DevInfo/DevId", devid)
        archive, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=host_dir)
        if i:
            assert report.chunks_sent == 1 and archive.host.previous == made[-1].backup_id
        made.append(archive)
        trees.append(tree.copy())
    return made, trees


def _restore_newest_after_deleting(card, ident, made, trees, delete):
    for index in delete:
        card.delete_backup(made[index].backup_id)
    left = {e.backup_id for e in card.list_backups()}
    assert left == {a.backup_id for i, a in enumerate(made) if i not in delete}
    for i, archive in enumerate(made):
        if i in delete:
            continue
        back = ops.archive_from_card(card, archive.backup_id)
        assert back.to_bytes() == archive.to_bytes()
        assert verify_archive(back, ident.trust, ident.decryptor).tree == trees[i]


def test_deleting_the_base_and_middle_backups_keeps_the_newest_restorable(tmp_path, ident):
    vcard = build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point])
    card = open_card(EmulatorTransport(vcard))
    made, trees = _chain_on_card(card, ident, tmp_path / "host", 5)
    assert [len(a.host.segments) for a in made] == [1, 2, 3, 4, 5]
    _restore_newest_after_deleting(card, ident, made, trees, delete=[0, 2])
    # the chain goes on from the newest, whose chunks the card still holds (refcounts)
    tree = trees[-1]
    mutate_leaves(tree, 0.01, seed=77)
    tree.replace("./DevInfo/DevId", made[0].device_id)
    nxt, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=tmp_path / "host")
    assert report.chunks_sent == 1 and nxt.host.previous == made[-1].backup_id
    for a in made[1:2] + made[3:]:
        card.delete_backup(a.backup_id)
    assert verify_archive(ops.archive_from_card(card, nxt.backup_id), ident.trust, ident.decryptor).tree == tree
    vcard.close()


def test_without_a_host_copy_the_previous_backup_is_read_back(tmp_path, ident):
    vcard = build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point])
    counter = InsCounter()
    card = open_card(EmulatorTransport(vcard), counter)
    tree = generate_tree(100_000, 4)
    first, _ = ops.backup_tree_to_card(card, tree, ident)          # no pending_dir: no host copy
    mutate_leaves(tree, 0.01, seed=2)
    tree.replace("./DevInfo/DevId", first.device_id)
    counter.by_ins.clear()
    second, report = ops.backup_tree_to_card(card, tree, ident)
    assert counter.by_ins[C.Ins.READ_CHUNK] >= len(first.manifest.chunks)
    assert second.host.previous == first.backup_id and report.chunks_sent == 1
    assert verify_archive(ops.archive_from_card(card, second.backup_id), ident.trust, ident.decryptor).tree == tree
    vcard.close()


def test_an_interrupted_incremental_resumes_with_the_same_id(tmp_path, ident):
    # short APDUs: a layer travels in several chained PUT CHUNKs, so the cut lands inside it
    vcard = build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point],
                            limits=CardLimits.short(t0=True))
    card = open_card(EmulatorTransport(vcard))
    host = tmp_path / "host"
    tree = generate_tree(200_000, 6)
    first, _ = ops.backup_tree_to_card(card, tree, ident, pending_dir=host)
    mutate_leaves(tree, 0.05, seed=3)
    tree.replace("./DevInfo/DevId", first.device_id)
    vcard.arm_fault(cut_after=3)
    with pytest.raises((SimvaultError, PowerLoss)):
        ops.backup_tree_to_card(card, tree, ident, pending_dir=host)
    vcard.disarm_fault()
    vcard.power_off()
    waiting = ops.read_archive_file(next(host.glob("*.svarch")))
    card = open_card(EmulatorTransport(vcard))
    assert [e.backup_id for e in card.list_backups()] == [first.backup_id]   # the torn one is invisible
    second, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=host)
    assert second.backup_id == waiting.backup_id and report.resumed and second.host.previous == first.backup_id
    assert verify_archive(ops.archive_from_card(card, second.backup_id), ident.trust, ident.decryptor).tree == tree
    vcard.close()


def test_the_card_refuses_a_tampered_layer_at_commit(tmp_path, ident):
    vcard = build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point])
    card = open_card(EmulatorTransport(vcard))
    tree = generate_tree(60_000, 8)
    first, _ = ops.backup_tree_to_card(card, tree, ident)
    mutate_leaves(tree, 0.02, seed=5)
    tree.replace("./DevInfo/DevId", first.device_id)
    inc = ops.backup_tree(tree, ident, previous=ops.latest_archive_on_card(card, first.device_id),
                          max_chunk_size=card.fci.max_chunk_size, min_sequence=first.sequence + 1)
    layer = inc.manifest.chunks[-1].chunk_id
    data = bytearray(inc.chunks[layer])
    data[20] ^= 1
    with pytest.raises(CardError) as exc:
        ops.backup_to_card(card, Archive(inc.manifest_bytes, inc.signature, {**inc.chunks, layer: bytes(data)}))
    assert exc.value.sw == 0x6689
    card.abort()
    assert [e.backup_id for e in card.list_backups()] == [first.backup_id]
    vcard.close()


@pytest.mark.pcsc
def test_chain_through_pcscd_restores_after_the_base_is_deleted(vpcd_card, tmp_path, ident):
    vcard = build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point])
    reader = vpcd_card(vcard, slot=0)
    card = open_card(PcscTransport(reader))
    made, trees = _chain_on_card(card, ident, tmp_path / "host", 3, size=80_000)
    _restore_newest_after_deleting(card, ident, made, trees, delete=[0, 1])
    live = tmp_path / "restored.xml"
    report = ops.restore_tree_file(live, ops.archive_from_card(card, made[-1].backup_id), ident, create=True)
    assert report.applied and ops.read_tree_file(live) == trees[-1]
    card.link.disconnect()
