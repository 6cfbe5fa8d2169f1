"""Credentials of the backup store: life cycle, PIN, PUK, admin key, trust anchors.

A mixin of BackupStore (card/store.py), split out to keep modules short.  The
retry counters follow real cards' anti-tearing order: ``_try_secret``
decrements the counter with one non-journaled NVM write BEFORE comparing and
restores it after a match, so a power cut during VERIFY never gains a try.
Secrets are stored as salt(16) || SHA-256(salt || value) in the config area.
"""
from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from contextlib import AbstractContextManager

from card.nvm import PersistentMemory
from card.store_layout import (
    ADMIN,
    ADMIN_KEY_LEN,
    ADMIN_MAX_FAILURES,
    ANCHOR,
    ANCHOR_SIZE,
    CFG_ADMIN,
    CFG_ADMIN_FAILURES,
    CFG_LIFECYCLE,
    CFG_PIN,
    CFG_PIN_TRIES,
    CFG_PUK,
    CFG_PUK_TRIES,
    KEY_ID_LEN,
    MAX_ANCHORS,
    PIN_MAX_LEN,
    PIN_MAX_TRIES,
    PIN_MIN_LEN,
    PUBKEY_LEN,
    PUK_LEN,
    PUK_MAX_TRIES,
    SECRET,
    AlreadyPersonalised,
    AnchorNotFound,
    InvalidArgument,
    LifeCycle,
    NotPersonalised,
    PukBlocked,
    StoreError,
    StoreFull,
    TrustAnchor,
    secret_hash,
)


def _need(value: bytes, length: int, what: str) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != length:
        raise InvalidArgument(f"{what} must be {length} bytes")


def _digits(value: bytes, lo: int, hi: int, what: str) -> None:
    if not isinstance(value, (bytes, bytearray)) or not lo <= len(value) <= hi \
            or not bytes(value).isdigit():
        raise InvalidArgument(f"{what} must be {lo}-{hi} ASCII digits")


