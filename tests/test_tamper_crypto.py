"""Security review of the archive: planted chains, keyed tree digest, bombs, hostile parsers."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apdu_specs.manifest import MANIFEST
from host.backup import ops
from host.archive import Archive, make_archive, verify_archive
from host.archive.build import chain_keys_of
from host.archive.codec import decompress_chunk
from host.archive.crypto import ChainKeys
from host.archive.host_section import HostSection
from host.errors import ArchiveError, IntegrityError
from host.backup.keys import TrustStore, generate_identity
from host.tree.canonical import canonical_bytes
from host.tree.generate import generate_tree
from host.tree.secrets import secret_uris

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tree():
    return generate_tree(30_000, 11)


@pytest.fixture(scope="module")
def archive(ident, tree):
    return make_archive(tree, ident.signer, ident.recipients())


def _resigned(a: Archive, signer, host: HostSection | None = None, chunks=None) -> Archive:
    m = a.manifest
    fields = {**m.__dict__, "total_size": -1}
    if host is not None:
        fields["host_section"] = host.encode()
    if chunks is not None:
        fields["chunks"] = chunks
    raw = MANIFEST.build(type(m)(**fields))
    return Archive(raw, signer.sign(raw), dict(a.chunks))


class _ImpostorSigner:
    """Claims the device's key id, signs with another key."""

    def __init__(self, real, key_id: bytes) -> None:
        self.key_id, self.public_point, self._real = key_id, real.public_point, real

    def sign(self, message: bytes) -> bytes:
        return self._real.sign(message)


@pytest.mark.parametrize("impostor", [False, True])
def test_planted_previous_cannot_choose_the_chain_keys(ident, tree, tmp_path, impostor):
    """HPKE base mode lets anyone wrap a secret to the device's public key: a planted
    'previous' backup must not make the device encrypt its next backup under it."""
    mallory = generate_identity(tmp_path / "m", "mallory")
    signer = _ImpostorSigner(mallory.signer, ident.signer.key_id) if impostor else mallory.signer
    planted = make_archive(tree, signer, [ident.recipient, mallory.recipient], sequence=2**40)
    known = chain_keys_of(planted, mallory.decryptor)          # mallory knows these keys
    with pytest.raises(IntegrityError, match="not signed by this device"):
        make_archive(tree, ident.signer, ident.recipients(), previous=planted, decryptor=ident.decryptor)
    fresh = ops.backup_tree(tree, ident, previous=planted)     # the library falls back to a new chain
    assert fresh.host.previous is None and fresh.host.chain_id != planted.host.chain_id
    assert chain_keys_of(fresh, ident.decryptor).secret != known.secret
    assert mallory.recipient.key_id not in fresh.host.recipients


def test_damaged_copy_of_a_previous_chunk_is_not_signed_again(ident, tree, archive):
    tampered = Archive(archive.manifest_bytes, archive.signature, dict(archive.chunks))
    cid = tampered.manifest.chunks[0].chunk_id
    tampered.chunks[cid] = tampered.chunks[cid][:-1] + bytes([tampered.chunks[cid][-1] ^ 1])
    inc = make_archive(tree, ident.signer, ident.recipients(), previous=tampered, decryptor=ident.decryptor)
    assert inc.chunks[cid] == archive.chunks[cid]               # re-sealed, same deterministic bytes
    assert inc.manifest.chunks[0] == archive.manifest.chunks[0]
    assert verify_archive(inc, ident.trust, ident.decryptor).tree == tree


def test_tree_digest_is_keyed_and_version_1_still_reads(ident, tree, archive):
    plain = canonical_bytes(tree)
    data = archive.to_bytes()
    bare = hashlib.sha256(plain).digest()
    assert archive.host.version == 2 and bare not in data and bare.hex().encode() not in data
    keys = chain_keys_of(archive, ident.decryptor)
    assert archive.host.tree_digest == keys.tree_mac(plain)
    v1 = _resigned(archive, ident.signer, dataclasses.replace(archive.host, version=1, tree_digest=bare))
    assert b'"tree_sha256"' in v1.manifest.host_section
    again = Archive.from_bytes(v1.to_bytes())
    assert again.to_bytes() == v1.to_bytes() and again.host.version == 1
    assert verify_archive(again, ident.trust, ident.decryptor).tree == tree
    wrong = _resigned(archive, ident.signer, dataclasses.replace(archive.host, version=1))  # a MAC as v1 hash
    with pytest.raises(IntegrityError, match="does not match its hash"):
        verify_archive(wrong, ident.trust, ident.decryptor)


