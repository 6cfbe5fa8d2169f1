"""Segments and pieces of a layered archive (format 3): compress, cut, seal, open.

    segment payload = kind byte | zstd-19(plaintext [, dictionary = base plaintext, raw content])
    piece     = payload cut every max_piece bytes
    chunk id  = HMAC-SHA256(chunk-id key, "simvault/segment/v3" | varint segment | varint piece | piece)
    host section v3: stored = nonce(12) | AES-256-GCM(piece, AAD v1) | tag(16), zstd frames standard
    host section v4: stored = AES-256-GCM(piece, AAD v4) | tag(16), nonce derived from the chunk id;
                     zstd frames magicless, without content size (the size is signed in the
                     host section); kind 2 = raw deflate-9, preset dictionary = the base's
                     last 32 KiB (layers; smallest wins); a layer's delta without its magic;
                     the base's first stored chunk starts with the key block (keyblock.py)

Every byte that version 4 drops is one an incremental would resend.
"""
from __future__ import annotations

import hashlib
import hmac
import zlib

import zstandard

from host.errors import IntegrityError

from .archive import Archive
from .codec import ZSTD_LEVEL, read_bounded, zstd_bounded
from .crypto import ChainKeys
from .delta import DELTA_MAGIC
from .keyblock import split_key_block
from .layered_host import MAX_PLAIN_SIZE, LayeredHost

SEGMENT_LABEL = b"simvault/segment/v3"
PAYLOAD_STORED, PAYLOAD_ZSTD, PAYLOAD_DEFLATE = 0, 1, 2     # deflate: host section v4 only
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DEFLATE_WINDOW = 32 << 10
MAX_TOTAL_PLAIN = 2 * MAX_PLAIN_SIZE          # base + all layers, bounds decompression


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def piece_id(keys: ChainKeys, segment: int, piece: int, payload: bytes) -> bytes:
    return keys.chunk_id(SEGMENT_LABEL + _varint(segment) + _varint(piece) + payload)


def raw_dictionary(base_plain: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(base_plain, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def segment_plain(plain: bytes, segment: int, version: int) -> bytes:
    """What a segment stores of plain: v4 layers drop the delta magic (it is implied)."""
    if version == 4 and segment > 0:
        if not plain.startswith(DELTA_MAGIC):
            raise ValueError("a layer is a delta")
        return plain[len(DELTA_MAGIC):]
    return plain


def compress_segment(plain: bytes, base: bytes | None, version: int = 4) -> bytes:
    """kind byte | body: the smallest of stored, zstd-19 (a layer: base plaintext as raw
    dictionary) and, in v4, raw deflate-9 with the base's last 32 KiB as preset dictionary
    (a tiny delta: zstd's frame and block headers cost more than deflate's)."""
    zdict = raw_dictionary(base) if base is not None else None
    zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=zdict, write_content_size=version != 4,
                                  write_checksum=False, write_dict_id=False)
    body = zc.compress(plain)
    if version != 4:
        return bytes([PAYLOAD_ZSTD]) + body if len(body) < len(plain) else bytes([PAYLOAD_STORED]) + plain
    best = [bytes([PAYLOAD_STORED]) + plain, bytes([PAYLOAD_ZSTD]) + body[len(ZSTD_MAGIC):]]
    if base is not None:
        co = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=base[-DEFLATE_WINDOW:])
        best.append(bytes([PAYLOAD_DEFLATE]) + co.compress(plain) + co.flush())
    return min(best, key=len)


def _deflate_bounded(body: bytes, max_size: int, base: bytes) -> bytes:
    d = zlib.decompressobj(-15, zdict=base[-DEFLATE_WINDOW:])
    try:
        out = d.decompress(body, max_size + 1)
    except zlib.error as exc:
        raise IntegrityError(f"segment does not decompress ({exc}): damaged backup") from None
    if len(out) > max_size or not d.eof or d.unused_data:
        raise IntegrityError("segment decompresses beyond its signed size or has trailing bytes: damaged backup")
    return out


