"""Block allocator of the backup store: fixed-size blocks chained by a FAT.

The block area of the store is an array of ``nblocks`` blocks of ``block_size``
bytes.  A persistent File Allocation Table holds one little-endian u32 per
block: 0 = free, 0xFFFFFFFF = last block of its chain, n = next block is n-1.
A variable-length object (a chunk, a manifest, a chunk-id list) is a chain
identified by its head block (NO_BLOCK for an empty object).

Protocol that keeps the store consistent across a power cut:

1. ``alloc(k)`` reserves free blocks in RAM only;
2. ``write_data`` fills them with ``write_nonatomic`` (one NVM write per block)
   -- nothing persistent points at them yet, so a cut leaves them free;
3. inside the store's transaction ``link`` writes their FAT entries (journaled)
   and the owner record is written; only the commit makes them allocated.

``free_chain`` zeroes FAT entries inside the transaction, but the blocks stay
reserved in RAM until ``release_deferred`` after the commit: a block freed by
an open transaction must not be reused by a non-journaled write, or an abort
would resurrect a chain with foreign bytes in it.
"""
from __future__ import annotations

from array import array

from card.nvm import JREC_OVERHEAD, PersistentMemory

FAT_FREE = 0
FAT_END = 0xFFFFFFFF
NO_BLOCK = 0xFFFFFFFF


class AllocatorFull(Exception):
    """Not enough free blocks (the store turns it into StoreFull)."""


class BlockAllocator:
    def __init__(self, nvm: PersistentMemory, fat_off: int, blocks_off: int,
                 block_size: int, nblocks: int) -> None:
        self.nvm = nvm
        self.fat_off, self.blocks_off = fat_off, blocks_off
        self.block_size, self.nblocks = block_size, nblocks
        self.fat = array("I")
        self.used = bytearray()
        self.free_count = 0
        self._cursor = 0
        self._deferred: list[int] = []
        self._chains: dict[int, list[int]] = {}

    # ---- RAM mirror ---------------------------------------------------------

    def load(self) -> None:
        """Rebuild the RAM mirror from the FAT in NVM (open, power_up, abort)."""
        fat = array("I")
        fat.frombytes(self.nvm.read(self.fat_off, 4 * self.nblocks))
        if fat.itemsize != 4:
            raise RuntimeError("this platform has no 4-byte array('I')")
        self.fat = fat
        self.used = bytearray(b != FAT_FREE for b in fat)
        self.free_count = self.nblocks - sum(self.used)
        self._cursor = 0
        self._deferred = []
        self._chains = {}

    @staticmethod
    def blocks_for(length: int, block_size: int) -> int:
        return -(-length // block_size)

    @staticmethod
    def fat_journal_cost(blocks: list[int]) -> int:
        """Upper bound of the journal bytes that freeing (or linking) these
        blocks takes: one record per run of consecutive FAT entries."""
        cost, prev = 0, None
        for b in sorted(blocks):
            cost += 4 if prev is not None and b == prev + 1 else JREC_OVERHEAD + 4
            prev = b
        return cost

    def alloc(self, k: int) -> list[int]:
        """Reserve k free blocks (RAM only), preferring consecutive ones."""
        if k > self.free_count:
            raise AllocatorFull(f"{k} blocks needed, {self.free_count} free")
        out: list[int] = []
        pos = self._cursor
        while len(out) < k:
            i = self.used.find(0, pos)
            if i < 0:
                i = self.used.find(0)
            self.used[i] = 1
            out.append(i)
            pos = i + 1
        self.free_count -= k
        self._cursor = pos if pos < self.nblocks else 0
        return out

    def unreserve(self, blocks: list[int]) -> None:
        for b in blocks:
            self.used[b] = 0
        self.free_count += len(blocks)

    def release_deferred(self) -> None:
        """After a commit: blocks freed by the transaction become allocatable."""
        self.unreserve(self._deferred)
        self._deferred = []

    # ---- chains -------------------------------------------------------------

    def chain(self, head: int) -> list[int]:
        """Blocks of the chain starting at head (from the RAM FAT, cached)."""
        if head == NO_BLOCK:
            return []
        blocks = self._chains.get(head)
        if blocks is None:
            blocks, b = [], head
            while True:
                blocks.append(b)
                nxt = self.fat[b]
                if nxt == FAT_END:
                    break
                if nxt == FAT_FREE or len(blocks) > self.nblocks:
                    raise RuntimeError(f"broken block chain at block {b}")
                b = nxt - 1
            self._chains[head] = blocks
        return blocks

    def link(self, blocks: list[int], after: int | None = None) -> None:
        """Journaled FAT writes making ``blocks`` one chain (appended after
        block ``after`` when given).  Consecutive entries go in one write."""
        if not blocks:
            return
        entries = {b: (blocks[i + 1] + 1 if i + 1 < len(blocks) else FAT_END)
                   for i, b in enumerate(blocks)}
        if after is not None:
            entries[after] = blocks[0] + 1
        self._write_entries(entries)

    def free_chain(self, head: int) -> None:
        """Journaled FAT writes freeing the chain; RAM release deferred."""
        blocks = self.chain(head)
        self._write_entries({b: FAT_FREE for b in blocks})
        self._deferred.extend(blocks)

    def _write_entries(self, entries: dict[int, int]) -> None:
        keys = sorted(entries)
        start = 0
        while start < len(keys):
            end = start + 1
            while end < len(keys) and keys[end] == keys[end - 1] + 1:
                end += 1
            run = array("I", (entries[k] for k in keys[start:end]))
            self.nvm.write(self.fat_off + 4 * keys[start], run.tobytes())
            for k in keys[start:end]:
                self.fat[k] = entries[k]
            start = end
        self._chains.clear()

    # ---- data ---------------------------------------------------------------

    def write_data(self, blocks: list[int], offset: int, data: bytes) -> None:
        """Non-journaled writes of data at byte ``offset`` of the object whose
        blocks are ``blocks``: one NVM write per block touched."""
        bs, pos, view = self.block_size, offset, memoryview(data)
        while view:
            idx, within = divmod(pos, bs)
            n = min(bs - within, len(view))
            self.nvm.write_nonatomic(self.blocks_off + blocks[idx] * bs + within, bytes(view[:n]))
            view, pos = view[n:], pos + n

    def read_data(self, head: int, offset: int, length: int) -> bytes:
        """``length`` bytes at byte ``offset`` of the object; one read per run
        of physically consecutive blocks."""
        blocks = self.chain(head)
        bs, out, pos, end = self.block_size, [], offset, offset + length
        while pos < end:
            idx, within = divmod(pos, bs)
            last = idx
            while last + 1 < len(blocks) and blocks[last + 1] == blocks[last] + 1 \
                    and (last + 1) * bs < end:
                last += 1
            n = min((last + 1) * bs, end) - pos
            out.append(self.nvm.read(self.blocks_off + blocks[idx] * bs + within, n))
            pos += n
        return b"".join(out)

    def read_blocks(self, blocks: list[int]) -> bytes:
        """Whole blocks, coalescing consecutive ones into one read."""
        out, i, bs = [], 0, self.block_size
        while i < len(blocks):
            j = i + 1
            while j < len(blocks) and blocks[j] == blocks[j - 1] + 1:
                j += 1
            out.append(self.nvm.read(self.blocks_off + blocks[i] * bs, (j - i) * bs))
            i = j
        return b"".join(out)
