"""The host section of a format-3 (layered) archive: compact, binary, signed with the manifest.

Format 3 stores a tree as a *base* (the whole canonical plaintext, compressed
as one zstd stream) and *layers* (node-level deltas, see delta.py), each one a
"segment": a compressed stream cut into pieces that are the chunks of the
card's table, in segment order. The host section says how the table splits
into segments; every incremental resends it, so it is binary, not JSON.

Version 4 (written since issue 10, session 9; version 3 still read):

    "SVH4" | u8 flags | chain id (16) | tree MAC (16: HMAC-SHA256/128)
    | varint plain size | u8 has-previous [| previous backup id (16)]
    | varint generation | varint sent | varint n scopes, str*n
    | varint n segments, (varint pieces | varint plain size)*n

It has no recipients: the wrapped chain keys are the key block at the head of
the base's first stored chunk (keyblock.py), which every backup of the chain
shares and the card already holds, so an incremental does not resend them
(~155 bytes per recipient). Version 3 (about 90 bytes plus the wrapped keys):

    "SVH3" | u8 flags (bit0: secrets excluded) | chain id (16) | tree MAC (32)
    | varint plain size | u8 has-previous [| previous backup id (16)]
    | varint generation (backups in this chain, this one included)
    | varint sent (bytes this chain has sent: base, layers, manifests; re-base policy)
    | varint n scopes, str*n | varint n recipients, (key id(8) | varint len | wrapped)*n
    | varint n segments, (varint pieces | varint plain size)*n      (segment 0: the base)

Decoding is strict (one value, one encoding; it is signed): anything else,
or any bound exceeded, is an ArchiveError with one line.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from host.errors import ArchiveError

LAYERED_MAGIC = b"SVH3"
LAYERED_MAGIC_V4 = b"SVH4"
LAYERED_VERSION = 4           # what make_layered_archive writes; 3 is still read
_MAGIC = {3: LAYERED_MAGIC, 4: LAYERED_MAGIC_V4}
MAX_PLAIN_SIZE = 256 << 20
MAX_SEGMENTS = 1024
MAX_PIECES = 1 << 16
MAX_RECIPIENTS = 64
MAX_SCOPES = 256


@dataclass(frozen=True)
class Segment:
    pieces: int        # chunk-table entries holding this segment
    plain_size: int    # bytes after decompression (the base: canonical plaintext; a layer: its delta)


@dataclass(frozen=True)
class LayeredHost:
    chain_id: bytes
    tree_digest: bytes                       # ChainKeys.tree_mac of the whole canonical plaintext
    plain_size: int
    recipients: dict[bytes, bytes]           # v3: key id -> HPKE-wrapped chain secret; v4: {} (key block)
    segments: tuple[Segment, ...]            # the base, then the layers oldest first
    scope: tuple[str, ...] = (".",)
    secrets: str = "included"
    previous: bytes | None = None            # the backup whose tree the newest layer starts from
    generation: int = 1
    sent: int = 0
    version: int = field(default=LAYERED_VERSION)

    # ---- what the v1/v2 HostSection offers, so callers need not care ------------------
    codec = "zstd"
    order = None

    @property
    def tree_sha256(self) -> bytes:
        return self.tree_digest

    @property
    def layers(self) -> tuple[Segment, ...]:
        return self.segments[1:]

    @property
    def dictionary(self) -> None:
        """Format 3 has no dictionary chunk: layers are compressed against the base."""
        return None

    def segment_ranges(self) -> list[range]:
        out, start = [], 0
        for seg in self.segments:
            out.append(range(start, start + seg.pieces))
            start += seg.pieces
        return out

    def encode(self) -> bytes:
        if self.version not in _MAGIC:
            raise ArchiveError(f"layered host section version {self.version} unknown")
        out = bytearray(_MAGIC[self.version])
        out.append(1 if self.secrets == "excluded" else 0)
        out += self.chain_id + self.tree_digest
        _varint(self.plain_size, out)
        if self.previous is None:
            out.append(0)
        else:
            out.append(1)
            out += self.previous
        for n in (self.generation, self.sent, len(self.scope)):
            _varint(n, out)
        for s in self.scope:
            _bytes(s.encode("utf-8"), out)
        if self.version == 3:
            _varint(len(self.recipients), out)
            for kid, blob in sorted(self.recipients.items()):
                out += kid
                _bytes(blob, out)
        _varint(len(self.segments), out)
        for seg in self.segments:
            _varint(seg.pieces, out)
            _varint(seg.plain_size, out)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> LayeredHost:
        r = _Reader(data)
        magic = r.raw(4)
        version = next((v for v, m in _MAGIC.items() if m == magic), None)
        if version is None:
            raise ArchiveError("not a format-3 host section: damaged archive")
        flags = r.byte()
        if flags > 1:
            raise ArchiveError("format-3 host section has unknown flags: newer simvault?")
        chain_id, digest = r.raw(16), r.raw(32 if version == 3 else 16)
        plain_size = r.varint(MAX_PLAIN_SIZE, "plain size")
        has_prev = r.byte()
        if has_prev > 1:
            raise ArchiveError("format-3 host section: previous flag malformed")
        previous = r.raw(16) if has_prev else None
        generation = r.varint(1 << 32, "generation")
        sent = r.varint(1 << 48, "sent")
        scope = tuple(r.text() for _ in range(r.varint(MAX_SCOPES, "scope count")))
        recipients: dict[bytes, bytes] = {}
        for _ in range(r.varint(MAX_RECIPIENTS, "recipient count") if version == 3 else 0):
            kid = r.raw(8)
            recipients[kid] = r.raw(r.varint(4096, "wrapped key length"))
        segments = tuple(Segment(r.varint(MAX_PIECES, "pieces"), r.varint(MAX_PLAIN_SIZE, "segment size"))
                         for _ in range(r.varint(MAX_SEGMENTS, "segment count")))
        if r.pos != len(data):
            raise ArchiveError("format-3 host section has trailing bytes: damaged archive")
        if (version == 3 and not recipients) or not segments or not scope or generation < 1:
            raise ArchiveError("format-3 host section lacks recipients, segments or scope: damaged archive")
        if any(s.pieces < 1 for s in segments) or segments[0].plain_size > MAX_PLAIN_SIZE:
            raise ArchiveError("format-3 host section has an empty segment: damaged archive")
        host = cls(chain_id=chain_id, tree_digest=digest, plain_size=plain_size, recipients=recipients,
                   segments=segments, scope=scope,
                   secrets="excluded" if flags & 1 else "included", previous=previous,
                   generation=generation, sent=sent, version=version)
        if host.encode() != data:
            raise ArchiveError("format-3 host section is not in canonical form: damaged archive")
        return host


def is_layered(host_section: bytes) -> bool:
    return host_section[:4] in (LAYERED_MAGIC, LAYERED_MAGIC_V4)


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _bytes(b: bytes, out: bytearray) -> None:
    _varint(len(b), out)
    out += b


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ArchiveError("format-3 host section truncated: damaged archive")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def byte(self) -> int:
        return self.raw(1)[0]

    def varint(self, limit: int, what: str) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 56:
                break
        if n > limit:
            raise ArchiveError(f"format-3 host section: {what} out of bounds: damaged archive")
        return n

    def text(self) -> str:
        try:
            return self.raw(self.varint(4096, "scope length")).decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError("format-3 host section: scope is not UTF-8: damaged archive") from None
