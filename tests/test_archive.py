"""Archive format: round trips, determinism, strict parsing, incremental dedup."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.archive import MAGIC, Archive, ChunkerParams, make_archive, verify_archive
from host.archive.cdc import cut_points, gear_table
from host.archive.codec import CODECS, compress_chunk, decompress_chunk
from host.archive.host_section import HostSection
from host.errors import ArchiveError, IntegrityError
from host.backup.keys import generate_identity
from host.tree.canonical import canonical_bytes
from host.tree.generate import generate_tree, mutate_leaves
from host.tree.tnds import read_tnds

SAMPLE = Path(__file__).parent / "data" / "phone_tree.tnds.xml"


@pytest.fixture(scope="module")
def sample_tree():
    return read_tnds(SAMPLE.read_bytes())


def test_sample_round_trip_through_bytes(ident, sample_tree):
    archive = make_archive(sample_tree, ident.signer, ident.recipients())
    data = archive.to_bytes()
    assert data.startswith(MAGIC)
    again = Archive.from_bytes(data)
    assert again.to_bytes() == data
    verified = verify_archive(again, ident.trust, ident.decryptor, device_id=archive.device_id)
    assert verified.tree == sample_tree
    assert canonical_bytes(verified.tree) == canonical_bytes(sample_tree)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(6_000, 60_000), seed=st.integers(0, 1000),
       avg=st.sampled_from([256, 1024, 4096]))
def test_generated_trees_round_trip(ident, size, seed, avg):
    tree = generate_tree(size, seed)
    archive = make_archive(tree, ident.signer, ident.recipients(),
                           chunker=ChunkerParams(avg // 4, avg, avg * 4))
    back = verify_archive(Archive.from_bytes(archive.to_bytes()), ident.trust, ident.decryptor)
    assert back.tree == tree


def test_chunks_are_deterministic_within_a_chain(ident):
    tree = generate_tree(50_000, 1)
    first = make_archive(tree, ident.signer, ident.recipients())
    second = make_archive(tree, ident.signer, ident.recipients(), previous=first, decryptor=ident.decryptor)
    assert second.manifest.chunks == first.manifest.chunks
    assert second.host.chain_id == first.host.chain_id
    assert second.sequence > first.sequence
    assert second.host.previous == first.backup_id


def test_incremental_after_one_percent_reuses_most_chunks(ident):
    tree = generate_tree(400_000, 2)
    full = make_archive(tree, ident.signer, ident.recipients(), chunker=ChunkerParams(256, 1024, 4096))
    mutate_leaves(tree, 0.01, seed=5)
    inc = make_archive(tree, ident.signer, ident.recipients(), previous=full, decryptor=ident.decryptor)
    new = [c for c in inc.manifest.chunks if c.chunk_id not in full.chunks]
    sent = sum(c.size for c in new)
    assert 0 < sent < inc.manifest.total_size * 0.6
    # the same ids in both manifests carry the same stored bytes
    for c in inc.manifest.chunks:
        if c.chunk_id in full.chunks:
            assert hashlib.sha256(full.chunks[c.chunk_id]).digest() == c.sha256
    assert verify_archive(inc, ident.trust, ident.decryptor).tree == tree


def test_repeated_content_uses_the_order_list(ident):
    tree = generate_tree(8_000, 3)
    blob = "A" * 3000
    for i in range(6):
        tree.add(f"./Vendor/Rep{i}", blob, format="chr", create_parents=True)
    archive = make_archive(tree, ident.signer, ident.recipients(), chunker=ChunkerParams(64, 256, 1024))
    assert archive.host.order is not None
    assert verify_archive(Archive.from_bytes(archive.to_bytes()), ident.trust, ident.decryptor).tree == tree


def test_cdc_boundaries_resync_after_an_edit():
    data = bytes(hashlib.sha256(i.to_bytes(4, "big")).digest()[0] for i in range(200_000))
    params, gear = ChunkerParams(512, 2048, 8192), gear_table(b"k" * 32)
    cuts = cut_points(data, params, gear)
    assert cuts[-1] == len(data) and all(b > a for a, b in zip([0] + cuts, cuts))
    sizes = [b - a for a, b in zip([0] + cuts, cuts)]
    assert max(sizes) <= 8192 and min(sizes[:-1]) >= 512
    edited = data[:100_000] + b"\x00\x01" + data[100_002:]
    cuts2 = cut_points(edited, params, gear)
    assert len(set(cuts) & set(cuts2)) >= len(cuts) - 3


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_codecs_round_trip_and_bound(codec):
    data = b"./DMAcc/x/AppAuth " * 400
    payload = compress_chunk(codec, data)
    assert decompress_chunk(payload, len(data)) == data
    if codec != "none":
        with pytest.raises(IntegrityError):
            decompress_chunk(payload, len(data) - 1)


def test_parser_refuses_garbage_and_truncation(ident, sample_tree):
    data = make_archive(sample_tree, ident.signer, ident.recipients()).to_bytes()
    for bad in (b"", b"SVARCH2\n" + data[8:], data[:20], data[:-1], data + b"\x00",
                data[:8] + b"\xff\xff\xff\xff" + data[12:]):
        with pytest.raises(ArchiveError) as exc:
            Archive.from_bytes(bad)
        assert "\n" not in str(exc.value)


def test_host_section_is_canonical(ident, sample_tree):
    host = make_archive(sample_tree, ident.signer, ident.recipients()).host
    raw = host.encode()
    assert HostSection.decode(raw) == host
    with pytest.raises(ArchiveError):
        HostSection.decode(raw.replace(b'{"chain_id"', b'{ "chain_id"'))
    with pytest.raises(ArchiveError):
        HostSection.decode(raw[:-1] + b',"extra":1}')


def test_recipients_each_open_the_archive(ident, sample_tree, tmp_path):
    server = generate_identity(tmp_path / "server", "server")
    archive = make_archive(sample_tree, ident.signer, [ident.recipient, server.recipient])
    assert set(archive.host.recipients) == {ident.recipient.key_id, server.recipient.key_id}
    assert verify_archive(archive, ident.trust, server.decryptor).tree == sample_tree
    outsider = generate_identity(tmp_path / "out", "x")
    with pytest.raises(IntegrityError, match="not encrypted for key"):
        verify_archive(archive, ident.trust, outsider.decryptor)


def test_dictionary_chain_round_trip_and_reuse(ident):
    tree = generate_tree(1_000_000, 4)
    full = make_archive(tree, ident.signer, ident.recipients())
    assert full.host.dictionary == full.manifest.chunks[-1].chunk_id
    assert verify_archive(Archive.from_bytes(full.to_bytes()), ident.trust, ident.decryptor).tree == tree
    mutate_leaves(tree, 0.01, seed=8)
    # the incremental needs only the previous manifest and its dictionary chunk
    manifest_only = Archive(full.manifest_bytes, full.signature,
                            {full.host.dictionary: full.chunks[full.host.dictionary]})
    inc = make_archive(tree, ident.signer, ident.recipients(), previous=manifest_only, decryptor=ident.decryptor)
    assert inc.host.dictionary == full.host.dictionary
    assert inc.manifest.chunks[-1] == full.manifest.chunks[-1]
    merged = Archive(inc.manifest_bytes, inc.signature, {**full.chunks, **inc.chunks})
    assert verify_archive(merged, ident.trust, ident.decryptor).tree == tree


def test_tampered_dictionary_chunk_is_refused(ident):
    tree = generate_tree(1_000_000, 5)
    a = make_archive(tree, ident.signer, ident.recipients())
    d = bytearray(a.chunks[a.host.dictionary])
    d[40] ^= 0x10
    with pytest.raises(IntegrityError, match="dictionary"):
        verify_archive(Archive(a.manifest_bytes, a.signature, {**a.chunks, a.host.dictionary: bytes(d)}),
                       ident.trust, ident.decryptor)


def test_no_plaintext_secret_or_name_in_the_archive(ident, sample_tree):
    data = make_archive(sample_tree, ident.signer, ident.recipients()).to_bytes()
    from host.tree.secrets import secret_uris
    for uri in secret_uris(sample_tree):
        value = sample_tree.get(uri).data
        if len(value) >= 6:
            assert value not in data
    assert b"AAuthSecret" not in data and b"DMAcc" not in data and b"DevInfo" not in data
