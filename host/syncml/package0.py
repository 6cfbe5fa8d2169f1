"""OMA DM 1.2 Package 0: the binary Notification Initiated Session trigger.

Layout (OMA-TS-DM_Notification-V1_2, all fields big-endian, bit-packed; the same
masks as libdmclient package0.c and libsynthesis san.cpp)::

    digest            128 bits  MD5, see below
    trigger-hdr:
      version          10 bits  protocol version * 10 (1.2 -> 12)
      ui-mode           2 bits  0 not specified, 1 background, 2 informative, 3 user interaction
      initiator         1 bit   0 client (user), 1 server
      future-use       27 bits  zero
      session-id       16 bits  the SessionID the device must use
      length-identifier 8 bits  length of server-identifier
      server-identifier        (UTF-8, the DM server's ServerID)
    trigger-body:      vendor-specific bytes

    digest = H(B64(H(server-identifier:password)):nonce:B64(H(trigger)))

with H = MD5, trigger = trigger-hdr + trigger-body, password and nonce the
server's credentials as the device stores them (DMAcc AAuthData, server nonce).

    data = build_package0(Notification(server_id="simvault", session_id=7), pw, nonce)
    note = verify_package0(data, lambda sid: pw_for(sid), nonce)   # device side
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from host.errors import AuthError, SyncMLError

DIGEST_LEN = 16
# 10*major+minor (libsynthesis san.cpp); the layout has not changed since DM 1.1.2, and some
# DM 1.2 stacks still put 11 there (libdmclient package0.c accepts only 11): accept both
SUPPORTED_VERSIONS = frozenset({11, 12})
_FIXED_HDR_LEN = 8  # 10+2+1+27+16+8 bits
CONTENT_TYPE_PACKAGE0 = "application/vnd.syncml.notification"


class UIMode(IntEnum):
    NOT_SPECIFIED = 0
    BACKGROUND = 1
    INFORMATIVE = 2
    USER_INTERACTION = 3


class Initiator(IntEnum):
    CLIENT = 0
    SERVER = 1


@dataclass(frozen=True)
class Notification:
    server_id: str
    session_id: int
    ui_mode: UIMode = UIMode.BACKGROUND
    initiator: Initiator = Initiator.SERVER
    version: int = 12  # DM 1.2
    vendor_specific: bytes = b""

    def trigger(self) -> bytes:
        """trigger-hdr + trigger-body, the bytes the digest covers."""
        sid = self.server_id.encode("utf-8")
        if not 0 <= self.version < 1 << 10:
            raise SyncMLError(f"Package 0 version {self.version} does not fit 10 bits")
        if not 0 <= self.session_id <= 0xFFFF:
            raise SyncMLError(f"Package 0 session id {self.session_id} does not fit 16 bits")
        if not 1 <= len(sid) <= 255:
            raise SyncMLError("Package 0 server identifier must be 1..255 bytes")
        bits = (self.version << 30) | (int(self.ui_mode) << 28) | (int(self.initiator) << 27)
        return (bits.to_bytes(5, "big") + self.session_id.to_bytes(2, "big") + bytes([len(sid)])
                + sid + self.vendor_specific)


def _md5(raw: bytes) -> bytes:
    return hashlib.md5(raw, usedforsecurity=False).digest()


def package0_digest(server_id: str, password: str, nonce: bytes, trigger: bytes) -> bytes:
    """H(B64(H(server-identifier:password)):nonce:B64(H(trigger)))."""
    secret = base64.b64encode(_md5(f"{server_id}:{password}".encode()))
    return _md5(secret + b":" + nonce + b":" + base64.b64encode(_md5(trigger)))


def build_package0(note: Notification, password: str, nonce: bytes) -> bytes:
    """Server side: the complete Package 0 message (digest + trigger)."""
    trigger = note.trigger()
    return package0_digest(note.server_id, password, nonce, trigger) + trigger


def parse_package0(data: bytes) -> tuple[Notification, bytes]:
    """Split a Package 0 into its Notification and digest, without verifying."""
    if len(data) < DIGEST_LEN + _FIXED_HDR_LEN + 1:
        raise SyncMLError(f"Package 0 of {len(data)} bytes is too short")
    digest, hdr = data[:DIGEST_LEN], data[DIGEST_LEN:]
    bits = int.from_bytes(hdr[:5], "big")
    version, ui_mode, initiator = bits >> 30, (bits >> 28) & 3, (bits >> 27) & 1
    if bits & ((1 << 27) - 1):
        raise SyncMLError("Package 0 future-use bits are not zero")
    if version not in SUPPORTED_VERSIONS:
        raise SyncMLError(f"Package 0 version {version / 10:.1f} is not supported (only 1.1 and 1.2)")
    session_id = int.from_bytes(hdr[5:7], "big")
    sid_len = hdr[7]
    if sid_len == 0 or len(hdr) < _FIXED_HDR_LEN + sid_len:
        raise SyncMLError("Package 0 server identifier length is wrong")
    try:
        server_id = hdr[8:8 + sid_len].decode("utf-8")
    except UnicodeDecodeError:
        raise SyncMLError("Package 0 server identifier is not UTF-8") from None
    note = Notification(server_id=server_id, session_id=session_id, ui_mode=UIMode(ui_mode),
                        initiator=Initiator(initiator), version=version,
                        vendor_specific=bytes(hdr[8 + sid_len:]))
    return note, bytes(digest)


def verify_package0(data: bytes, password_for: Callable[[str], str | None], nonce: bytes) -> Notification:
    """Device side: parse and check the digest in constant time; AuthError if it fails."""
    note, digest = parse_package0(data)
    password = password_for(note.server_id)
    want = package0_digest(note.server_id, password or "", nonce, bytes(data[DIGEST_LEN:]))
    if not hmac.compare_digest(digest, want) or password is None:
        raise AuthError(f"Package 0 from {note.server_id!r} failed digest verification: ignore it "
                        "or resynchronise the server nonce")
    return note
