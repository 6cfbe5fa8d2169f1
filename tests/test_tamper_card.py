"""The card itself refuses tampered uploads at COMMIT; committed backups stay intact."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from cards import TEST_PIN, build_test_card

from host.backup import ops
from host.archive import verify_archive
from host.client import BackupCard
from host.errors import CardError
from host.backup.keys import generate_identity
from host.link import EmulatorTransport, Link
from host.tree.generate import generate_tree

REFUSALS = {0x6688, 0x6689, 0x6984, 0x6A80, 0x6A88, 0x668A}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tcard")
    ident = generate_identity(tmp / "keys")
    vcard = build_test_card(tmp / "card.img", anchors=[ident.signer.public_point])
    link = Link(EmulatorTransport(vcard))
    link.connect()
    card = BackupCard(link)
    card.select()
    card.verify_pin(TEST_PIN)
    tree = generate_tree(20_000, 21)
    good = ops.backup_tree(tree, ident, max_chunk_size=card.fci.max_chunk_size)
    ops.backup_to_card(card, good)
    nxt = ops.backup_tree(tree, ident, min_sequence=good.sequence + 1, max_chunk_size=card.fci.max_chunk_size)
    yield ident, card, good, nxt, ops.archive_from_card(card, good.backup_id).to_bytes()
    vcard.close()


def _upload_raw(card: BackupCard, archive, manifest: bytes, signature: bytes, chunks: dict) -> None:
    card.begin_backup(archive.backup_id, archive.sequence, len(manifest))
    present = card.query_chunks([c.chunk_id for c in archive.manifest.chunks])
    for ref, here in zip(archive.manifest.chunks, present):
        if not here:
            card.put_chunk(ref.chunk_id, chunks[ref.chunk_id])
    card.put_manifest(manifest)
    card.commit(signature)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["manifest", "signature", "chunk"]), where=st.floats(0, 1), bit=st.integers(0, 7))
def test_flipped_bit_refused_by_the_card(setup, target, where, bit):
    ident, card, good, nxt, before = setup
    manifest, signature, chunks = bytearray(nxt.manifest_bytes), bytearray(nxt.signature), dict(nxt.chunks)
    if target == "manifest":
        manifest[min(int(where * len(manifest)), len(manifest) - 1)] ^= 1 << bit
    elif target == "signature":
        signature[min(int(where * 64), 63)] ^= 1 << bit
    else:
        ref = nxt.manifest.chunks[min(int(where * len(nxt.manifest.chunks)), len(nxt.manifest.chunks) - 1)]
        data = bytearray(chunks[ref.chunk_id])
        data[min(int(where * len(data)), len(data) - 1)] ^= 1 << bit
        chunks[ref.chunk_id] = bytes(data)
    try:
        with pytest.raises(CardError) as exc:
            _upload_raw(card, nxt, bytes(manifest), bytes(signature), chunks)
        assert exc.value.sw in REFUSALS
    finally:
        card.abort()
    assert [e.backup_id for e in card.list_backups()] == [good.backup_id]
    back = ops.archive_from_card(card, good.backup_id)
    assert back.to_bytes() == before
    assert verify_archive(back, ident.trust, ident.decryptor)