class CredentialsMixin:
    nvm: PersistentMemory
    off_config: int
    off_anchors: int
    _lifecycle: LifeCycle
    _mutation: Callable[[], AbstractContextManager[None]]
    _alive: Callable[[], None]

    def _cfg_write(self, offset: int, data: bytes) -> None:
        self.nvm.write(self.off_config + offset, data)

    # ---- life cycle, PIN, PUK, admin key -----------------------------------

    @property
    def lifecycle(self) -> LifeCycle:
        self._alive()
        return self._lifecycle

    def personalise(self, pin: bytes, puk: bytes, admin_key: bytes, key_version: int = 1) -> None:
        """BLANK -> PERSONALISED: set PIN, PUK, admin key, full retry counters."""
        if self.lifecycle != LifeCycle.BLANK:
            raise AlreadyPersonalised("the applet is already personalised: factory-reset it first")
        _digits(pin, PIN_MIN_LEN, PIN_MAX_LEN, "PIN")
        _digits(puk, PUK_LEN, PUK_LEN, "PUK")
        _need(admin_key, ADMIN_KEY_LEN, "admin key")
        with self._mutation():
            self._write_secret(CFG_PIN, pin)
            self._write_secret(CFG_PUK, puk)
            self._cfg_write(CFG_ADMIN, ADMIN.pack(key_version & 0xFF, bytes(admin_key)))
            self._cfg_write(CFG_PIN_TRIES, bytes([PIN_MAX_TRIES, PUK_MAX_TRIES]))
            self._cfg_write(CFG_LIFECYCLE, bytes([LifeCycle.PERSONALISED]))
        self._lifecycle = LifeCycle.PERSONALISED

    def _write_secret(self, at: int, value: bytes) -> None:
        salt = os.urandom(16)
        self._cfg_write(at, SECRET.pack(salt, secret_hash(salt, bytes(value))))

    def _matches(self, at: int, candidate: bytes) -> bool:
        salt, digest = SECRET.unpack(self.nvm.read(self.off_config + at, SECRET.size))
        return hmac.compare_digest(secret_hash(salt, bytes(candidate)), digest)

    def _personalised(self) -> None:
        if self.lifecycle != LifeCycle.PERSONALISED:
            raise NotPersonalised("the applet is not personalised: personalise it first")

    def pin_tries_left(self) -> int:
        return self.nvm.read(self.off_config + CFG_PIN_TRIES, 1)[0]

    def puk_tries_left(self) -> int:
        return self.nvm.read(self.off_config + CFG_PUK_TRIES, 1)[0]

    def _try_secret(self, tries_at: int, secret_at: int, max_tries: int,
                    candidate: bytes) -> tuple[bool, int]:
        """Decrement persistently, compare, restore on a match (anti-tearing)."""
        if self.nvm.in_transaction:
            raise StoreError("retry counters cannot be used inside a transaction")
        tries = self.nvm.read(self.off_config + tries_at, 1)[0]
        if tries == 0:
            return False, 0
        self.nvm.write_nonatomic(self.off_config + tries_at, bytes([tries - 1]))
        if self._matches(secret_at, candidate):
            self.nvm.write_nonatomic(self.off_config + tries_at, bytes([max_tries]))
            return True, max_tries
        return False, tries - 1

    def verify_pin(self, candidate: bytes) -> tuple[bool, int]:
        """(matched, tries left).  A blocked PIN returns (False, 0) without a compare."""
        self._personalised()
        _digits(candidate, PIN_MIN_LEN, PIN_MAX_LEN, "PIN")
        return self._try_secret(CFG_PIN_TRIES, CFG_PIN, PIN_MAX_TRIES, candidate)

    def change_pin(self, old: bytes, new: bytes) -> tuple[bool, int]:
        """Verify ``old`` (counting a try), then set ``new``: (matched, tries left)."""
        _digits(new, PIN_MIN_LEN, PIN_MAX_LEN, "new PIN")
        ok, left = self.verify_pin(old)
        if ok:
            with self._mutation():
                self._write_secret(CFG_PIN, new)
        return ok, left

    def unblock_pin(self, puk: bytes, new_pin: bytes) -> tuple[bool, int]:
        """Check the PUK (counting a PUK try); on a match set ``new_pin`` and
        reset the PIN counter.  Returns (matched, PUK tries left); a PUK with
        no tries left raises PukBlocked."""
        self._personalised()
        _digits(puk, PUK_LEN, PUK_LEN, "PUK")
        _digits(new_pin, PIN_MIN_LEN, PIN_MAX_LEN, "new PIN")
        if self.puk_tries_left() == 0:
            raise PukBlocked("the PUK is blocked: the card must be factory-reset")
        ok, left = self._try_secret(CFG_PUK_TRIES, CFG_PUK, PUK_MAX_TRIES, puk)
        if ok:
            with self._mutation():
                self._write_secret(CFG_PIN, new_pin)
                self._cfg_write(CFG_PIN_TRIES, bytes([PIN_MAX_TRIES]))
        return ok, left

    def set_pin(self, new_pin: bytes) -> None:
        """Administrative PIN reset (after secure-channel authentication)."""
        self._personalised()
        _digits(new_pin, PIN_MIN_LEN, PIN_MAX_LEN, "PIN")
        with self._mutation():
            self._write_secret(CFG_PIN, new_pin)
            self._cfg_write(CFG_PIN_TRIES, bytes([PIN_MAX_TRIES]))

    def set_puk(self, new_puk: bytes) -> None:
        """Administrative PUK change; resets the PUK counter."""
        self._personalised()
        _digits(new_puk, PUK_LEN, PUK_LEN, "PUK")
        with self._mutation():
            self._write_secret(CFG_PUK, new_puk)
            self._cfg_write(CFG_PUK_TRIES, bytes([PUK_MAX_TRIES]))

    def admin_key(self) -> tuple[int, bytes]:
        """(key version, 16-byte static key) of the secure channel."""
        version, key = ADMIN.unpack(self.nvm.read(self.off_config + CFG_ADMIN, ADMIN.size))
        return version, key

    def admin_tries_left(self) -> int:
        """Admin authentications left before the admin key locks for good (0: locked)."""
        return max(0, ADMIN_MAX_FAILURES - self.nvm.read(self.off_config + CFG_ADMIN_FAILURES, 1)[0])

    def try_admin(self, matches: Callable[[], bool]) -> tuple[bool, int]:
        """Count one admin authentication persistently BEFORE ``matches()``
        compares the host's proof, clear the count after a match (the PIN's
        anti-tearing order). (matched, tries left); a locked key never calls
        ``matches``."""
        if self.nvm.in_transaction:
            raise StoreError("retry counters cannot be used inside a transaction")
        at = self.off_config + CFG_ADMIN_FAILURES
        failures = self.nvm.read(at, 1)[0]
        if failures >= ADMIN_MAX_FAILURES:
            return False, 0
        self.nvm.write_nonatomic(at, bytes([failures + 1]))
        if matches():
            self.nvm.write_nonatomic(at, b"\0")
            return True, ADMIN_MAX_FAILURES
        return False, ADMIN_MAX_FAILURES - failures - 1

    def set_admin_key(self, key: bytes, version: int) -> None:
        _need(key, ADMIN_KEY_LEN, "admin key")
        with self._mutation():
            self._cfg_write(CFG_ADMIN, ADMIN.pack(version & 0xFF, bytes(key)))

    # ---- trust anchors ------------------------------------------------------

    def _anchor_table(self) -> list[tuple[int, bytes, bytes]]:
        raw = self.nvm.read(self.off_anchors, MAX_ANCHORS * ANCHOR_SIZE)
        return [ANCHOR.unpack_from(raw, i * ANCHOR_SIZE) for i in range(MAX_ANCHORS)]

    def list_anchors(self) -> list[TrustAnchor]:
        return [TrustAnchor(k, p) for used, k, p in self._anchor_table() if used]

    def get_anchor(self, key_id: bytes) -> bytes | None:
        for used, k, p in self._anchor_table():
            if used and k == key_id:
                return p
        return None

    def add_anchor(self, key_id: bytes, public_key: bytes) -> None:
        """Add, or replace the key of an existing key id.  StoreFull past 8."""
        _need(key_id, KEY_ID_LEN, "key id")
        _need(public_key, PUBKEY_LEN, "public key")
        if public_key[0] != 0x04:
            raise InvalidArgument("public key must be an uncompressed P-256 point (04||X||Y)")
        table = self._anchor_table()
        slot = next((i for i, (u, k, _) in enumerate(table) if u and k == key_id), None)
        if slot is None:
            slot = next((i for i, (u, _, _) in enumerate(table) if not u), None)
        if slot is None:
            raise StoreFull(f"all {MAX_ANCHORS} trust anchor slots are used: remove one first")
        with self._mutation():
            self.nvm.write(self.off_anchors + slot * ANCHOR_SIZE, ANCHOR.pack(1, key_id, public_key))

    def remove_anchor(self, key_id: bytes) -> None:
        for i, (used, k, _) in enumerate(self._anchor_table()):
            if used and k == key_id:
                with self._mutation():
                    self.nvm.write(self.off_anchors + i * ANCHOR_SIZE, bytes(ANCHOR_SIZE))
                return
        raise AnchorNotFound(f"no trust anchor with key id {key_id.hex()}")
