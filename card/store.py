"""The backup applet's persistent store, on top of PersistentMemory.

Everything the applet must remember lives in NVM; the attributes of
``BackupStore`` are caches rebuilt by ``_load()`` on open, ``power_up()`` and
after any aborted mutation.  Every multi-write mutation is one NVM
transaction; bulk data (chunk bytes, manifest bytes, chunk-id lists) is first
written non-atomically into blocks reserved in RAM, which only the
transaction's FAT update makes allocated (see card/alloc.py).  Layout and
protocols: card/IMAGE_FORMAT.md.

Retry counters are the exception: ``verify_pin`` decrements the PIN counter
with one non-journaled write BEFORE comparing and restores it after a match,
so a torn VERIFY can never gain a try.
"""
from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from apdu_specs.constants import CHUNK_ENTRIES_MAX, default_chunk_entries
from card import store_check
from card.alloc import NO_BLOCK, AllocatorFull, BlockAllocator
from card.nvm import JREC_OVERHEAD, JournalFull, PersistentMemory, PowerLoss
from card.store_backups import BackupsMixin
from card.store_credentials import CredentialsMixin, _need
from card.store_layout import (
    ANCHOR_SIZE,
    BACKUP_ID_LEN,
    CFG_HWM,
    CFG_LIFECYCLE,
    CFG_PENDING_ERASE,
    CFG_PIN_TRIES,
    CFG_SESSION,
    CHUNK,
    CHUNK_ID_LEN,
    CHUNK_RC,
    CHUNK_SIZE,
    CONFIG_SIZE,
    DEFAULT_BLOCK_SIZE,
    DIR,
    DIR_SIZE,
    HEADER,
    HWM,
    MAX_ANCHORS,
    MAX_BACKUPS,
    MAX_CHUNK,
    MAX_MANIFEST,
    META_MAX,
    PIN_MAX_TRIES,
    PUK_MAX_TRIES,
    SESSION,
    SIGNATURE_LEN,
    STORE_MAGIC,
    STORE_VERSION,
    AlreadyPersonalised,
    AnchorNotFound,
    BackupExists,
    BackupInfo,
    BackupNotFound,
    ChunkExists,
    ChunkInfo,
    ChunkNotFound,
    ChunkState,
    ChunkTableFull,
    InvalidArgument,
    LifeCycle,
    NoSession,
    NotFormatted,
    NotPersonalised,
    PukBlocked,
    SequenceRollback,
    SessionInfo,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreStats,
    TrustAnchor,
    lifecycle_from_byte,
)

__all__ = [
    "MAX_ANCHORS",
    "MAX_BACKUPS",
    "MAX_CHUNK",
    "MAX_MANIFEST",
    "PIN_MAX_TRIES",
    "PUK_MAX_TRIES",
    "AlreadyPersonalised",
    "AnchorNotFound",
    "BackupExists",
    "BackupInfo",
    "BackupNotFound",
    "BackupStore",
    "ChunkExists",
    "ChunkInfo",
    "ChunkNotFound",
    "ChunkState",
    "ChunkTableFull",
    "InvalidArgument",
    "LifeCycle",
    "NoSession",
    "NotFormatted",
    "NotPersonalised",
    "PukBlocked",
    "SequenceRollback",
    "SessionInfo",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreStats",
    "TrustAnchor",
]

# journal bytes of one-record writes (upper bounds used by the journal budget)
_RC_COST = JREC_OVERHEAD + CHUNK_RC.size
_SESSION_COST = JREC_OVERHEAD + SESSION.size
_DIR_FREE_COST = JREC_OVERHEAD + 1


