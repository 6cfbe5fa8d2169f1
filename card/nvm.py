"""A card's persistent memory (EEPROM/flash): one image file, transactions, tearing.

``PersistentMemory`` models the NVM of a smart card:

* a fixed-size *data region* addressed by offset (``read``/``write``);
* every ``write`` (and ``write_nonatomic``) is ONE physical NVM write, sent
  straight to the image file at its offset with ``os.pwrite`` (no whole-image
  rewrite), so a kill -9 loses at most the write in flight;
* transactions like Java Card's ``JCSystem.beginTransaction``: all writes made
  with ``write`` between ``begin()`` and ``commit()`` are all-or-nothing across
  a power loss.  The journal is an UNDO log in its own region of the image:
  before a logged write, the old bytes are appended to the journal (one NVM
  write), then the data is written in place (a second NVM write).  Reads
  therefore see the transaction's writes.  ``commit()`` invalidates the log with
  one small header write; ``abort()`` and recovery copy the old bytes back;
* ``write_nonatomic`` bypasses the journal even inside a transaction (like
  ``Util.arrayCopyNonAtomic``): for bytes no committed state refers to yet
  (freshly allocated blocks) and for retry counters that must never roll back;
* a ``FaultInjector`` cuts power at the Nth physical write (journal writes
  count), optionally tearing it (only a prefix reaches the image); then every
  access raises ``PowerLoss`` until ``power_up()``, which runs recovery.

The binary layout of the image is in card/IMAGE_FORMAT.md.
"""
from __future__ import annotations

import bisect
import fcntl
import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from card.nvm_faults import (  # noqa: F401 - part of this module's API
    FaultInjector,
    ImageBusy,
    ImageFormatError,
    JournalFull,
    NvmError,
    NvmRangeError,
    PowerLoss,
    TransactionError,
)

MAGIC = b"SVNVM"
VERSION = 1
HEADER_SIZE = 4096                     # the image header occupies one page
_HEADER = struct.Struct("<5sBHQQQQ")   # magic, version, header_size, capacity, journal off/size, data off
_HEADER_TAG = 8                        # blake2b-64 of the packed header follows it

JOURNAL_HEAD_SIZE = 64                 # two 32-byte header slots (A/B)
_JSLOT = struct.Struct("<4sQ8s")       # b"SVJH", epoch, nonce; + 8-byte tag = 28 bytes
_JSLOT_SIZE = 32
_JREC = struct.Struct("<QQI")          # epoch, offset, length; + 8-byte keyed tag, then old bytes
JREC_OVERHEAD = _JREC.size + 8         # 28 bytes per record besides the old bytes
MIN_JOURNAL = 4096


