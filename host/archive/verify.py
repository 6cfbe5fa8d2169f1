"""Verifying and opening an archive: every check passes before anything is touched.

Order: signature by a trusted key -> chain keys unwrap -> each chunk's SHA-256
(against the signed table), GCM tag (AAD binds chain and chunk id), chunk id
(HMAC of the plaintext) -> canonical plaintext size and digest (keyed MAC
from host section v2) -> tree decodes. Device id and sequence are checked
right after the signature. Decompression is bounded per chunk (the signed
chunker max, the dictionary at 128 KiB) and in total (the signed plain size,
itself <= 256 MiB): a zstd bomb stops at the bound, before any join. Any failure raises IntegrityError (or
ArchiveError) with one line; nothing is returned half-checked.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol

from apdu_specs.manifest import verify_raw
from host.errors import IntegrityError, TreeError
from host.backup.keys import Decryptor
from host.tree.canonical import from_canonical
from host.tree.model import DMTree

from .archive import Archive
from .build import chain_keys_of, dictionary_of, tree_digest
from .codec import ChunkCodec
from .layered import verify_layered
from .layered_host import LayeredHost


class TrustAnchors(Protocol):
    def get(self, key_id: bytes) -> bytes | None: ...


@dataclass
class VerifiedBackup:
    archive: Archive
    tree: DMTree
    plaintext_size: int

    @property
    def scope(self) -> tuple[str, ...]:
        return self.archive.host.scope


def verify_signature(archive: Archive, trust: TrustAnchors) -> None:
    point = trust.get(archive.manifest.signer_key_id)
    if point is None:
        raise IntegrityError(f"backup {archive.backup_id.hex()} is signed by key "
                             f"{archive.manifest.signer_key_id.hex()}, which is not trusted; "
                             "add the key to the trust store if you trust it")
    if not verify_raw(point, archive.manifest_bytes, archive.signature):
        raise IntegrityError(f"backup {archive.backup_id.hex()}: manifest signature invalid: tampered backup: "
                             "restore another one ('simvault list' shows them)")


def verify_archive(archive: Archive, trust: TrustAnchors, decryptor: Decryptor, *,
                   device_id: str | None = None, force_device: bool = False,
                   min_sequence: int | None = None, force_sequence: bool = False) -> VerifiedBackup:
    """Check everything and return the decrypted tree.

    device_id: the device restoring; another device's backup is refused unless
    force_device. min_sequence: the last restored/seen sequence; an older
    backup is refused unless force_sequence.
    """
    verify_signature(archive, trust)
    m, host = archive.manifest, archive.host
    if device_id is not None and not force_device and not hmac.compare_digest(
            m.device_id.encode(), device_id.encode()):
        raise IntegrityError(f"backup {m.backup_id.hex()} belongs to device {m.device_id!r}, not "
                             f"{device_id!r}; pass --force-device to restore it anyway")
    if min_sequence is not None and m.sequence < min_sequence and not force_sequence:
        raise IntegrityError(f"backup {m.backup_id.hex()} has sequence {m.sequence}, older than "
                             f"{min_sequence} already seen: a replay? pass --force to restore it")
    missing = archive.missing_chunks()
    if missing:
        raise IntegrityError(f"backup {m.backup_id.hex()} lacks {len(missing)} chunk(s): incomplete copy")
    keys = chain_keys_of(archive, decryptor)
    if isinstance(host, LayeredHost):
        tree, size = verify_layered(archive, keys)
        return VerifiedBackup(archive, tree, size)
    codec = ChunkCodec(host.codec, dictionary_of(archive, keys))
    plain_chunks: list[bytes] = []
    unpacked = 0
    for ref in m.chunks[:len(m.chunks) - (host.dictionary is not None)]:
        stored = archive.checked_chunk(ref)
        budget = min(host.chunker.max_size, host.plain_size - unpacked)
        plain = codec.decompress(keys.open(ref.chunk_id, stored), budget)
        if not hmac.compare_digest(keys.chunk_id(plain), ref.chunk_id):
            raise IntegrityError(f"chunk {ref.chunk_id.hex()[:16]} decrypts to other data than its id: tampered")
        unpacked += len(plain)
        plain_chunks.append(plain)
    if sum(len(plain_chunks[i]) for i in archive.chunk_order) != host.plain_size:
        raise IntegrityError(f"backup {m.backup_id.hex()}: the chunks do not add up to the signed tree size")
    canonical = b"".join(plain_chunks[i] for i in archive.chunk_order)
    if not hmac.compare_digest(tree_digest(host, keys, canonical), host.tree_digest):
        raise IntegrityError(f"backup {m.backup_id.hex()}: the reassembled tree does not match its hash")
    try:
        tree = from_canonical(canonical)
    except TreeError as exc:
        raise IntegrityError(f"backup {m.backup_id.hex()}: tree does not decode ({exc})") from None
    return VerifiedBackup(archive, tree, len(canonical))


def verify_integrity(archive: Archive, trust: TrustAnchors) -> None:
    """What a server that holds no decryption key can check: the signature by a
    trusted key, and every chunk present with its signed size and SHA-256."""
    verify_signature(archive, trust)
    for ref in archive.manifest.chunks:
        archive.checked_chunk(ref)