def seal_segment(keys: ChainKeys, segment: int, payload: bytes, max_piece: int, version: int = 4,
                 key_block: bytes = b"") -> list:
    """[(ChunkRef, stored bytes)] of one segment; key_block heads piece 0 (v4 base only)."""
    from apdu_specs.manifest import ChunkRef
    out = []
    first = max_piece - len(key_block)
    if first < 64:
        raise ValueError("max chunk size too small for the key block")
    starts = [0] + list(range(first, len(payload), max_piece))
    for i, start in enumerate(starts):
        part = payload[start:(first if i == 0 else start + max_piece)]
        cid = piece_id(keys, segment, i, part)
        stored = keys.seal_v4(cid, part) if version == 4 else keys.seal(cid, part)
        if i == 0:
            stored = key_block + stored
        out.append((ChunkRef(cid, hashlib.sha256(stored).digest(), len(stored)), stored))
    return out


def _zstd_magicless(body: bytes, max_size: int, zdict: zstandard.ZstdCompressionDict | None) -> bytes:
    """One magicless zstd frame, at most max_size bytes read out (IntegrityError otherwise)."""
    try:
        d = zstandard.ZstdDecompressor(dict_data=zdict, format=zstandard.FORMAT_ZSTD1_MAGICLESS) \
            if zdict is not None else zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
        out = read_bounded(d, body, max_size)
    except (zstandard.ZstdError, ValueError) as exc:
        raise IntegrityError(f"segment does not decompress ({exc}): damaged backup") from None
    if len(out) > max_size:
        raise IntegrityError("segment decompresses beyond its signed size: damaged backup")
    return out


def open_segments(archive: Archive, keys: ChainKeys) -> list[bytes]:
    """The plaintext of every segment (base first; layers as delta.apply_delta takes them),
    each piece checked: size and SHA-256 against the signed table, GCM tag, chunk id;
    each segment decompressed within its signed size. IntegrityError on the first failure."""
    host: LayeredHost = archive.host  # type: ignore[assignment]
    v4 = host.version == 4
    refs = archive.manifest.chunks
    if sum(s.plain_size for s in host.segments) > MAX_TOTAL_PLAIN:
        raise IntegrityError(f"backup {archive.backup_id.hex()}: segments larger than 512 MiB in all: refused")
    out: list[bytes] = []
    zdict = None
    for si, (seg, rng) in enumerate(zip(host.segments, host.segment_ranges())):
        parts = []
        for pi, index in enumerate(rng):
            ref = refs[index]
            stored = archive.checked_chunk(ref)
            if v4:
                part = keys.open_v4(ref.chunk_id, split_key_block(stored)[1] if index == 0 else stored)
            else:
                part = keys.open(ref.chunk_id, stored)
            if not hmac.compare_digest(piece_id(keys, si, pi, part), ref.chunk_id):
                raise IntegrityError(f"chunk {ref.chunk_id.hex()[:16]} is not piece {pi} of segment {si}: "
                                     "tampered or reordered")
            parts.append(part)
        payload = b"".join(parts)
        kinds = (PAYLOAD_STORED, PAYLOAD_ZSTD, PAYLOAD_DEFLATE) if v4 else (PAYLOAD_STORED, PAYLOAD_ZSTD)
        if not payload or payload[0] not in kinds or (payload[0] == PAYLOAD_DEFLATE and si == 0):
            raise IntegrityError(f"segment {si} has an unknown payload kind: damaged backup")
        if payload[0] == PAYLOAD_STORED:
            plain = payload[1:]
        elif payload[0] == PAYLOAD_DEFLATE:
            plain = _deflate_bounded(payload[1:], seg.plain_size, out[0])
        elif v4:
            plain = _zstd_magicless(payload[1:], seg.plain_size, zdict)
        else:
            plain = zstd_bounded(payload[1:], seg.plain_size, zdict)
        if len(plain) != seg.plain_size:
            raise IntegrityError(f"segment {si} is not its signed size: damaged backup")
        if si == 0:
            zdict = raw_dictionary(plain)
        out.append(DELTA_MAGIC + plain if v4 and si > 0 else plain)
    return out
