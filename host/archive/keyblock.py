"""The key block of a layered archive (host section v4): the chain keys, wrapped once per chain.

Host section v3 carried the HPKE-wrapped chain secret of every recipient, and
every incremental resent it (~155 bytes per recipient, a quarter of a phone
tree's incremental). Version 4 moves it to the head of the base's first stored
chunk, which every backup of the chain lists in its signed table and the card
already holds (same chunk id, same bytes), so an incremental does not send it:

    stored piece (0, 0) = key block | AES-256-GCM ciphertext | tag
    key block = u8 n (1..64) | (recipient key id (8) | varint len | wrapped)*n, key ids ascending

It is authenticated like the rest of the stored chunk: its SHA-256 is in the
signed chunk table. Its bytes are fixed for the chain's life, so a chain's
recipients cannot change: an incremental for another recipient set re-bases
(a full backup, new chain keys), which is also what removing a recipient needs.
"""
from __future__ import annotations


from host.errors import ArchiveError, IntegrityError

MAX_RECIPIENTS = 64
MAX_WRAPPED = 4096


def encode_key_block(wrapped: dict[bytes, bytes]) -> bytes:
    if not 1 <= len(wrapped) <= MAX_RECIPIENTS:
        raise ArchiveError("an archive needs 1 to 64 recipients")
    out = bytearray([len(wrapped)])
    for kid, blob in sorted(wrapped.items()):
        if len(kid) != 8 or not 0 < len(blob) <= MAX_WRAPPED:
            raise ArchiveError("recipient key ids are 8 bytes, wrapped keys at most 4096")
        out += kid
        n = len(blob)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        out += blob
    return bytes(out)


def split_key_block(stored: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """(recipients, the rest: ciphertext | tag) of the base's first stored chunk; strict
    (one encoding: key ids ascending, minimal varints), IntegrityError otherwise."""
    def fail(what: str) -> IntegrityError:
        return IntegrityError(f"the base chunk's key block is malformed ({what}): damaged backup")
    if not stored or not 1 <= stored[0] <= MAX_RECIPIENTS:
        raise fail("recipient count")
    pos, out = 1, {}
    for _ in range(stored[0]):
        kid = stored[pos:pos + 8]
        pos += 8
        n = shift = 0
        while True:
            if pos >= len(stored) or shift > 14:
                raise fail("truncated")
            b = stored[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        if len(kid) != 8 or not 0 < n <= MAX_WRAPPED or pos + n > len(stored):
            raise fail("truncated")
        out[kid] = stored[pos:pos + n]
        pos += n
    if list(out) != sorted(out) or len(out) != stored[0]:
        raise fail("key ids not ascending or repeated")
    block = encode_key_block(out)
    if stored[:len(block)] != block:
        raise fail("not in canonical form")
    return out, stored[pos:]


def recipients_of(archive) -> dict[bytes, bytes]:  # archive: host.archive.archive.Archive
    """Recipient key id -> wrapped chain secret: from the host section (formats 1 and 3
    with host section v3), else from the key block of the base's first chunk, which must
    be present and match its signed hash (IntegrityError otherwise)."""
    host = archive.host
    if getattr(host, "version", 0) != 4:
        return dict(host.recipients)
    ref = archive.manifest.chunks[0]
    stored = archive.chunks.get(ref.chunk_id)
    if stored is None:
        raise IntegrityError(f"backup {archive.backup_id.hex()} lacks its base chunk (the chain keys): "
                             "read it from the card or the file first")
    return split_key_block(archive.checked_chunk(ref))[0]