def test_removed_recipient_starts_a_new_chain(tmp_path):
    dev = generate_identity(tmp_path / "dev")
    srv = generate_identity(tmp_path / "srv", "server")
    kid = TrustStore(tmp_path / "dev" / "recipients").add(srv.recipient.public_point)
    t = generate_tree(20_000, 3)
    full = ops.backup_tree(t, dev)
    assert srv.recipient.key_id in full.recipients        # format 3: the base chunk's key block
    same = ops.backup_tree(t, dev, previous=full)
    assert same.host.chain_id == full.host.chain_id
    os.unlink(tmp_path / "dev" / "recipients" / f"{kid.hex()}.pem")
    after = ops.backup_tree(t, dev, previous=full)
    assert after.host.chain_id != full.host.chain_id and after.host.previous is None
    assert set(after.recipients) == {dev.recipient.key_id}


def test_signed_sizes_bound_decompression(ident, tree, archive):
    short = _resigned(archive, ident.signer, dataclasses.replace(archive.host, plain_size=1000))
    with pytest.raises(IntegrityError, match="beyond|add up|allow"):
        verify_archive(short, ident.trust, ident.decryptor)
    # zstd bombs stop at the bound, with or without a declared content size
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (64 << 20))
    with pytest.raises(IntegrityError):
        decompress_chunk(b"\x01" + bomb, 8192)
    streamed = zstandard.ZstdCompressor(level=3, write_content_size=False)
    with pytest.raises(IntegrityError, match="beyond"):
        decompress_chunk(b"\x01" + streamed.compressobj().compress(b"\0" * (8 << 20))
                         + streamed.compressobj().flush(), 8192)
    big = dataclasses.replace(archive.host, plain_size=(256 << 20) + 1)
    with pytest.raises(ArchiveError, match="256 MiB"):
        HostSection.decode(big.encode())


def test_duplicate_chunk_ids_refused(ident, archive):
    refs = archive.manifest.chunks
    with pytest.raises(ArchiveError, match="twice"):
        _resigned(archive, ident.signer, chunks=refs + refs[:1])


HOSTILE_HOST_SECTIONS = [
    b"[" * 200_000, b"{" * 100_000, b'{"a":' * 50_000, b"", b"null", b"1e999999", b"9" * 5000,
    b'{"version":2,"version":2}', b'{"version":Infinity}', b'{"version":NaN}', b'{"version":2.0}',
    b'{"version":1e400}', "{\"version\":\"\u00e9\"}".encode(), b"\xff\xfe", b'{"version":2}',
]


def _host_variants(archive: Archive) -> list[bytes]:
    doc = json.loads(archive.host.encode())
    out = []
    for key, bad in [("chunker", {"algorithm": "fastcdc-gear64-v1", "min": 1e400, "avg": 2048, "max": 8192}),
                     ("chunker", {"algorithm": "fastcdc-gear64-v1", "min": "512", "avg": 2048, "max": 8192}),
                     ("chunker", [1, 2]), ("plain_size", 10 ** 400), ("plain_size", -1), ("order", [[0]]),
                     ("order", [True]), ("recipients", {"00" * 8: 5}), ("recipients", {"zz": "00"}),
                     ("scope", [[]]), ("chain_id", "AB" * 16), ("dictionary", "00" * 31)]:
        out.append(json.dumps({**doc, key: bad}, sort_keys=True, separators=(",", ":")).encode())
    raw = archive.host.encode()
    out += [raw.replace(b'"codec"', b'"codec":"zstd","codec"', 1), raw.replace(b":", b": ", 1),
            raw.replace(b'"tree_mac"', b'"tree_sha256"')]
    return out


def test_hostile_host_sections_raise_one_line_archive_errors(ident, archive):
    for blob in HOSTILE_HOST_SECTIONS + _host_variants(archive):
        with pytest.raises(ArchiveError) as exc:
            HostSection.decode(blob)
        assert "\n" not in str(exc.value)
        # through the whole file parser too, inside a well-formed, validly signed manifest
        m = archive.manifest
        raw = MANIFEST.build(type(m)(**{**m.__dict__, "host_section": blob}))
        data = b"SVARCH1\n" + len(raw).to_bytes(4, "big") + raw + ident.signer.sign(raw)
        with pytest.raises(ArchiveError):
            Archive.from_bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20)


