"""The archive: one signed manifest plus encrypted chunks, the same bytes everywhere.

File layout (integers big-endian):

    "SVARCH1\\n" | u32 manifest length | manifest (E1 TLV) | signature (64, raw r||s)
    | for each chunk in chunk-table order: u32 length | stored bytes

The manifest is apdu_specs.manifest.OnCardManifest, whose host section (tag 88)
is host_section.HostSection; the signature covers the whole E1 TLV, exactly
what the card verifies at COMMIT. Parsing is bounded and strict (no trailing
bytes, lengths must match the signed chunk table).
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from apdu_specs import constants as C
from apdu_specs.codec import CodecError
from apdu_specs.manifest import MANIFEST, OnCardManifest
from host.errors import ArchiveError, IntegrityError

from .host_section import HostSection
from .keyblock import recipients_of
from .layered_host import LayeredHost, is_layered

MAGIC = b"SVARCH1\n"
MAX_ARCHIVE_BYTES = 512 << 20


def parse_manifest(manifest_bytes: bytes) -> tuple[OnCardManifest, HostSection | LayeredHost]:
    if len(manifest_bytes) > C.MAX_MANIFEST_SIZE:
        raise ArchiveError("manifest larger than 1 MiB: not a simvault archive")
    try:
        manifest = MANIFEST.parse(manifest_bytes)
    except CodecError as exc:
        raise ArchiveError(f"manifest malformed ({exc}): damaged archive") from None
    if MANIFEST.build(manifest) != manifest_bytes:
        raise ArchiveError("manifest is not in its canonical encoding: damaged archive")
    n = len(manifest.chunks)
    if len({c.chunk_id for c in manifest.chunks}) != n:
        raise ArchiveError("archive chunk table lists a chunk twice: damaged archive")
    if is_layered(manifest.host_section):       # format 3: base + layers (layered.py)
        layered = LayeredHost.decode(manifest.host_section)
        if sum(s.pieces for s in layered.segments) != n:
            raise ArchiveError("archive segments do not cover the chunk table: damaged archive")
        return manifest, layered
    host = HostSection.decode(manifest.host_section)
    data_indices = list(range(n))
    if host.dictionary is not None:
        if not n or manifest.chunks[-1].chunk_id != host.dictionary:
            raise ArchiveError("archive dictionary is not the last chunk of the table: damaged archive")
        data_indices = data_indices[:-1]
    if host.order is not None and (not host.order or sorted(set(host.order)) != data_indices):
        raise ArchiveError("archive chunk order does not cover the chunk table: damaged archive")
    if not data_indices:
        raise ArchiveError("archive has no data chunks: damaged archive")
    return manifest, host


def default_order(n_chunks: int, has_dictionary: bool) -> list[int]:
    return list(range(n_chunks - 1 if has_dictionary else n_chunks))


@dataclass
class Archive:
    """A parsed archive. ``chunks`` maps chunk id -> stored bytes (nonce|ct|tag)."""

    manifest_bytes: bytes
    signature: bytes
    chunks: dict[bytes, bytes] = field(repr=False)
    manifest: OnCardManifest = field(init=False, repr=False)
    host: HostSection | LayeredHost = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.signature) != C.SIGNATURE_LENGTH:
            raise ArchiveError("archive signature is not 64 bytes: damaged archive")
        self.manifest, self.host = parse_manifest(self.manifest_bytes)

    # ---- handy views ---------------------------------------------------------
    @property
    def backup_id(self) -> bytes:
        return self.manifest.backup_id

    @property
    def sequence(self) -> int:
        return self.manifest.sequence

    @property
    def device_id(self) -> str:
        return self.manifest.device_id

    @property
    def format(self) -> int:
        """3 for a layered archive (base + deltas), 1 for the CDC format (host section v1/v2)."""
        return 3 if isinstance(self.host, LayeredHost) else 1

    @property
    def chunk_order(self) -> list[int]:
        if self.host.order is not None:
            return list(self.host.order)
        return default_order(len(self.manifest.chunks), self.host.dictionary is not None)

    def missing_chunks(self) -> list[bytes]:
        return [c.chunk_id for c in self.manifest.chunks if c.chunk_id not in self.chunks]

    def checked_chunk(self, ref) -> bytes:  # type: ignore[no-untyped-def]
        """The stored bytes of the manifest's chunk ``ref``, present and matching its signed size
        and SHA-256 (constant-time), else IntegrityError: the check before any use of a chunk."""
        stored = self.chunks.get(ref.chunk_id)
        if stored is None:
            raise IntegrityError(f"backup {self.backup_id.hex()} lacks chunk {ref.chunk_id.hex()[:16]}")
        if len(stored) != ref.size or not hmac.compare_digest(hashlib.sha256(stored).digest(), ref.sha256):
            raise IntegrityError(f"chunk {ref.chunk_id.hex()[:16]} does not match its signed hash: "
                                 "tampered or swapped chunk")
        return stored

    def stored_size(self) -> int:
        return len(self.to_bytes()) if not self.missing_chunks() else -1

    def summary(self) -> dict:
        m, h = self.manifest, self.host
        return {"backup_id": m.backup_id.hex(), "sequence": m.sequence, "created": m.created,
                "device_id": m.device_id, "signer": m.signer_key_id.hex(), "chunks": len(m.chunks),
                "stored_bytes": m.total_size, "plain_size": h.plain_size, "codec": h.codec,
                "scope": list(h.scope), "secrets": h.secrets,
                "previous": h.previous.hex() if h.previous else None,
                "recipients": self._recipient_ids(), "format": self.format,
                "layers": len(h.segments) - 1 if isinstance(h, LayeredHost) else None}

    @property
    def recipients(self) -> dict[bytes, bytes]:
        """Recipient key id -> wrapped chain secret (host section, or the base chunk's key
        block for host section v4: IntegrityError if that chunk is absent or altered)."""
        return recipients_of(self)

    def _recipient_ids(self) -> list[str]:
        from host.errors import IntegrityError
        try:
            return sorted(k.hex() for k in recipients_of(self))
        except IntegrityError:      # host section v4 without its base chunk: not known here
            return []

    # ---- file encoding ---------------------------------------------------------
    def to_bytes(self) -> bytes:
        missing = self.missing_chunks()
        if missing:
            raise ArchiveError(f"archive lacks {len(missing)} chunk(s); read them from the card first")
        parts = [MAGIC, struct.pack(">I", len(self.manifest_bytes)), self.manifest_bytes, self.signature]
        for ref in self.manifest.chunks:
            data = self.chunks[ref.chunk_id]
            parts += [struct.pack(">I", len(data)), data]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Archive:
        if len(data) > MAX_ARCHIVE_BYTES:
            raise ArchiveError("archive larger than 512 MiB: refused")
        if not data.startswith(MAGIC):
            raise ArchiveError("not a simvault archive (bad magic); give a file made by 'simvault backup/export'")
        pos = len(MAGIC)
        if len(data) < pos + 4:
            raise ArchiveError("archive truncated in its header")
        (mlen,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if mlen > C.MAX_MANIFEST_SIZE or pos + mlen + C.SIGNATURE_LENGTH > len(data):
            raise ArchiveError("archive truncated or its manifest length is wrong")
        manifest_bytes = data[pos:pos + mlen]
        pos += mlen
        signature = data[pos:pos + C.SIGNATURE_LENGTH]
        pos += C.SIGNATURE_LENGTH
        archive = cls(manifest_bytes, signature, {})
        for ref in archive.manifest.chunks:
            if pos + 4 > len(data):
                raise ArchiveError("archive truncated in its chunks")
            (clen,) = struct.unpack_from(">I", data, pos)
            pos += 4
            if clen != ref.size or pos + clen > len(data):
                raise ArchiveError("archive chunk length differs from its manifest entry: damaged archive")
            archive.chunks[ref.chunk_id] = data[pos:pos + clen]
            pos += clen
        if pos != len(data):
            raise ArchiveError("archive has trailing bytes after its last chunk: damaged archive")
        return archive
