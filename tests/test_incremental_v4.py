"""Layered host section v4 (format 3): the key block in the base chunk, derived nonces, small
layers; and archives written by the v3 code (tests/data/v3_archive) still restore."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
from bench_backup import change, tree_named  # noqa: E402

from apdu_specs.manifest import MANIFEST, ChunkRef
from host.archive import Archive, verify_archive
from host.archive.keyblock import encode_key_block, split_key_block
from host.archive.layered_host import LayeredHost
from host.backup import ops
from host.backup.keys import TrustStore, generate_identity, load_identity
from host.errors import ArchiveError, IntegrityError
from host.tree.canonical import canonical_bytes

V3_DATA = Path(__file__).parent / "data" / "v3_archive"


@pytest.fixture(scope="module")
def ident(tmp_path_factory):
    return generate_identity(tmp_path_factory.mktemp("v4") / "keys")


@pytest.fixture(scope="module")
def phone_chain(ident):
    tree = tree_named("phone")
    full = ops.backup_tree(tree, ident)
    changed = tree.copy()
    change(changed, "random", seed=7)
    return tree, full, changed, ops.backup_tree(changed, ident, previous=full)


def _new_chunks(inc: Archive, prev: Archive) -> list[ChunkRef]:
    old = {c.chunk_id for c in prev.manifest.chunks}
    return [c for c in inc.manifest.chunks if c.chunk_id not in old]


def test_the_chain_keys_travel_once_in_the_base_chunk(ident, phone_chain):
    tree, full, changed, inc = phone_chain
    assert full.host.version == inc.host.version == 4 and full.format == inc.format == 3
    assert full.host.recipients == {} and inc.host.recipients == {}          # not in the manifest
    assert set(full.recipients) == set(inc.recipients) == {ident.recipient.key_id}
    base = full.manifest.chunks[0]
    assert inc.manifest.chunks[0] == base                  # the same chunk, the card holds it
    wrapped, _ = split_key_block(full.chunks[base.chunk_id])
    assert wrapped == full.recipients
    new = _new_chunks(inc, full)
    assert len(new) == 1 and len(inc.host.segments) == 2
    sent = sum(c.size for c in new) + len(inc.manifest_bytes) + 64
    # v3 sent 610 bytes for this change (bench/bench_backup.py); the wrapped key is gone from it
    assert sent < 420, sent
    assert verify_archive(inc, ident.trust, ident.decryptor).tree == changed
    again = Archive.from_bytes(inc.to_bytes())
    assert again.to_bytes() == inc.to_bytes() and again.recipients == inc.recipients


def test_a_changed_recipient_set_starts_a_new_chain(tmp_path):
    dev = generate_identity(tmp_path / "dev")
    srv = generate_identity(tmp_path / "srv", "server")
    t = tree_named("phone")
    full = ops.backup_tree(t, dev)
    TrustStore(tmp_path / "dev" / "recipients").add(srv.recipient.public_point)
    dev = load_identity(tmp_path / "dev")
    added = ops.backup_tree(t, dev, previous=full)     # the key block cannot grow: new chain keys
    assert added.host.previous is None and added.host.chain_id != full.host.chain_id
    assert set(added.recipients) == {dev.recipient.key_id, srv.recipient.key_id}
    assert verify_archive(added, dev.trust, srv.decryptor).tree == t      # the new recipient reads it
    same = ops.backup_tree(t, dev, previous=added)
    assert same.host.chain_id == added.host.chain_id


def _resigned(a: Archive, signer, chunks) -> Archive:
    m = a.manifest
    raw = MANIFEST.build(type(m)(**{**m.__dict__, "total_size": -1, "chunks": tuple(chunks)}))
    return Archive(raw, signer.sign(raw), dict(a.chunks))


def test_a_tampered_key_block_is_refused(ident, phone_chain):
    _, full, _, inc = phone_chain
    ref = inc.manifest.chunks[0]
    stored = bytearray(inc.chunks[ref.chunk_id])
    stored[12] ^= 1                                        # inside the wrapped key
    bad = Archive(inc.manifest_bytes, inc.signature, {**inc.chunks, ref.chunk_id: bytes(stored)})
    with pytest.raises(IntegrityError, match="signed hash"):
        verify_archive(bad, ident.trust, ident.decryptor)
    with pytest.raises(IntegrityError, match="signed hash"):
        bad.recipients
    # even re-signed (hash updated): the wrapped key no longer opens
    table = [ChunkRef(ref.chunk_id, hashlib.sha256(bytes(stored)).digest(), len(stored))] + list(inc.manifest.chunks[1:])
    forged = _resigned(inc, ident.signer, table)
    forged.chunks[ref.chunk_id] = bytes(stored)
    with pytest.raises(IntegrityError):
        verify_archive(forged, ident.trust, ident.decryptor)
    missing = Archive(inc.manifest_bytes, inc.signature, {k: v for k, v in inc.chunks.items() if k != ref.chunk_id})
    with pytest.raises(IntegrityError, match="lacks"):
        verify_archive(missing, ident.trust, ident.decryptor)
    assert missing.summary()["recipients"] == []           # listing still works without it


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, 400), value=st.integers(0, 255), cut=st.booleans())
def test_fuzzed_key_blocks_only_raise_integrity_errors(phone_chain, pos, value, cut):
    _, full, _, _ = phone_chain
    raw = bytearray(full.chunks[full.manifest.chunks[0].chunk_id][:200])
    pos %= len(raw)
    if cut:
        raw = raw[:pos]
    else:
        raw[pos] = value
    try:
        wrapped, rest = split_key_block(bytes(raw))
    except IntegrityError as exc:
        assert "\n" not in str(exc)
    else:
        assert encode_key_block(wrapped) + rest == bytes(raw)


def test_v4_host_sections_are_strict(phone_chain):
    _, _, _, inc = phone_chain
    raw = inc.host.encode()
    assert raw.startswith(b"SVH4") and LayeredHost.decode(raw) == inc.host
    for bad in (raw + b"\x00", raw[:-1], b"SVH5" + raw[4:]):
        with pytest.raises(ArchiveError):
            LayeredHost.decode(bad)
    with pytest.raises(ArchiveError):
        encode_key_block({})


@pytest.fixture
def v3_identity(tmp_path):
    keys = tmp_path / "keys"
    shutil.copytree(V3_DATA / "keys", keys)
    os.chmod(keys, 0o700)
    for pem in keys.glob("*.pem"):
        os.chmod(pem, 0o600)
    return load_identity(keys)


def test_host_section_v3_archives_still_restore(v3_identity, tmp_path):
    info = json.loads((V3_DATA / "README.json").read_text())
    archives = []
    for i in range(4):
        name = f"gen{i}.svarch"
        archive = ops.read_archive_file(V3_DATA / name)
        assert archive.format == 3 and archive.host.version == 3 and len(archive.host.segments) == i + 1
        assert archive.to_bytes() == (V3_DATA / name).read_bytes()
        assert archive.backup_id.hex() == info[name]["backup_id"]
        verified = verify_archive(archive, v3_identity.trust, v3_identity.decryptor)
        assert hashlib.sha256(canonical_bytes(verified.tree)).hexdigest() == info[name]["canonical_sha256"]
        target = tmp_path / f"{i}.xml"
        assert ops.restore_tree_file(target, archive, v3_identity, create=True).applied
        assert canonical_bytes(ops.read_tree_file(target)) == canonical_bytes(verified.tree)
        archives.append(archive)
    # a tampered v3 layer is still refused
    newest = archives[-1]
    ref = newest.manifest.chunks[-1]
    flipped = bytearray(newest.chunks[ref.chunk_id])
    flipped[-1] ^= 1
    with pytest.raises(IntegrityError, match="signed hash"):
        verify_archive(Archive(newest.manifest_bytes, newest.signature, {**newest.chunks, ref.chunk_id: bytes(flipped)}),
                       v3_identity.trust, v3_identity.decryptor)
    # the next backup of a v3 chain starts a v4 one (a full backup)
    tree = verify_archive(newest, v3_identity.trust, v3_identity.decryptor).tree
    change(tree, "random", seed=99)
    nxt = ops.backup_tree(tree, v3_identity, previous=newest, device_id=newest.device_id)
    assert nxt.host.version == 4 and nxt.host.previous is None
    assert verify_archive(nxt, v3_identity.trust, v3_identity.decryptor).tree == tree