@FAST
@given(st.data())
def test_fuzzed_host_sections_only_raise_archive_errors(archive, data):
    doc = json.loads(archive.host.encode())
    key = data.draw(st.sampled_from(sorted(doc) + ["extra"]))
    doc[key] = data.draw(json_values)
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    if data.draw(st.booleans()):
        pos = data.draw(st.integers(0, len(blob)))
        blob = blob[:pos] + data.draw(st.binary(max_size=6)) + blob[pos:]
    try:
        HostSection.decode(blob)
    except ArchiveError as exc:
        assert "\n" not in str(exc)


@FAST
@given(st.binary(max_size=64), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_fuzzed_lengths_only_raise_archive_errors(archive, tail, mlen, clen):
    good = archive.to_bytes()
    mend = 12 + len(archive.manifest_bytes) + 64
    for data in (good[:8] + mlen.to_bytes(4, "big") + good[12:],
                 good[:mend] + clen.to_bytes(4, "big") + good[mend + 4:], good[:mend] + tail):
        try:
            Archive.from_bytes(data)
        except ArchiveError as exc:
            assert "\n" not in str(exc)


def test_excluded_secrets_are_not_in_the_plaintext(ident):
    from pathlib import Path

    from host.tree.tnds import read_tnds
    t = read_tnds((Path(__file__).parent / "data" / "phone_tree.tnds.xml").read_bytes())
    secrets = [t.get(u).data for u in secret_uris(t)]
    assert secrets
    a = ops.backup_tree(t, ident, exclude_secrets=True)
    plain = canonical_bytes(verify_archive(a, ident.trust, ident.decryptor).tree)
    assert a.host.secrets == "excluded"
    assert not any(s in plain for s in secrets if len(s) >= 4)


def test_key_directory_is_closed_and_chain_keys_never_print(tmp_path):
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    generate_identity(d)
    assert d.stat().st_mode & 0o777 == 0o700
    keys = ChainKeys.generate()
    assert keys.data_key.hex() not in repr(keys) and keys.id_key.hex() not in repr(keys)


def test_signature_covers_the_wrapped_keys(ident, archive, tmp_path):
    mallory = generate_identity(tmp_path / "m", "mallory")
    keys = ChainKeys.generate()
    from host.archive.crypto import wrap_info
    swapped = dataclasses.replace(archive.host, recipients={
        ident.recipient.key_id: ident.recipient.wrap(keys.secret, wrap_info(archive.host.chain_id,
                                                                            ident.recipient.key_id)),
        mallory.recipient.key_id: b"\0" * 97})
    m = archive.manifest
    raw = MANIFEST.build(type(m)(**{**m.__dict__, "host_section": swapped.encode(), "total_size": -1}))
    with pytest.raises(IntegrityError, match="signature invalid"):
        verify_archive(Archive(raw, archive.signature, dict(archive.chunks)), ident.trust, ident.decryptor)


def test_aad_binds_the_chunk_id_within_a_chain(ident):
    a = make_archive(generate_tree(40_000, 12), ident.signer, ident.recipients())
    first, second = a.manifest.chunks[0], a.manifest.chunks[1]
    moved = a.chunks[first.chunk_id]
    chunks = tuple(type(second)(second.chunk_id, hashlib.sha256(moved).digest(), len(moved))
                   if c == second else c for c in a.manifest.chunks)
    forged = _resigned(a, ident.signer, chunks=chunks)
    forged.chunks[second.chunk_id] = moved
    with pytest.raises(IntegrityError, match="GCM tag"):
        verify_archive(forged, ident.trust, ident.decryptor)


def test_synthetic_nonce_is_a_keyed_function_of_the_payload():
    keys = ChainKeys.generate()
    cid = keys.chunk_id(b"x")
    one, two = keys.seal(cid, b"\x01payload-a"), keys.seal(cid, b"\x01payload-b")
    assert one[:12] != two[:12]                      # same chunk id, other payload: other nonce
    assert keys.seal(cid, b"\x01payload-a") == one   # deterministic
    other = ChainKeys(keys.chain_id, os.urandom(32), keys.id_key)
    assert other.seal(cid, b"\x01payload-a")[:12] != one[:12]   # keyed
    assert keys.open(cid, one) == b"\x01payload-a"
