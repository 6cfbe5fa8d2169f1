"""Whether a backup fits a card, asked before the first byte goes up, and what a full card means.

    need = upload_need(new_chunk_sizes, manifest_length, chunk_count, block_size)   # blocks, entries
    room = CardRoom.of(card.status())               # free/total bytes and entries, max manifest
    check_fits(room, need)             # CardFullError before BEGIN: both numbers and the way out
    full_message(sw, room, need)       # the same words for a 6A84 / 668B during an upload
    manifest_too_long(length, limit, chunk_count)   # what a 6A84 to BEGIN BACKUP means

A chunk takes whole blocks and one chunk entry however many backups share it; the
manifest takes whole blocks at COMMIT (apdu_specs/README.md, "Personalisation" and
GET STATUS). The Python emulator also keeps each backup's chunk id list (32 bytes per
chunk) in blocks; the Java card reads it from the manifest. It is counted for both: on
the Java card the check errs on the safe side by those blocks. A card of an earlier
version reports no entries and no block size: then only bytes are checked, in 256-byte
blocks.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from apdu_specs import constants as C
from apdu_specs.sw import SW
from host.errors import CardFullError

WAY_OUT = ("delete a backup ('simvault list', 'simvault delete --id ID') and, once the old chain is gone, "
           "'simvault backup --full'; back up less (--scope, --exclude-secrets); or a bigger card "
           "('simvault card init --capacity BYTES --chunk-entries N'; install parameters 06, 07)")


@dataclass(frozen=True)
class UploadNeed:
    bytes: int            # new chunks, manifest and id list, each rounded up to whole blocks
    entries: int          # new chunk entries: the chunks not yet on the card
    chunk_count: int      # every chunk of the backup
    manifest: int         # the manifest's length (BEGIN BACKUP announces it)


@dataclass(frozen=True)
class CardRoom:
    free_bytes: int
    total_bytes: int
    free_entries: int | None          # None: a card that does not report its chunk table
    total_entries: int | None
    block_size: int
    max_manifest: int | None = None   # None: not reported (BEGIN BACKUP is the judge)
    free_slots: int | None = None     # directory slots (max backups - backups)

    @classmethod
    def of(cls, status: Any) -> CardRoom:
        entries = getattr(status, "chunk_entries", None)
        return cls(status.free, status.capacity, None if entries is None else max(0, entries - status.chunks),
                   entries, getattr(status, "block_size", None) or C.BLOCK_SIZE, getattr(status, "max_manifest", None),
                   status.max_backups - status.backups)


def blocks_bytes(size: int, block_size: int) -> int:
    return -(-size // block_size) * block_size


def upload_need(new_chunk_sizes: Iterable[int], manifest_length: int, chunk_count: int,
                block_size: int) -> UploadNeed:
    """chunk_count: every chunk of the backup, shared ones too (its id list)."""
    sizes = list(new_chunk_sizes)
    total = (sum(blocks_bytes(s, block_size) for s in sizes) + blocks_bytes(manifest_length, block_size)
             + blocks_bytes(C.CHUNK_ID_LENGTH * chunk_count, block_size))
    return UploadNeed(total, len(sizes), chunk_count, manifest_length)


def _short(room: CardRoom, need: UploadNeed) -> tuple[bool, bool]:
    """(bytes short, entries short)."""
    entries_short = room.free_entries is not None and need.entries > room.free_entries
    return need.bytes > room.free_bytes, entries_short


def _numbers(room: CardRoom, need: UploadNeed) -> str:
    wants = (f"needs {need.bytes} bytes ({need.entries} new chunks, manifest, id list; {room.block_size}-byte blocks) "
             f"and {need.entries} chunk entries; the card has {room.free_bytes} of {room.total_bytes} bytes")
    if room.free_entries is None:
        return wants + " free (it does not report its chunk entries)"
    return wants + f" and {room.free_entries} of {room.total_entries} entries free"


def _what(bytes_short: bool, entries_short: bool) -> str:
    if bytes_short and entries_short:
        return "bytes and chunk entries ran out"
    return "chunk entries ran out" if entries_short else "bytes ran out"


def manifest_too_long(length: int, limit: int | None, chunk_count: int) -> str:
    return (f"this backup's manifest ({length} bytes for {chunk_count} chunks) is longer than the card takes"
            + (f" ({limit} bytes, install parameter 09)" if limit is not None else " (BEGIN BACKUP answered 6A84)")
            + ": back up less at a time (--scope), or install the applet with a larger 09 (up to 32767: about 480 "
            "chunks); the Python emulator takes 256 KiB")


def check_fits(room: CardRoom, need: UploadNeed) -> None:
    """CardFullError (nothing sent yet) when the card cannot take need."""
    if room.free_slots is not None and room.free_slots <= 0:
        raise CardFullError("card full, nothing written: every backup slot is used: delete a backup ('simvault "
                            "list', 'simvault delete --id ID')", SW.NOT_ENOUGH_MEMORY)
    if room.max_manifest is not None and need.manifest > room.max_manifest:
        raise CardFullError("nothing written: " + manifest_too_long(need.manifest, room.max_manifest, need.chunk_count),
                            SW.NOT_ENOUGH_MEMORY)
    bytes_short, entries_short = _short(room, need)
    if bytes_short or entries_short:
        sw = SW.CHUNK_TABLE_FULL if entries_short and not bytes_short else SW.NOT_ENOUGH_MEMORY
        raise CardFullError(f"card full, nothing written: {_what(bytes_short, entries_short)}: this backup "
                            f"{_numbers(room, need)}: {WAY_OUT}", sw)


def full_message(sw: int, room: CardRoom | None, need: UploadNeed) -> str:
    """What a 6A84 or 668B during an upload means (room: the card's state before the upload)."""
    what = "chunk entries ran out" if sw == SW.CHUNK_TABLE_FULL else "bytes ran out"
    numbers = _numbers(room, need) if room is not None else f"needs ~{need.bytes} bytes, {need.entries} entries"
    return (f"card full: {what}: this backup {numbers}: {WAY_OUT}; the partial upload holds card memory "
            "until 'simvault card abort-upload' (or resumes when the same backup runs again)")


FULL_SWS = (SW.NOT_ENOUGH_MEMORY, SW.CHUNK_TABLE_FULL)