def default_journal_capacity(capacity: int) -> int:
    """Journal size chosen by create() when none is given: 64 KiB or 1/16 of the data."""
    size = max(64 * 1024, capacity // 16)
    return (size + 4095) // 4096 * 4096


@dataclass
class _Backing:
    """Where the image bytes live: a file descriptor, or a bytearray (tests)."""

    fd: int | None = None
    buf: bytearray | None = None

    def pread(self, offset: int, length: int) -> bytes:
        if self.buf is not None:
            return bytes(self.buf[offset:offset + length])
        assert self.fd is not None
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise ImageFormatError("NVM image is truncated: restore it from a copy or create a new one")
        return data

    def pwrite(self, offset: int, data: bytes) -> None:
        if self.buf is not None:
            self.buf[offset:offset + len(data)] = data
            return
        assert self.fd is not None
        view = memoryview(data)
        while view:
            done = os.pwrite(self.fd, view, offset)
            view, offset = view[done:], offset + done


@dataclass
class _Txn:
    """RAM state of the open transaction (lost at power loss, by design)."""

    tail: int = JOURNAL_HEAD_SIZE                              # next record position
    logged: list[tuple[int, int]] = field(default_factory=list)  # sorted disjoint [start, end)
    records: int = 0

    def covered(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.logged, (start, float("inf"))) - 1
        return i >= 0 and self.logged[i][0] <= start and self.logged[i][1] >= end

    def add(self, start: int, end: int) -> None:
        """Insert [start, end), merging overlapping or touching intervals."""
        lo = bisect.bisect_left(self.logged, (start, -1))
        if lo > 0 and self.logged[lo - 1][1] >= start:
            lo -= 1
        hi = lo
        while hi < len(self.logged) and self.logged[hi][0] <= end:
            start, end = min(start, self.logged[hi][0]), max(end, self.logged[hi][1])
            hi += 1
        self.logged[lo:hi] = [(start, end)]


class PersistentMemory:
    """The NVM of the virtual card.  See the module docstring."""

    def __init__(self, backing: _Backing, path: str | None) -> None:
        self._io = backing
        self.path = path
        header = self._io.pread(0, _HEADER.size + _HEADER_TAG)
        magic, version, header_size, capacity, j_off, j_size, d_off = _HEADER.unpack_from(header)
        if magic != MAGIC:
            raise ImageFormatError(f"{path or 'memory'} is not a simvault NVM image (bad magic)")
        if version != VERSION:
            raise ImageFormatError(f"NVM image version {version} is not supported (this build reads {VERSION})")
        if header[_HEADER.size:] != _tag(header[:_HEADER.size]):
            raise ImageFormatError("NVM image header is damaged: restore the image from a copy")
        if backing.fd is not None and os.fstat(backing.fd).st_size < d_off + capacity:
            raise ImageFormatError(f"NVM image {path} is truncated: restore it from a copy")
        self.capacity: int = capacity
        self.journal_capacity: int = j_size - JOURNAL_HEAD_SIZE
        self._j_off, self._j_size, self._d_off = j_off, j_size, d_off
        self.fault: FaultInjector | None = None
        self.write_count = 0          # physical writes since this object was made
        self.bytes_written = 0        # bytes of those writes (journal included)
        self.powered = True
        self.power_cycles = 0         # power_up() calls: lets caches notice a reset
        self._txn: _Txn | None = None
        self._epoch = 0
        self._nonce = b""
        self._recover()

    # ---- construction -------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str] | None, capacity: int,
               journal_capacity: int | None = None) -> PersistentMemory:
        """Make a blank image of ``capacity`` data bytes (zeros).  ``path=None``
        keeps it in RAM.  An existing file is refused (never overwrite a card)."""
        if capacity <= 0:
            raise NvmError("NVM capacity must be positive")
        journal = journal_capacity if journal_capacity is not None else default_journal_capacity(capacity)
        if journal < MIN_JOURNAL:
            raise NvmError(f"journal capacity must be at least {MIN_JOURNAL} bytes")
        j_size = JOURNAL_HEAD_SIZE + journal
        d_off = HEADER_SIZE + (j_size + 4095) // 4096 * 4096
        header = _HEADER.pack(MAGIC, VERSION, HEADER_SIZE, capacity, HEADER_SIZE, j_size, d_off)
        header += _tag(header)
        total = d_off + capacity
        if path is None:
            buf = bytearray(total)
            buf[0:len(header)] = header
            backing = _Backing(buf=buf)
        else:
            fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.ftruncate(fd, total)           # sparse zeros
            os.pwrite(fd, header, 0)
            backing = _Backing(fd=fd)
        backing.pwrite(HEADER_SIZE, _slot(0, os.urandom(8)))
        backing.pwrite(HEADER_SIZE + _JSLOT_SIZE, _slot(1, os.urandom(8)))
        return cls(backing, None if path is None else os.fspath(path))

    @classmethod
    def open(cls, path: str | os.PathLike[str], exclusive: bool = False) -> PersistentMemory:
        """Open an existing image and run journal recovery.  ``exclusive`` takes
        an advisory lock (flock) so a second emulator on the same image fails
        with ImageBusy instead of corrupting it; the OS drops the lock when the
        process dies, even by kill -9."""
        try:
            fd = os.open(os.fspath(path), os.O_RDWR)
        except FileNotFoundError:
            raise ImageFormatError(f"NVM image {path} does not exist: create it first") from None
        try:
            if exclusive:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ImageBusy(f"NVM image {path} is in use by another emulator: stop it first") from None
            return cls(_Backing(fd=fd), os.fspath(path))
        except BaseException:
            os.close(fd)
            raise

    def reopen(self) -> PersistentMemory:
        """A new object on the same image, as after a process restart (RAM state
        lost, recovery runs).  For a file this opens the file again."""
        if self._io.buf is not None:
            return PersistentMemory(_Backing(buf=self._io.buf), None)
        assert self.path is not None
        return PersistentMemory.open(self.path)

    def image_bytes(self) -> bytes:
        """A copy of the whole image (header, journal, data) -- for tests."""
        self._require_power()
        return self._io.pread(0, self._d_off + self.capacity)

    @classmethod
    def from_image(cls, image: bytes) -> PersistentMemory:
        """An in-memory NVM on a copy of ``image`` (as if that card were
        powered up: recovery runs)."""
        return cls(_Backing(buf=bytearray(image)), None)

    def close(self) -> None:
        if self._io.fd is not None:
            os.close(self._io.fd)
            self._io.fd = None

    def __enter__(self) -> PersistentMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self) -> None:
        """fsync the image (only needed against an OS crash, not a process kill)."""
        if self._io.fd is not None:
            os.fsync(self._io.fd)

    # ---- power --------------------------------------------------------------

    def power_up(self) -> None:
        """Restore power after a PowerLoss and run recovery (rolls back any
        transaction that did not commit).  Harmless when already powered."""
        self.powered = True
        self.power_cycles += 1
        self._txn = None
        self._recover()

    # ---- data access --------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return self._io.pread(self._d_off + offset, length)

    def write(self, offset: int, data: bytes) -> None:
        """One NVM write.  Inside a transaction it is journaled (an extra
        journal write, skipped when this range was already journaled)."""
        self._check(offset, len(data))
        txn = self._txn
        if txn is not None and data and not txn.covered(offset, offset + len(data)):
            need = JREC_OVERHEAD + len(data)
            if txn.tail + need > self._j_size:
                raise JournalFull(
                    f"transaction needs more than the {self.journal_capacity}-byte journal: "
                    "do less in one command or create the image with a larger journal")
            old = self._io.pread(self._d_off + offset, len(data))
            head = _JREC.pack(self._epoch, offset, len(data))
            record = head + self._rec_tag(txn.tail, head, old) + old
            self._phys_write(self._j_off + txn.tail, record)
            txn.tail += need
            txn.records += 1
            txn.add(offset, offset + len(data))
        self._phys_write(self._d_off + offset, data)

    def write_nonatomic(self, offset: int, data: bytes) -> None:
        """One NVM write that is never journaled, even inside a transaction."""
        self._check(offset, len(data))
        self._phys_write(self._d_off + offset, data)

    # ---- transactions -------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    def begin(self) -> None:
        self._require_power()
        if self._txn is not None:
            raise TransactionError("a transaction is already open (no nesting)")
        self._txn = _Txn()

    def commit(self) -> None:
        self._require_power()
        txn = self._txn
        if txn is None:
            raise TransactionError("commit without an open transaction")
        if txn.records:
            self._advance_epoch()      # the commit point: one small header write
        self._txn = None

    def abort(self) -> None:
        self._require_power()
        txn = self._txn
        if txn is None:
            raise TransactionError("abort without an open transaction")
        self._txn = None
        if txn.records:
            self._rollback()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``with nvm.transaction():`` commits on success, aborts on an
        exception, and leaves everything to recovery on PowerLoss."""
        self.begin()
        try:
            yield
        except PowerLoss:
            self._txn = None
            raise
        except BaseException:
            if self.powered:
                self.abort()
            raise
        self.commit()

    @property
    def journal_used(self) -> int:
        """Journal bytes used by the open transaction (0 outside one)."""
        return 0 if self._txn is None else self._txn.tail - JOURNAL_HEAD_SIZE

    # ---- internals ----------------------------------------------------------

    def _require_power(self) -> None:
        if not self.powered:
            raise PowerLoss("the card is powered off: call power_up()")

    def _check(self, offset: int, length: int) -> None:
        self._require_power()
        if offset < 0 or length < 0 or offset + length > self.capacity:
            raise NvmRangeError(f"NVM access [{offset}, +{length}) outside the {self.capacity}-byte data region")

    def _phys_write(self, pos: int, data: bytes) -> None:
        """The single place where bytes reach the image: counts and faults."""
        self._require_power()
        self.write_count += 1
        reach = self.fault.on_write(len(data)) if self.fault is not None else None
        if reach is not None:
            if reach:
                self._io.pwrite(pos, data[:reach])
                self.bytes_written += reach
            self.powered = False
            self._txn = None
            raise PowerLoss(f"power cut at NVM write {self.fault.writes if self.fault else '?'}")
        self._io.pwrite(pos, data)
        self.bytes_written += len(data)

    def _rec_tag(self, pos: int, head: bytes, old: bytes) -> bytes:
        h = hashlib.blake2b(digest_size=8, key=self._nonce)
        h.update(pos.to_bytes(8, "little"))
        h.update(head)
        h.update(old)
        return h.digest()

    def _read_slots(self) -> tuple[int, bytes]:
        best: tuple[int, bytes] | None = None
        for i in range(2):
            raw = self._io.pread(self._j_off + i * _JSLOT_SIZE, _JSLOT_SIZE)
            magic, epoch, nonce = _JSLOT.unpack_from(raw)
            if magic == b"SVJH" and raw[_JSLOT.size:_JSLOT.size + 8] == _tag(raw[:_JSLOT.size]):
                if best is None or epoch > best[0]:
                    best = (epoch, nonce)
        if best is None:
            raise ImageFormatError("NVM journal header is damaged: restore the image from a copy")
        return best

    def _advance_epoch(self) -> None:
        epoch, nonce = self._epoch + 1, os.urandom(8)
        self._phys_write(self._j_off + (epoch % 2) * _JSLOT_SIZE, _slot(epoch, nonce))
        self._epoch, self._nonce = epoch, nonce

    def _journal_records(self) -> list[tuple[int, bytes]]:
        """Valid records of the current epoch, in order: (offset, old bytes)."""
        out: list[tuple[int, bytes]] = []
        pos = JOURNAL_HEAD_SIZE
        while pos + JREC_OVERHEAD <= self._j_size:
            head = self._io.pread(self._j_off + pos, JREC_OVERHEAD)
            epoch, offset, length = _JREC.unpack_from(head)
            if epoch != self._epoch or pos + JREC_OVERHEAD + length > self._j_size \
                    or offset + length > self.capacity:
                break
            old = self._io.pread(self._j_off + pos + JREC_OVERHEAD, length)
            if head[_JREC.size:] != self._rec_tag(pos, head[:_JREC.size], old):
                break
            out.append((offset, old))
            pos += JREC_OVERHEAD + length
        return out

    def _rollback(self) -> None:
        """Copy old bytes back, newest record first, then invalidate the log.
        Idempotent: a power cut here just makes the next recovery redo it."""
        for offset, old in reversed(self._journal_records()):
            self._phys_write(self._d_off + offset, old)
        self._advance_epoch()

    def _recover(self) -> None:
        self._epoch, self._nonce = self._read_slots()
        if self._journal_records():
            self._rollback()


def _tag(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def _slot(epoch: int, nonce: bytes) -> bytes:
    raw = _JSLOT.pack(b"SVJH", epoch, nonce)
    return raw + _tag(raw)      # 28 bytes, the tag last: any torn prefix is invalid
