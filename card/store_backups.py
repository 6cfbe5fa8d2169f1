"""BackupStore's committed side: reading backups and chunks, deleting a backup, erasing.

A mixin of card.store.BackupStore (like store_credentials), so that store.py stays
about formatting, the caches and the upload session; the state it uses (the caches
``_backups`` and ``_chunks``, ``_mutation``, ``_alive``, ``_load``) is BackupStore's.
"""
from __future__ import annotations

from card.store_layout import (
    ANCHOR_SIZE,
    CFG_HWM,
    CFG_LIFECYCLE,
    CFG_PENDING_ERASE,
    CFG_PIN,
    CFG_PIN_TRIES,
    CFG_SESSION,
    CHUNK_ID_LEN,
    CHUNK_RC,
    CHUNK_SIZE,
    DIR_SIZE,
    MAX_ANCHORS,
    MAX_BACKUPS,
    SESSION,
    BackupInfo,
    BackupNotFound,
    ChunkInfo,
    ChunkNotFound,
    ChunkState,
    InvalidArgument,
    StoreError,
    StoreStats,
)

_ERASE_BACKUPS, _ERASE_ALL = 1, 2


class BackupsMixin:
    # ---- backups and chunks -------------------------------------------------

    @property
    def high_water_mark(self) -> int:
        self._alive()
        return self._hwm

    def list_backups(self) -> list[BackupInfo]:
        """Committed backups, oldest sequence first."""
        self._alive()
        return sorted((b[1] for b in self._backups.values()), key=lambda b: b.sequence)

    def _backup(self, backup_id: bytes) -> tuple[int, BackupInfo, int, int]:
        self._alive()
        entry = self._backups.get(bytes(backup_id))
        if entry is None:
            raise BackupNotFound(f"no backup {bytes(backup_id).hex()} on the card")
        return entry

    def get_backup(self, backup_id: bytes) -> BackupInfo:
        return self._backup(backup_id)[1]

    def backup_chunk_ids(self, backup_id: bytes) -> list[bytes]:
        _, info, _, lhead = self._backup(backup_id)
        raw = self._read_obj(lhead, info.chunk_count * CHUNK_ID_LEN, 0, info.chunk_count * CHUNK_ID_LEN)
        return [raw[i:i + CHUNK_ID_LEN] for i in range(0, len(raw), CHUNK_ID_LEN)]

    def read_manifest(self, backup_id: bytes, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (short at the end)."""
        _, info, mhead, _ = self._backup(backup_id)
        return self._read_obj(mhead, info.manifest_length, offset, length)

    def chunk_info(self, chunk_id: bytes) -> ChunkInfo:
        self._alive()
        entry = self._chunks.get(bytes(chunk_id))
        if entry is None:
            raise ChunkNotFound(f"no chunk {bytes(chunk_id).hex()[:16]} on the card")
        return entry[1]

    def chunk_hash(self, chunk_id: bytes) -> bytes:
        """SHA-256 of the chunk's bytes, computed when it was stored."""
        return self.chunk_info(chunk_id).sha256

    def read_chunk(self, chunk_id: bytes, offset: int = 0, length: int | None = None) -> bytes:
        info = self.chunk_info(chunk_id)
        head = self._chunks[bytes(chunk_id)][2]
        return self._read_obj(head, info.length, offset, info.length if length is None else length)

    def _read_obj(self, head: int, obj_len: int, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise InvalidArgument("offset and length must not be negative")
        end = min(obj_len, offset + length)
        self._alive()
        return self.alloc.read_data(head, offset, end - offset) if end > offset else b""

    def delete_backup(self, backup_id: bytes) -> None:
        """One transaction: drop the entry, release its chunks (freed at refcount
        0), manifest and id list.  The high-water mark stays."""
        slot, info, mhead, lhead = self._backup(backup_id)
        ids = dict.fromkeys(self.backup_chunk_ids(backup_id))
        with self._mutation():
            for cid in ids:
                cslot, cinfo, head = self._chunks[cid]
                if cinfo.refcount <= 1:
                    self._free_chunk(cid, cslot, head)
                else:
                    rc = cinfo.refcount - 1
                    self.nvm.write(self.off_chunks + cslot * CHUNK_SIZE,
                                   CHUNK_RC.pack(ChunkState.COMMITTED, rc))
                    self._chunks[cid] = (cslot, ChunkInfo(cid, cinfo.length, cinfo.sha256, rc,
                                                          ChunkState.COMMITTED), head)
            self.alloc.free_chain(mhead)
            self.alloc.free_chain(lhead)
            self.nvm.write(self.off_dir + slot * DIR_SIZE, b"\0")
            del self._backups[info.backup_id]

    def stats(self) -> StoreStats:
        self._alive()
        free = self.alloc.free_count * self.block_size
        cap = self.nblocks * self.block_size
        return StoreStats(cap, cap - free, free, len(self._chunks), self._pending_count(),
                          len(self._backups), self.block_size, self.max_chunks, MAX_BACKUPS,
                          self.nvm.journal_capacity)

    # ---- erase --------------------------------------------------------------

    def erase_backups(self) -> None:
        """Drop every backup, chunk and the session; keep PIN, keys, anchors and
        the high-water mark.  Redo-style: a flag is set first and _load()
        finishes an interrupted erase."""
        self._start_erase(_ERASE_BACKUPS)

    def factory_reset(self) -> None:
        """erase_backups() plus PIN, PUK, admin key, anchors, back to BLANK.
        The high-water mark survives (anti-rollback for the card's life)."""
        self._start_erase(_ERASE_ALL)

    def _start_erase(self, kind: int) -> None:
        if self.nvm.in_transaction:
            raise StoreError("erase cannot run inside a transaction")
        self.nvm.write_nonatomic(self.off_config + CFG_PENDING_ERASE, bytes([kind]))
        self._load()

    def _finish_erase(self, kind: int) -> None:
        """Idempotent: zero the tables (only pieces not already zero)."""
        nvm = self.nvm
        spans = [(self.off_dir, MAX_BACKUPS * DIR_SIZE),
                 (self.off_chunks, self.max_chunks * CHUNK_SIZE),
                 (self.off_fat, 4 * self.nblocks),
                 (self.off_config + CFG_SESSION, SESSION.size)]
        if kind == _ERASE_ALL:
            spans += [(self.off_anchors, MAX_ANCHORS * ANCHOR_SIZE),
                      (self.off_config + CFG_PIN, CFG_HWM - CFG_PIN),
                      (self.off_config + CFG_PIN_TRIES, 3),     # PIN, PUK, admin counters
                      (self.off_config + CFG_LIFECYCLE, 1)]
        for start, length in spans:
            for pos in range(start, start + length, 4096):
                n = min(4096, start + length - pos)
                if any(nvm.read(pos, n)):
                    nvm.write_nonatomic(pos, bytes(n))
        nvm.write_nonatomic(self.off_config + CFG_PENDING_ERASE, b"\0")