class BackupStore(BackupsMixin, CredentialsMixin):
    """The applet's persistent state.  ``BackupStore(nvm)`` opens a formatted
    store; ``BackupStore.format(nvm)`` lays out a blank one."""

    # ---- format / open ------------------------------------------------------

    @classmethod
    def format(cls, nvm: PersistentMemory, block_size: int = DEFAULT_BLOCK_SIZE,
               max_chunks: int | None = None) -> BackupStore:
        """Lay out an empty, BLANK store over the whole data region of a fresh
        NVM (not power-safe: format before the card ships)."""
        if block_size < 64 or block_size & (block_size - 1):
            raise InvalidArgument("block size must be a power of two >= 64")
        off_config = 64
        off_anchors = off_config + CONFIG_SIZE
        off_dir = off_anchors + MAX_ANCHORS * ANCHOR_SIZE
        off_chunks = off_dir + MAX_BACKUPS * DIR_SIZE
        if max_chunks is None:
            max_chunks = default_chunk_entries(nvm.capacity)
        if not 1 <= max_chunks <= CHUNK_ENTRIES_MAX:
            raise InvalidArgument(f"{max_chunks} chunk entries: 1 to {CHUNK_ENTRIES_MAX}")
        off_fat = off_chunks + max_chunks * CHUNK_SIZE
        # FAT (4 bytes) + block (block_size) per block, blocks aligned
        room = nvm.capacity - off_fat - block_size
        nblocks = room // (block_size + 4)
        if nblocks < 16:
            raise InvalidArgument(f"NVM of {nvm.capacity} bytes is too small for a store")
        off_blocks = (off_fat + 4 * nblocks + block_size - 1) // block_size * block_size
        zero = bytes(4096)
        for pos in range(0, off_blocks, 4096):          # tables and FAT to zero
            nvm.write_nonatomic(pos, zero[:min(4096, off_blocks - pos)])
        nvm.write_nonatomic(off_config + CFG_PIN_TRIES, bytes([0, 0]))
        header = HEADER.pack(STORE_MAGIC, STORE_VERSION, block_size, nblocks, max_chunks,
                             off_config, off_anchors, off_dir, off_chunks, off_fat, off_blocks)
        nvm.write_nonatomic(0, header + _tag8(header))  # the magic last: formatted
        return cls(nvm)

    def __init__(self, nvm: PersistentMemory) -> None:
        self.nvm = nvm
        raw = nvm.read(0, HEADER.size + 8)
        if raw[:8] != STORE_MAGIC:
            raise NotFormatted("the card memory holds no backup store: format it first")
        if raw[HEADER.size:] != _tag8(raw[:HEADER.size]):
            raise StoreCorrupt("the store header is damaged: reformat the card")
        (_, self.format_version, self.block_size, self.nblocks, self.max_chunks, self.off_config,
         self.off_anchors, self.off_dir, self.off_chunks, self.off_fat,
         self.off_blocks) = HEADER.unpack(raw[:HEADER.size])
        if self.format_version != STORE_VERSION:
            raise NotFormatted(f"store format {self.format_version} is not supported "
                               f"(this build reads {STORE_VERSION}): reformat the card")
        self.alloc = BlockAllocator(nvm, self.off_fat, self.off_blocks, self.block_size, self.nblocks)
        # Journal budget: dropping the open session (abort, or BEGIN of another
        # id) must fit in one transaction with room to spare for its commit, and
        # deleting any committed backup must fit in one transaction.  put_chunk,
        # put_manifest and commit_session refuse (StoreFull) what would break that.
        self.session_journal_budget = nvm.journal_capacity // 2
        self._load()

    def power_up(self) -> None:
        """After a PowerLoss: recover the NVM journal and rebuild the caches."""
        self.nvm.power_up()
        self._load()

    # ---- caches -------------------------------------------------------------

    def _load(self) -> None:
        """Rebuild every cache from NVM, finishing an interrupted erase first."""
        self._cycles = self.nvm.power_cycles
        cfg = self.nvm.read(self.off_config, CONFIG_SIZE)
        if cfg[CFG_PENDING_ERASE]:
            self._finish_erase(cfg[CFG_PENDING_ERASE])
            cfg = self.nvm.read(self.off_config, CONFIG_SIZE)
        self.alloc.load()
        table = self.nvm.read(self.off_chunks, self.max_chunks * CHUNK_SIZE)
        self._chunks: dict[bytes, tuple[int, ChunkInfo, int]] = {}   # id -> (slot, info, head)
        self._free_slots: list[int] = []
        for slot, state in enumerate(table[0::CHUNK_SIZE]):
            if state == ChunkState.FREE:
                self._free_slots.append(slot)
                continue
            st, rc, length, head, cid, sha = CHUNK.unpack_from(table, slot * CHUNK_SIZE)
            self._chunks[cid] = (slot, ChunkInfo(cid, length, sha, rc, ChunkState(st)), head)
        heapq.heapify(self._free_slots)
        self._pending_cost = sum(self._chunk_free_cost(head) for _, info, head in self._chunks.values()
                                 if info.state == ChunkState.PENDING)
        self._backups: dict[bytes, tuple[int, BackupInfo, int, int]] = {}  # id -> (slot, info, mhead, lhead)
        dir_raw = self.nvm.read(self.off_dir, MAX_BACKUPS * DIR_SIZE)
        for slot in range(MAX_BACKUPS):
            (used, meta_len, count, bid, seq, created, size, mhead, mlen, lhead, sig,
             meta) = DIR.unpack_from(dir_raw, slot * DIR_SIZE)
            if used:
                info = BackupInfo(bid, seq, created, size, mlen, sig, count, meta[:meta_len])
                self._backups[bid] = (slot, info, mhead, lhead)
        active, sid, shead, slen = SESSION.unpack_from(cfg, CFG_SESSION)
        self._session = (sid, shead, slen) if active else None
        self._hwm = HWM.unpack_from(cfg, CFG_HWM)[0]
        self._lifecycle = lifecycle_from_byte(cfg[CFG_LIFECYCLE])

    # ---- transaction helper -------------------------------------------------

    @contextmanager
    def _mutation(self) -> Iterator[None]:
        """One transaction; on any error abort it and rebuild the caches, so a
        failed call leaves NVM and RAM exactly as before.  JournalFull and
        AllocatorFull become StoreFull."""
        self._alive()
        try:
            with self.nvm.transaction():
                yield
        except PowerLoss:
            raise
        except BaseException as exc:
            self._load()
            if isinstance(exc, (JournalFull, AllocatorFull)):
                raise StoreFull(f"card memory full ({exc}): delete a backup") from exc
            raise
        self.alloc.release_deferred()

    def _chunk_free_cost(self, head: int) -> int:
        return _RC_COST + self.alloc.fat_journal_cost(self.alloc.chain(head))

    def _check_session_budget(self, extra: int, manifest_blocks: list[int] | None = None,
                              reserved: list[int] = ()) -> None:
        """StoreFull (after giving back ``reserved``) if dropping the session
        would no longer fit in the journal budget."""
        if manifest_blocks is None:
            manifest_blocks = self.alloc.chain(self._session[1]) if self._session else []
        total = self._pending_cost + extra + _SESSION_COST + self.alloc.fat_journal_cost(manifest_blocks)
        if total > self.session_journal_budget:
            self.alloc.unreserve(list(reserved))
            raise StoreFull(f"the upload session would outgrow the card's {self.nvm.journal_capacity}-byte "
                            "journal: use bigger chunks, or commit or abort first")

    def _alive(self) -> None:
        """Caches answer only while the card is powered, and are rebuilt if
        the NVM was powered up behind the store's back (never stale state)."""
        if not self.nvm.powered:
            raise PowerLoss("the card is powered off: call power_up()")
        if self.nvm.power_cycles != self._cycles:
            self._load()

    def _reserve(self, nbytes: int) -> list[int]:
        try:
            return self.alloc.alloc(self.alloc.blocks_for(nbytes, self.block_size))
        except AllocatorFull as exc:
            raise StoreFull(f"card memory full ({exc}): delete a backup") from exc

    # ---- upload session -----------------------------------------------------

    def session(self) -> SessionInfo | None:
        self._alive()
        if self._session is None:
            return None
        sid, _, slen = self._session
        return SessionInfo(sid, slen, self._pending_count())

    def _pending_count(self) -> int:
        return sum(1 for _, info, _ in self._chunks.values() if info.state == ChunkState.PENDING)

    def begin_session(self, backup_id: bytes) -> SessionInfo:
        """Start an upload, or resume the open one with the same id (resumed=True).
        Another id drops the open session's pending chunks and manifest."""
        self._alive()
        _need(backup_id, BACKUP_ID_LEN, "backup id")
        backup_id = bytes(backup_id)
        if backup_id in self._backups:
            raise BackupExists(f"backup {backup_id.hex()} exists: delete it or use a new id")
        if self._session is not None and self._session[0] == backup_id:
            return SessionInfo(backup_id, self._session[2], self._pending_count(), resumed=True)
        with self._mutation():
            self._drop_session()
            self._cfg_write(CFG_SESSION, SESSION.pack(1, backup_id, NO_BLOCK, 0))
            self._session = (backup_id, NO_BLOCK, 0)
        return SessionInfo(backup_id, 0, 0)

    def abort_session(self) -> None:
        """Drop the open session (pending chunks and manifest); no-op without one."""
        if self._session is None:
            return
        with self._mutation():
            self._drop_session()
            self._cfg_write(CFG_SESSION, bytes(SESSION.size))
            self._session = None

    def _drop_session(self) -> None:
        """Inside a transaction: free pending chunks and the session manifest."""
        for cid, (slot, info, head) in list(self._chunks.items()):
            if info.state == ChunkState.PENDING:
                self._free_chunk(cid, slot, head)
        if self._session is not None:
            self.alloc.free_chain(self._session[1])
        self._pending_cost = 0

    def _free_chunk(self, cid: bytes, slot: int, head: int) -> None:
        self.alloc.free_chain(head)
        self.nvm.write(self.off_chunks + slot * CHUNK_SIZE, CHUNK_RC.pack(ChunkState.FREE, 0))
        del self._chunks[cid]
        heapq.heappush(self._free_slots, slot)

    def _require_session(self) -> tuple[bytes, int, int]:
        self._alive()
        if self._session is None:
            raise NoSession("no upload session is open: BEGIN one first")
        return self._session

    def put_chunk(self, chunk_id: bytes, data: bytes) -> None:
        """Store a chunk as PENDING in the open session.  ChunkExists if the id
        is already stored (committed or pending): the host skips it."""
        self._require_session()
        _need(chunk_id, CHUNK_ID_LEN, "chunk id")
        chunk_id, data = bytes(chunk_id), bytes(data)
        if len(data) > MAX_CHUNK:
            raise InvalidArgument(f"a chunk holds at most {MAX_CHUNK} bytes")
        if chunk_id in self._chunks:
            raise ChunkExists(f"chunk {chunk_id.hex()[:16]} is already on the card")
        if not self._free_slots:
            raise ChunkTableFull(f"the chunk table ({self.max_chunks} entries) is full: delete a backup")
        sha = hashlib.sha256(data).digest()
        blocks = self._reserve(len(data))
        cost = _RC_COST + self.alloc.fat_journal_cost(blocks)
        self._check_session_budget(cost, reserved=blocks)
        head = blocks[0] if blocks else NO_BLOCK
        with self._mutation():
            self.alloc.write_data(blocks, 0, data)
            self.alloc.link(blocks)
            slot = heapq.heappop(self._free_slots)
            self.nvm.write(self.off_chunks + slot * CHUNK_SIZE,
                           CHUNK.pack(ChunkState.PENDING, 0, len(data), head, chunk_id, sha))
            self._chunks[chunk_id] = (slot, ChunkInfo(chunk_id, len(data), sha, 0, ChunkState.PENDING), head)
        self._pending_cost += cost

    def put_manifest(self, offset: int, data: bytes) -> int:
        """Write manifest bytes of the open session at ``offset`` (<= current
        length: append or overwrite, no holes).  Returns the new length.
        Overwritten bytes are not journaled (re-send on failure)."""
        sid, head, length = self._require_session()
        if offset < 0 or offset > length:
            raise InvalidArgument(f"manifest offset {offset} is past its length {length}")
        new_len = max(length, offset + len(data))
        if new_len > MAX_MANIFEST:
            raise InvalidArgument(f"a manifest holds at most {MAX_MANIFEST} bytes")
        old_blocks = self.alloc.chain(head)
        need = self.alloc.blocks_for(new_len, self.block_size) - len(old_blocks)
        new_blocks = self._reserve(need * self.block_size) if need > 0 else []
        self._check_session_budget(0, old_blocks + new_blocks, reserved=new_blocks)
        with self._mutation():
            self.alloc.write_data(old_blocks + new_blocks, offset, data)
            if new_len != length:
                self.alloc.link(new_blocks, after=old_blocks[-1] if old_blocks else None)
                new_head = head if old_blocks else (new_blocks[0] if new_blocks else NO_BLOCK)
                self._cfg_write(CFG_SESSION, SESSION.pack(1, sid, new_head, new_len))
                self._session = (sid, new_head, new_len)
        return new_len

    def read_session_manifest(self, offset: int, length: int) -> bytes:
        _, head, mlen = self._require_session()
        return self._read_obj(head, mlen, offset, length)

    def has_chunks(self, chunk_ids: Iterable[bytes]) -> list[bool]:
        self._alive()
        return [bytes(cid) in self._chunks for cid in chunk_ids]

    def commit_session(self, signature: bytes, chunk_ids: list[bytes], sequence: int,
                       created: int, size: int, meta: bytes = b"") -> BackupInfo:
        """In one transaction: make the session's backup visible, reference its
        chunks, free pending chunks it does not use, raise the high-water mark,
        close the session.  The applet has verified signature and hashes."""
        sid, mhead, mlen = self._require_session()
        _need(signature, SIGNATURE_LEN, "signature")
        if len(meta) > META_MAX:
            raise InvalidArgument(f"meta holds at most {META_MAX} bytes")
        if sequence <= self._hwm:
            raise SequenceRollback(f"sequence {sequence} is not above {self._hwm}: make a newer backup")
        if not 0 <= sequence < 2**64 or not 0 <= created < 2**64 or not 0 <= size < 2**64:
            raise InvalidArgument("sequence, created and size must be u64")
        unique = dict.fromkeys(bytes(c) for c in chunk_ids)
        for cid in unique:
            _need(cid, CHUNK_ID_LEN, "chunk id")
            if cid not in self._chunks:
                raise ChunkNotFound(f"chunk {cid.hex()[:16]} of the manifest was not uploaded")
        slot = next((i for i in range(MAX_BACKUPS)
                     if i not in {s for s, *_ in self._backups.values()}), None)
        if slot is None:
            raise StoreFull(f"all {MAX_BACKUPS} backup slots are used: delete a backup")
        id_list = b"".join(bytes(c) for c in chunk_ids)
        lblocks = self._reserve(len(id_list))
        delete_cost = (sum(self._chunk_free_cost(self._chunks[cid][2]) for cid in unique)
                       + self.alloc.fat_journal_cost(self.alloc.chain(mhead))
                       + self.alloc.fat_journal_cost(lblocks) + _DIR_FREE_COST)
        if delete_cost > self.nvm.journal_capacity:
            self.alloc.unreserve(lblocks)
            raise StoreFull(f"a backup of {len(unique)} chunks could not be deleted in one transaction "
                            f"of the card's {self.nvm.journal_capacity}-byte journal: use bigger chunks")
        lhead = lblocks[0] if lblocks else NO_BLOCK
        info = BackupInfo(sid, sequence, created, size, mlen, bytes(signature), len(chunk_ids), bytes(meta))
        with self._mutation():
            self.alloc.write_data(lblocks, 0, id_list)
            self.alloc.link(lblocks)
            for cid in unique:
                cslot, cinfo, head = self._chunks[cid]
                rc = cinfo.refcount + 1
                self.nvm.write(self.off_chunks + cslot * CHUNK_SIZE, CHUNK_RC.pack(ChunkState.COMMITTED, rc))
                self._chunks[cid] = (cslot, ChunkInfo(cid, cinfo.length, cinfo.sha256, rc,
                                                      ChunkState.COMMITTED), head)
            for cid, (cslot, cinfo, head) in list(self._chunks.items()):
                if cinfo.state == ChunkState.PENDING:
                    self._free_chunk(cid, cslot, head)
            self._pending_cost = 0
            self.nvm.write(self.off_dir + slot * DIR_SIZE, DIR.pack(
                1, len(meta), len(chunk_ids), sid, sequence, created, size, mhead, mlen, lhead,
                bytes(signature), bytes(meta)))
            self._cfg_write(CFG_HWM, HWM.pack(sequence))
            self._cfg_write(CFG_SESSION, bytes(SESSION.size))
            self._backups[sid] = (slot, info, mhead, lhead)
            self._hwm, self._session = sequence, None
        return info

    # ---- consistency --------------------------------------------------------

    def check(self, deep: bool = False) -> None:
        """Recount refcounts and allocation from NVM and compare with the caches;
        raise StoreCorrupt listing every mismatch.  ``deep`` also re-hashes chunks."""
        store_check.check(self, deep)


def _tag8(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()
