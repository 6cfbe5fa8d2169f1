"""BackupStore.check(): an independent recount of the store from NVM.

It reads the tables and the FAT straight from NVM (not the caches), walks
every chain, recounts every refcount, and compares the result with both the
persistent records and the RAM caches.  Any difference raises StoreCorrupt
with the full list, so a test sees exactly what a fault broke.
"""
from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from typing import TYPE_CHECKING, Protocol

from card.alloc import FAT_END, FAT_FREE, NO_BLOCK
from card.store_layout import (
    ADMIN_MAX_FAILURES,
    ANCHOR,
    ANCHOR_SIZE,
    CFG_ADMIN_FAILURES,
    CFG_HWM,
    CFG_LIFECYCLE,
    CFG_PENDING_ERASE,
    CFG_PIN_TRIES,
    CFG_PUK_TRIES,
    CFG_SESSION,
    CHUNK,
    CHUNK_ID_LEN,
    CHUNK_SIZE,
    CONFIG_SIZE,
    DIR,
    DIR_SIZE,
    HWM,
    MAX_ANCHORS,
    MAX_BACKUPS,
    PIN_MAX_TRIES,
    PUK_MAX_TRIES,
    SESSION,
    ChunkState,
    StoreCorrupt,
    lifecycle_from_byte,
)

if TYPE_CHECKING:
    from card.alloc import BlockAllocator
    from card.nvm import PersistentMemory
    from card.store_layout import BackupInfo, ChunkInfo, LifeCycle


class BackupStore(Protocol):
    """What check() reads of card.store.BackupStore (its one implementation), so that this
    module does not import the store that calls it."""

    nvm: PersistentMemory
    alloc: BlockAllocator
    block_size: int
    nblocks: int
    max_chunks: int
    off_fat: int
    off_dir: int
    off_chunks: int
    off_anchors: int
    off_config: int
    _chunks: dict[bytes, tuple[int, ChunkInfo, int]]
    _backups: dict[bytes, tuple[int, BackupInfo, int, int]]
    _session: tuple[bytes, int, int] | None
    _hwm: int
    _lifecycle: LifeCycle


