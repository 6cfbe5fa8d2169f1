"""Tampered archives are refused by the host, before the live tree is touched."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apdu_specs.manifest import MANIFEST
from host.backup import ops
from host.archive import Archive, make_archive, verify_archive
from host.errors import ArchiveError, IntegrityError
from host.backup.keys import generate_identity
from host.tree.generate import generate_tree
from host.tree.tnds import write_tnds

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tree():
    return generate_tree(30_000, 7)


@pytest.fixture(scope="module")
def archive_bytes(ident, tree):
    return make_archive(tree, ident.signer, ident.recipients()).to_bytes()


def _refused(data: bytes, ident) -> None:
    with pytest.raises(ArchiveError) as exc:  # IntegrityError is an ArchiveError
        verify_archive(Archive.from_bytes(data), ident.trust, ident.decryptor)
    assert "\n" not in str(exc.value)


@SETTINGS
@given(st.data())
def test_any_bit_flip_is_refused(ident, archive_bytes, data):
    pos = data.draw(st.integers(0, len(archive_bytes) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    flipped = bytearray(archive_bytes)
    flipped[pos] ^= 1 << bit
    _refused(bytes(flipped), ident)


@pytest.mark.parametrize("region", ["manifest", "signature", "chunk"])
def test_flip_in_each_region(ident, archive_bytes, region):
    a = Archive.from_bytes(archive_bytes)
    start = 12 + len(a.manifest_bytes)
    pos = {"manifest": 12 + len(a.manifest_bytes) // 2, "signature": start + 10,
           "chunk": start + 64 + 4 + 20}[region]
    flipped = bytearray(archive_bytes)
    flipped[pos] ^= 0x01
    _refused(bytes(flipped), ident)


def test_swapped_chunk_between_backups_is_refused(ident, tree):
    a = make_archive(tree, ident.signer, ident.recipients())
    other = generate_tree(30_000, 8)
    b = make_archive(other, ident.signer, ident.recipients(), previous=a, decryptor=ident.decryptor)
    victim = b.manifest.chunks[0].chunk_id
    donor = next(c for c in a.manifest.chunks if c.chunk_id not in b.chunks)
    b.chunks[victim] = a.chunks[donor.chunk_id]
    with pytest.raises(IntegrityError, match="signed hash"):
        verify_archive(b, ident.trust, ident.decryptor)


def test_resigned_chunk_from_another_chain_fails_its_tag(ident, tree):
    """Even a manifest re-signed by the trusted key cannot pass off another chain's chunk."""
    a = make_archive(tree, ident.signer, ident.recipients())
    b = make_archive(tree, ident.signer, ident.recipients())  # new chain: other keys
    ref = a.manifest.chunks[0]
    foreign = b.chunks[b.manifest.chunks[0].chunk_id]
    chunks = tuple(type(ref)(ref.chunk_id, hashlib.sha256(foreign).digest(), len(foreign))
                   if c == ref else c for c in a.manifest.chunks)
    m = MANIFEST.build(type(a.manifest)(**{**a.manifest.__dict__, "chunks": chunks, "total_size": -1}))
    forged = Archive(m, ident.signer.sign(m), {**a.chunks, ref.chunk_id: foreign})
    with pytest.raises(IntegrityError, match="GCM tag"):
        verify_archive(forged, ident.trust, ident.decryptor)


def test_untrusted_signer_is_refused(ident, tree, tmp_path):
    mallory = generate_identity(tmp_path / "m", "mallory")
    forged = make_archive(tree, mallory.signer, ident.recipients())
    with pytest.raises(IntegrityError, match="not trusted"):
        verify_archive(forged, ident.trust, ident.decryptor)


def test_other_device_and_replay_refused_unless_forced(ident, tree, tmp_path):
    archive = make_archive(tree, ident.signer, ident.recipients(), device_id="IMEI:other")
    with pytest.raises(IntegrityError, match="belongs to device"):
        verify_archive(archive, ident.trust, ident.decryptor, device_id="IMEI:mine")
    verify_archive(archive, ident.trust, ident.decryptor, device_id="IMEI:mine", force_device=True)
    with pytest.raises(IntegrityError, match="older than"):
        verify_archive(archive, ident.trust, ident.decryptor, min_sequence=archive.sequence + 1)
    verify_archive(archive, ident.trust, ident.decryptor, min_sequence=archive.sequence + 1,
                   force_sequence=True)


def test_tampered_restore_leaves_the_live_file_untouched(ident, tree, tmp_path):
    live = tmp_path / "live.xml"
    changed = tree.copy()
    leaf = next(u for u, n in changed.walk() if not n.interior and n.format == "chr" and "DevId" not in u)
    changed.replace(leaf, "changed value")
    live.write_bytes(write_tnds(changed))
    before = live.read_bytes()
    data = bytearray(make_archive(tree, ident.signer, ident.recipients()).to_bytes())
    data[-5] ^= 0x40
    archive = Archive.from_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        ops.restore_tree_file(live, archive, ident)
    assert live.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["live.xml"]  # no temp file left


def test_replay_of_older_backup_after_a_restore(ident, tree, tmp_path):
    live = tmp_path / "live.xml"
    live.write_bytes(write_tnds(tree))
    state = ops.HostState(tmp_path / "state.json")
    old = make_archive(tree, ident.signer, ident.recipients(), sequence=10)
    new = make_archive(tree, ident.signer, ident.recipients(), sequence=11)
    ops.restore_tree_file(live, new, ident, state=state)
    with pytest.raises(IntegrityError, match="older than"):
        ops.restore_tree_file(live, old, ident, state=state)
    ops.restore_tree_file(live, old, ident, state=state, force_sequence=True)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_only_raise_archive_errors(blob, with_magic):
    data = (b"SVARCH1\n" + blob) if with_magic else blob
    with pytest.raises(ArchiveError):
        Archive.from_bytes(data)


@SETTINGS
@given(st.data())
def test_truncation_anywhere_is_refused(ident, archive_bytes, data):
    cut = data.draw(st.integers(0, len(archive_bytes) - 1))
    with pytest.raises(ArchiveError):
        Archive.from_bytes(archive_bytes[:cut])
