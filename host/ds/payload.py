"""A simvault archive as a DS datastore item: text/plain, base64, no whitespace.

SyncEvolution's file backend only stores text/plain, text/vcard and
text/calendar, and normalises line endings (LF becomes CRLF, a final CRLF is
added). Its SyncML engine also drops whitespace at the edge of a large-object
chunk, which then fails its own Size check (424: seen with wrapped base64
whenever a chunk boundary fell on a line end). So the item is one line:

    simvault-archive/1 id=<backup id> size=<archive bytes> sha256=<hex> data=<base64>

Decoding ignores all whitespace in the base64 (wrapped lines are accepted);
size and SHA-256 catch a truncated or altered item before host/archive
verifies the signature anyway.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from host.ds.errors import DsPayloadError

CONTENT_TYPE = "text/plain"
CONTENT_VERSION = "1.0"
HEADER_MAGIC = "simvault-archive/1"
_HEADER_RE = re.compile(r"^simvault-archive/1 id=([0-9A-Za-z_.-]{1,128}) size=(\d{1,12}) sha256=([0-9a-f]{64})"
                        r"(?: data=|\s)")


@dataclass(frozen=True)
class ArchiveItem:
    """One archive carried in a datastore item."""

    backup_id: str
    archive: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.archive).hexdigest()


def encode_item(backup_id: str, archive: bytes) -> str:
    """The item text for ``archive`` (``backup_id`` is any short token; '-' when unknown)."""
    backup_id = backup_id or "-"
    if not re.fullmatch(r"[0-9A-Za-z_.-]{1,128}", backup_id):
        raise DsPayloadError(f"backup id {backup_id[:40]!r} is not a short token: use hex")
    b64 = base64.b64encode(archive).decode("ascii")
    return f"{HEADER_MAGIC} id={backup_id} size={len(archive)} sha256={hashlib.sha256(archive).hexdigest()} data={b64}"


def archive_item_id(text: str) -> str | None:
    """The backup id in an item's header (None when the item is not a simvault archive)."""
    match = _HEADER_RE.match(text.lstrip("\ufeff").lstrip())
    return match.group(1) if match else None


def is_archive_item(text: str) -> bool:
    return text.lstrip("\ufeff").startswith(HEADER_MAGIC)


def decode_item(text: str) -> ArchiveItem:
    """Parse item text back to the archive; DsPayloadError when incomplete or altered."""
    text = text.lstrip("\ufeff").lstrip()
    match = _HEADER_RE.match(text)
    if not match:
        raise DsPayloadError("datastore item is not a simvault archive (bad header): pick another item or backup")
    backup_id, size, digest = match.group(1), int(match.group(2)), match.group(3)
    body = text[match.end():]
    try:
        archive = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DsPayloadError(f"backup {backup_id}: item body is not base64 (truncated?): back up again") from None
    if len(archive) != size:
        raise DsPayloadError(f"backup {backup_id}: item holds {len(archive)} of {size} bytes (truncated): back up again")
    if not hmac.compare_digest(hashlib.sha256(archive).hexdigest(), digest):
        raise DsPayloadError(f"backup {backup_id}: item SHA-256 does not match its header (altered): back up again")
    return ArchiveItem(backup_id=backup_id, archive=archive)
