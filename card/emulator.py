"""The virtual simvault card: NVM image + BackupStore + ISO runtime + applet.

    personalise("card.img", capacity=1 << 20, pin="1234", puk="12345678",
                admin_key=key16, trust_anchors=[point65])
    card = VirtualCard.open("card.img")          # or VirtualCard(nvm)
    atr = card.power_on(); card.transmit(apdu); card.power_off()

It fulfils the virtual card contract of host.link (atr, power_on, power_off,
reset, transmit) and card.vpcd. A power loss (``PowerLoss`` from the NVM,
e.g. by the fault injector) powers the card off: ``transmit`` answers b""
(a mute card) and the next ``power_on`` runs the NVM recovery.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from apdu_specs.constants import BLOCK_SIZE, CHUNK_ENTRIES_MAX, CHUNK_ENTRIES_MIN, CHUNK_ENTRY_BLOCKS
from apdu_specs.manifest import key_id
from card.applet import BackupApplet
from card.nvm import FaultInjector, PersistentMemory, PowerLoss
from card.runtime import CardLimits, CardRuntime
from card.store import BackupStore
from host.errors import SimvaultError, UsageError

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1 << 20
MIN_CAPACITY = 16384        # the smallest NVM a backup store fits in (tables + 16 blocks), rounded up


class VirtualCard:
    """One card: thread-safe (one APDU at a time), persistent in its image."""

    def __init__(self, nvm: PersistentMemory, limits: CardLimits | None = None) -> None:
        self.nvm = nvm
        self.limits = limits or CardLimits()
        self.store = BackupStore(nvm)
        self.applet = BackupApplet(self.store, self.limits)
        self.runtime = CardRuntime(self.applet, self.limits)
        self.powered = False
        self.power_losses = 0
        self.image_lock: ImageLock | None = None
        self._lock = threading.RLock()

    @classmethod
    def open(cls, image: str | os.PathLike[str], limits: CardLimits | None = None,
             exclusive: bool = False) -> VirtualCard:
        """Open an existing image (recovery runs); SimvaultError if it is not a
        card. ``exclusive`` locks the image against other processes (UsageError
        if one holds it) until close()."""
        lock = ImageLock(image) if exclusive else None
        try:
            card = cls(PersistentMemory.open(image), limits)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        card.image_lock = lock
        return card

    def close(self) -> None:
        with self._lock:
            self.power_off()
            self.nvm.close()
            if self.image_lock is not None:
                self.image_lock.release()

    def __enter__(self) -> VirtualCard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- virtual card contract ------------------------------------------------

    @property
    def atr(self) -> bytes:
        return self.runtime.atr

    def power_on(self) -> bytes:
        with self._lock:
            if not self.nvm.powered:
                self.store.power_up()        # journal recovery, caches rebuilt
            self.powered = True
            return self.runtime.power_on()

    def power_off(self) -> None:
        with self._lock:
            self.powered = False
            self.runtime.power_off()

    def reset(self) -> bytes:
        with self._lock:
            self.runtime.power_off()
            return self.power_on()

    def transmit(self, apdu: bytes) -> bytes:
        """The R-APDU; b"" when the card is off or loses power during the APDU."""
        with self._lock:
            if not self.powered:
                return b""
            try:
                return self.runtime.transmit(apdu)
            except PowerLoss:
                self.power_losses += 1
                self.powered = False
                log.info("power lost during APDU %s", bytes(apdu[:4]).hex())
                return b""

    execute = transmit

    # ---- tests ------------------------------------------------------------------

    def arm_fault(self, cut_after: int | None, tear: bool = True, tear_fraction: float = 0.5) -> FaultInjector:
        """Cut power at the ``cut_after``-th NVM write from now (None: only count)."""
        fault = FaultInjector(cut_after=cut_after, tear=tear, tear_fraction=tear_fraction)
        self.nvm.fault = fault
        return fault

    def disarm_fault(self) -> None:
        self.nvm.fault = None


class ImageLock:
    """An exclusive advisory lock (flock) on a card image, so two processes
    (``card serve`` and ``--emulator``) never drive one image at once."""

    def __init__(self, image: str | os.PathLike[str]) -> None:
        import fcntl
        self.path = Path(image)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise UsageError(f"no card image {self.path}: create one with 'simvault card init'") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise UsageError(f"card image {self.path} is in use by another simvault process "
                             "(card serve?): stop it or talk to it through its reader") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def check_chunk_entries(entries: int | None) -> None:
    """UsageError for a chunk table size neither card takes (None: the default)."""
    if entries is not None and not 1 <= entries <= CHUNK_ENTRIES_MAX:
        raise UsageError(f"chunk entries {entries}: 1 to {CHUNK_ENTRIES_MAX} (default one per "
                         f"{BLOCK_SIZE * CHUNK_ENTRY_BLOCKS} bytes of capacity, at least {CHUNK_ENTRIES_MIN})")


def personalise(image_path: str | os.PathLike[str], capacity: int, pin: str, puk: str, admin_key: bytes,
                trust_anchors: Sequence[bytes] = (), *, force: bool = False, admin_key_version: int = 1,
                journal_capacity: int | None = None, chunk_entries: int | None = None) -> None:
    """Create a new personalised card image: blank store, PIN, PUK, admin key
    (16 bytes, AES-128) and trust anchors (uncompressed P-256 points); chunk_entries:
    the chunk table (None: apdu_specs default_chunk_entries(capacity), as the Java card).
    An existing image is refused unless ``force``."""
    path = Path(image_path)
    if capacity < MIN_CAPACITY:
        raise UsageError(f"card capacity {capacity} bytes is too small: at least {MIN_CAPACITY} bytes "
                         f"(default {DEFAULT_CAPACITY})")
    check_chunk_entries(chunk_entries)
    if path.exists():
        if not force:
            raise UsageError(f"{path} already exists: it may hold backups; pass --force to overwrite it")
        path.unlink()
    if len(admin_key) != 16:
        raise UsageError("the admin key is 16 bytes (AES-128)")
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    nvm = PersistentMemory.create(tmp, capacity, journal_capacity)
    try:
        store = BackupStore.format(nvm, max_chunks=chunk_entries)
        store.personalise(pin.encode("ascii"), puk.encode("ascii"), bytes(admin_key), admin_key_version)
        for point in trust_anchors:
            store.add_anchor(key_id(bytes(point)), bytes(point))
        nvm.sync()
    except SimvaultError:
        nvm.close()
        tmp.unlink(missing_ok=True)
        raise
    nvm.close()
    os.replace(tmp, path)      # the image appears complete or not at all
