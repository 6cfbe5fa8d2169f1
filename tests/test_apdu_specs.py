"""apdu_specs: every declared vector round-trips, and the README names everything the code defines."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import apdu_specs
from apdu_specs import CODECS, CodecError, tlv
from apdu_specs.constants import Ins
from apdu_specs.manifest import MANIFEST, ChunkRef, OnCardManifest, key_id, public_point, sign_raw, verify_raw
from apdu_specs.scp import KeySet, ScpError, SecureChannel
from apdu_specs.sw import SW, describe, is_documented, pin_tries

README = (Path(apdu_specs.__file__).parent / "README.md").read_text()
VECTORS = [(name, hexstr, value) for name, codec in sorted(CODECS.items()) for hexstr, value in codec.vectors]


def test_every_codec_has_a_vector():
    assert [n for n, c in CODECS.items() if not c.vectors] == []


@pytest.mark.parametrize("name,hexstr,value", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_round_trip(name, hexstr, value):
    codec = CODECS[name]
    raw = bytes.fromhex(hexstr)
    assert codec.encode(value) == raw
    assert codec.decode(raw) == value


@pytest.mark.parametrize("name", sorted(CODECS))
def test_readme_documents_codec(name):
    assert f"`{name}`" in README


@pytest.mark.parametrize("ins", list(Ins), ids=lambda i: i.name)
def test_readme_documents_instruction(ins):
    assert ins.name.replace("_", " ") in README
    assert re.search(rf"\b{ins.value:02X}\b", README)


@pytest.mark.parametrize("sw", list(SW), ids=lambda s: s.name)
def test_readme_documents_status_word(sw):
    assert f"| {sw.value:04X} | {sw.name} |" in README


def test_status_word_helpers():
    assert describe(0x63C2).name == "WRONG_PIN" and pin_tries(0x63C2) == 2
    assert describe(0x6110).meaning.startswith("16 response bytes")
    assert is_documented(0x6A84) and not is_documented(0x6A8F)
    assert pin_tries(0x9000) is None


@pytest.mark.parametrize("name", sorted(CODECS))
@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=300))
def test_decode_random_bytes_never_raises_other_errors(name, data):
    try:
        CODECS[name].decode(data)
    except CodecError:
        pass


def test_tlv_rejects_truncation_and_long_lengths():
    with pytest.raises(tlv.TlvError):
        tlv.decode_one(bytes.fromhex("8105AABB"))
    with pytest.raises(tlv.TlvError):
        tlv.decode_one(bytes.fromhex("8185FFFFFFFFFF"))
    assert tlv.decode_one(tlv.encode(0x87, b"x" * 70000))[0].value == b"x" * 70000


def _manifest(signer_id: bytes, **overrides) -> OnCardManifest:
    fields = dict(backup_id=b"\x01" * 16, sequence=5, created=1_700_000_000, device_id="IMEI:490154203237518",
                  signer_key_id=signer_id, chunks=(ChunkRef(b"\x0a" * 32, b"\x0b" * 32, 4000),
                                                   ChunkRef(b"\x0c" * 32, b"\x0d" * 32, 17)),
                  host_section=b'{"codec":"zstd"}')
    fields.update(overrides)
    return OnCardManifest(**fields)


def test_manifest_signature_round_trip_and_tamper():
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    point = public_point(key.public_key())
    encoded = MANIFEST.encode(_manifest(key_id(point)))
    sig = sign_raw(key, encoded)
    assert verify_raw(point, encoded, sig)
    assert MANIFEST.decode(encoded).total_size == 4017
    flipped = bytearray(encoded)
    flipped[40] ^= 1
    assert not verify_raw(point, bytes(flipped), sig)
    assert not verify_raw(point, encoded, sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify_raw(b"\x04" + b"\x00" * 64, encoded, sig)  # not a curve point: False, no exception


def test_manifest_refuses_duplicates_and_bad_sizes():
    dup = _manifest(b"\x00" * 8, chunks=(ChunkRef(b"\x0a" * 32, b"\x0b" * 32, 1),) * 2)
    with pytest.raises(CodecError):
        MANIFEST.decode(MANIFEST.encode(dup))
    good = MANIFEST.encode(_manifest(b"\x00" * 8))
    with pytest.raises(CodecError):
        MANIFEST.decode(good + b"\x00")
    with pytest.raises(CodecError):
        MANIFEST.decode(good[:-1])


def test_secure_channel_mac_chain():
    key = KeySet.from_bytes(bytes(range(16)))       # more: tests/test_scp03.py
    host, card = SecureChannel(key, b"H" * 8, b"C" * 8), SecureChannel(key, b"H" * 8, b"C" * 8)
    assert host.card_cryptogram == card.card_cryptogram and host.host_cryptogram != host.card_cryptogram
    card.check_external_authenticate(0x84, 1, 0, host.external_authenticate(1))
    wrapped = host.wrap_command(0x84, 0xE2, 0, 0, b"a" * 300)
    with pytest.raises(ScpError):
        card.unwrap_command(0x84, 0xE2, 0, 0, wrapped[:-1] + bytes([wrapped[-1] ^ 1]))
    other = SecureChannel(KeySet.from_bytes(bytes(16)), b"H" * 8, b"C" * 8)
    assert other.card_cryptogram != card.card_cryptogram
