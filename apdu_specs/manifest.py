"""The on-card manifest: what the card verifies before a backup becomes visible.

    E1 {                               (constructed, private class)
      80 01  format version (1)
      81 10  backup id
      82 08  sequence number (u64, must exceed every committed one)
      83 08  created, Unix seconds (u64)
      84 ..  device id (UTF-8, at most 64 bytes)
      85 08  signer key id = SHA-256(uncompressed P-256 point)[:8]
      86 04  total size of the chunks (u32)
      87 ..  chunk table: n records of 68 bytes: id(32) | SHA-256 of the stored bytes(32) | size(u32)
      88 ..  host section: opaque to the card (archive metadata: codec, scope,
             wrapped keys); signed with the rest
    }

The signature is ECDSA P-256 with SHA-256 over the whole E1 TLV, sent as raw
r||s (64 bytes) in COMMIT BACKUP. Tags appear in this order, each once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from . import constants as C
from . import tlv
from .codec import Codec, CodecError, register

MANIFEST_TAG = 0xE1
CHUNK_RECORD_LENGTH = C.CHUNK_ID_LENGTH + C.CHUNK_HASH_LENGTH + 4
_FIELD_TAGS = (0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88)


@dataclass(frozen=True)
class ChunkRef:
    chunk_id: bytes   # keyed MAC of the plaintext (leaks nothing); the card's storage key
    sha256: bytes     # hash of the bytes stored on the card (the ciphertext)
    size: int


@dataclass(frozen=True)
class OnCardManifest:
    backup_id: bytes
    sequence: int
    created: int
    device_id: str
    signer_key_id: bytes
    chunks: tuple[ChunkRef, ...]
    host_section: bytes = b""
    version: int = C.MANIFEST_FORMAT_VERSION
    total_size: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.total_size < 0:
            object.__setattr__(self, "total_size", sum(c.size for c in self.chunks))


def _build(m: OnCardManifest) -> bytes:
    if len(m.backup_id) != C.BACKUP_ID_LENGTH or len(m.signer_key_id) != C.KEY_ID_LENGTH:
        raise CodecError("backup id is 16 bytes and key id 8 bytes")
    device = m.device_id.encode("utf-8")
    if len(device) > C.DEVICE_ID_MAX:
        raise CodecError("device id longer than 64 bytes")
    table = b"".join(c.chunk_id + c.sha256 + c.size.to_bytes(4, "big") for c in m.chunks)
    body = (tlv.encode(0x80, bytes([m.version])) + tlv.encode(0x81, m.backup_id)
            + tlv.encode(0x82, m.sequence.to_bytes(8, "big")) + tlv.encode(0x83, m.created.to_bytes(8, "big"))
            + tlv.encode(0x84, device) + tlv.encode(0x85, m.signer_key_id)
            + tlv.encode(0x86, m.total_size.to_bytes(4, "big")) + tlv.encode(0x87, table)
            + tlv.encode(0x88, m.host_section))
    return tlv.encode(MANIFEST_TAG, body)


def _fixed(fields: dict[int, bytes], tag: int, length: int) -> bytes:
    value = fields[tag]
    if len(value) != length:
        raise CodecError(f"manifest field {tag:02X} must be {length} bytes")
    return value


def _parse(data: bytes) -> OnCardManifest:
    try:
        items = tlv.decode_single(data, MANIFEST_TAG).children()
    except tlv.TlvError as exc:
        raise CodecError(f"manifest malformed: {exc}") from exc
    if tuple(i.tag for i in items) != _FIELD_TAGS:
        raise CodecError("manifest fields missing, repeated or out of order")
    f = {i.tag: i.value for i in items}
    if _fixed(f, 0x80, 1)[0] != C.MANIFEST_FORMAT_VERSION:
        raise CodecError(f"manifest format version {f[0x80][0]} not supported")
    table = f[0x87]
    if len(table) % CHUNK_RECORD_LENGTH:
        raise CodecError("chunk table length is not a multiple of 68")
    chunks = tuple(
        ChunkRef(table[o:o + 32], table[o + 32:o + 64], int.from_bytes(table[o + 64:o + 68], "big"))
        for o in range(0, len(table), CHUNK_RECORD_LENGTH))
    if len({c.chunk_id for c in chunks}) != len(chunks):
        raise CodecError("chunk table lists a chunk twice")
    total = int.from_bytes(_fixed(f, 0x86, 4), "big")
    if total != sum(c.size for c in chunks):
        raise CodecError("manifest total size does not match the chunk table")
    try:
        device = f[0x84].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError("device id is not UTF-8") from exc
    if len(f[0x84]) > C.DEVICE_ID_MAX:
        raise CodecError("device id longer than 64 bytes")
    return OnCardManifest(
        backup_id=_fixed(f, 0x81, 16), sequence=int.from_bytes(_fixed(f, 0x82, 8), "big"),
        created=int.from_bytes(_fixed(f, 0x83, 8), "big"), device_id=device,
        signer_key_id=_fixed(f, 0x85, 8), chunks=chunks, host_section=f[0x88], total_size=total)


_VECTOR = OnCardManifest(backup_id=bytes(range(16)), sequence=2, created=0x65000000, device_id="IMEI:1",
                         signer_key_id=bytes.fromhex("0102030405060708"),
                         chunks=(ChunkRef(b"\xaa" * 32, b"\xbb" * 32, 100),), host_section=b"{}")
MANIFEST = register(Codec("MANIFEST", _build, _parse, [(
    "E1" "818B" "800101" "8110" "000102030405060708090A0B0C0D0E0F" "8208" "0000000000000002"
    "8308" "0000000065000000" "8406" "494D45493A31" "8508" "0102030405060708" "8604" "00000064"
    "8744" + "AA" * 32 + "BB" * 32 + "00000064" "8802" "7B7D", _VECTOR)]))


# --- signatures -------------------------------------------------------------------


def key_id(public_point: bytes) -> bytes:
    """The 8-byte id of a P-256 public key (uncompressed point)."""
    return hashlib.sha256(public_point).digest()[:C.KEY_ID_LENGTH]


def public_point(key: ec.EllipticCurvePublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def sign_raw(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_raw(point: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` (raw r||s) is valid for ``message`` under the key ``point``."""
    if len(signature) != C.SIGNATURE_LENGTH:
        return False
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False