def check(store: BackupStore, deep: bool = False) -> None:
    nvm, bs, nblocks = store.nvm, store.block_size, store.nblocks
    problems: list[str] = []
    if nvm.in_transaction:
        problems.append("check() called inside an open transaction")
    fat = array("I")
    fat.frombytes(nvm.read(store.off_fat, 4 * nblocks))
    owner: dict[int, str] = {}

    def walk(head: int, length: int, what: str) -> list[int]:
        want = -(-length // bs)
        if head == NO_BLOCK:
            if want:
                problems.append(f"{what}: {length} bytes but no blocks")
            return []
        blocks, b = [], head
        while True:
            if not 0 <= b < nblocks:
                problems.append(f"{what}: block {b} out of range")
                break
            if b in owner:
                problems.append(f"{what}: block {b} also belongs to {owner[b]}")
                break
            owner[b] = what
            blocks.append(b)
            nxt = fat[b]
            if nxt == FAT_END:
                break
            if nxt == FAT_FREE:
                problems.append(f"{what}: chain reaches free block {b}")
                break
            b = nxt - 1
        if len(blocks) != want:
            problems.append(f"{what}: {len(blocks)} blocks for {length} bytes (want {want})")
        return blocks

    cfg = nvm.read(store.off_config, CONFIG_SIZE)
    if cfg[CFG_PENDING_ERASE]:
        problems.append("an erase is still pending")
    try:
        lifecycle = lifecycle_from_byte(cfg[CFG_LIFECYCLE])
    except ValueError as exc:
        problems.append(str(exc))
        lifecycle = None
    if cfg[CFG_PIN_TRIES] > PIN_MAX_TRIES or cfg[CFG_PUK_TRIES] > PUK_MAX_TRIES \
            or cfg[CFG_ADMIN_FAILURES] > ADMIN_MAX_FAILURES:
        problems.append("retry counter above its maximum")
    if lifecycle is not None and lifecycle != store._lifecycle:
        problems.append("cached life-cycle differs from NVM")
    hwm = HWM.unpack_from(cfg, CFG_HWM)[0]
    if hwm != store._hwm:
        problems.append("cached high-water mark differs from NVM")

    # chunk table
    table = nvm.read(store.off_chunks, store.max_chunks * CHUNK_SIZE)
    chunks: dict[bytes, tuple[int, int, int, int, bytes]] = {}   # id -> state, rc, len, head, sha
    for slot in range(store.max_chunks):
        st, rc, length, head, cid, sha = CHUNK.unpack_from(table, slot * CHUNK_SIZE)
        if st == ChunkState.FREE:
            continue
        if st not in (ChunkState.PENDING, ChunkState.COMMITTED):
            problems.append(f"chunk slot {slot}: bad state {st}")
            continue
        if cid in chunks:
            problems.append(f"chunk {cid.hex()[:16]} stored twice")
        chunks[cid] = (st, rc, length, head, sha)
        blocks = walk(head, length, f"chunk {cid.hex()[:16]}")
        if deep and len(blocks) * bs >= length:
            data = store.alloc.read_blocks(blocks)[:length]
            if hashlib.sha256(data).digest() != sha:
                problems.append(f"chunk {cid.hex()[:16]}: bytes do not match their SHA-256")

    # directory
    dir_raw = nvm.read(store.off_dir, MAX_BACKUPS * DIR_SIZE)
    refs: Counter[bytes] = Counter()
    backup_ids: set[bytes] = set()
    for slot in range(MAX_BACKUPS):
        (used, meta_len, count, bid, seq, _c, _s, mhead, mlen, lhead, _sig,
         _m) = DIR.unpack_from(dir_raw, slot * DIR_SIZE)
        if not used:
            continue
        name = f"backup {bid.hex()[:8]}"
        if bid in backup_ids:
            problems.append(f"{name} listed twice")
        backup_ids.add(bid)
        if seq > hwm:
            problems.append(f"{name}: sequence {seq} above the high-water mark {hwm}")
        walk(mhead, mlen, f"{name} manifest")
        lblocks = walk(lhead, count * CHUNK_ID_LEN, f"{name} chunk list")
        if len(lblocks) * bs >= count * CHUNK_ID_LEN:
            raw = store.alloc.read_blocks(lblocks)[:count * CHUNK_ID_LEN]
            for cid in {raw[i:i + CHUNK_ID_LEN] for i in range(0, len(raw), CHUNK_ID_LEN)}:
                refs[cid] += 1
                if cid not in chunks or chunks[cid][0] != ChunkState.COMMITTED:
                    problems.append(f"{name}: chunk {cid.hex()[:16]} missing or not committed")
    if backup_ids != set(store._backups):
        problems.append("cached backup directory differs from NVM")

    # session
    active, sid, shead, slen = SESSION.unpack_from(cfg, CFG_SESSION)
    if active:
        walk(shead, slen, "session manifest")
        if sid in backup_ids:
            problems.append("the open session's backup id is already committed")
    if (store._session is not None) != bool(active) or \
            (active and store._session != (sid, shead, slen)):
        problems.append("cached session differs from NVM")

    # refcounts
    for cid, (st, rc, *_rest) in chunks.items():
        if st == ChunkState.COMMITTED and rc != refs[cid]:
            problems.append(f"chunk {cid.hex()[:16]}: refcount {rc}, referenced {refs[cid]} times")
        if st == ChunkState.COMMITTED and rc == 0:
            problems.append(f"chunk {cid.hex()[:16]}: committed with refcount 0 (leak)")
        if st == ChunkState.PENDING and (rc != 0 or not active):
            problems.append(f"chunk {cid.hex()[:16]}: pending without a session or with refcount {rc}")
    cached = {cid: (e[1].state, e[1].refcount, e[1].length, e[2], e[1].sha256)
              for cid, e in store._chunks.items()}
    if cached != chunks:
        problems.append("cached chunk index differs from NVM")

    # allocation: every allocated block is owned, every owned block allocated
    leaked = [b for b in range(nblocks) if fat[b] != FAT_FREE and b not in owner]
    if leaked:
        problems.append(f"{len(leaked)} allocated blocks belong to nothing (first {leaked[0]})")
    if list(store.alloc.fat) != list(fat):
        problems.append("cached FAT differs from NVM")
    used_ram = sum(store.alloc.used)
    if used_ram != len(owner) or store.alloc.free_count != nblocks - len(owner):
        problems.append(f"RAM allocation map counts {used_ram} used blocks, NVM {len(owner)}")

    anchors = nvm.read(store.off_anchors, MAX_ANCHORS * ANCHOR_SIZE)
    ids = [ANCHOR.unpack_from(anchors, i * ANCHOR_SIZE)[1] for i in range(MAX_ANCHORS)
           if anchors[i * ANCHOR_SIZE]]
    if len(ids) != len(set(ids)):
        problems.append("a trust anchor key id is listed twice")

    if problems:
        raise StoreCorrupt("store check failed: " + "; ".join(problems))
