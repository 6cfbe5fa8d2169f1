"""OMA DM 1.2 credentials computed from a stored secret, not from a password.

Both syncml:auth-md5 and HMAC-MD5 (x-syncml-hmac) only need
``secret = B64(MD5(username ":" password))``; so the DM server keeps that
digest-ready secret per device and never the password itself. The formulas
are those of host.syncml.auth (tests check they agree):

* md5 Cred:   B64(MD5(secret ":" nonce))
* HMAC mac:   B64(MD5(secret ":" nonce ":" B64(MD5(body))))
* Package 0:  MD5(server_secret ":" nonce ":" B64(MD5(trigger)))  (raw 16 bytes)

Nonces are raw bytes here; they travel base64 in Chal NextNonce.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

from host.syncml.auth import HmacHeader, new_nonce, parse_hmac_header  # noqa: F401 - re-exported
from host.syncml.package0 import Notification


def _md5(raw: bytes) -> bytes:
    return hashlib.md5(raw, usedforsecurity=False).digest()


def secret_of(username: str, password: str) -> str:
    """The stored form of a credential: B64(MD5(username:password))."""
    return base64.b64encode(_md5(f"{username}:{password}".encode("utf-8"))).decode("ascii")


def md5_from_secret(secret: str, nonce: bytes) -> str:
    return base64.b64encode(_md5(secret.encode("ascii") + b":" + nonce)).decode("ascii")


def hmac_from_secret(secret: str, nonce: bytes, body: bytes) -> str:
    inner = base64.b64encode(_md5(body))
    return base64.b64encode(_md5(secret.encode("ascii") + b":" + nonce + b":" + inner)).decode("ascii")


def hmac_header_from_secret(username: str, secret: str, nonce: bytes, body: bytes) -> str:
    return HmacHeader(username=username, mac=hmac_from_secret(secret, nonce, body)).format()


def equal(a: str, b: str) -> bool:
    """Constant-time comparison of two credential strings."""
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


def package0_from_secret(note: Notification, server_secret: str, nonce: bytes) -> bytes:
    """The complete Package 0 (digest + trigger), from B64(MD5(server_id:password))."""
    trigger = note.trigger()
    digest = _md5(server_secret.encode("ascii") + b":" + nonce + b":" + base64.b64encode(_md5(trigger)))
    return digest + trigger


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def fresh_nonce() -> bytes:
    return new_nonce()
