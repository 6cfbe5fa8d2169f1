"""SyncML authentication: syncml:auth-basic, syncml:auth-md5 and the OMA DM
HMAC-MD5 transport header (x-syncml-hmac), both sides.

Formulas (OMA DM 1.2 Security / OMA DS 1.2), H = MD5, B64 = base64:

* basic:  Cred Data = B64(user ":" password)
* md5:    Cred Data = B64(H(B64(H(user ":" password)) ":" nonce))
* HMAC:   mac = B64(H(B64(H(user ":" password)) ":" nonce ":" B64(H(body))))
  sent as ``x-syncml-hmac: algorithm=MD5, username="user", mac=<mac>``

Nonces are bytes; on the wire (Chal Meta NextNonce, Format b64) they travel
base64-encoded and are decoded before use. Fresh nonces are 16 random bytes.

Server side::

    verifier = CredentialVerifier(lookup=lambda user: passwords.get(user))
    result = verifier.verify(msg.header.cred, username=msg.header.source.loc_name,
                             nonce=session.server_nonce)
    # result.status is 212, 401 or 407; send result.chal in the SyncHdr Status;
    # store result.next_nonce for the next message.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from host.errors import AuthError
from host.syncml.model import Chal, Cred, Meta
from host.syncml.status import StatusCode

AUTH_BASIC = "syncml:auth-basic"
AUTH_MD5 = "syncml:auth-md5"
AUTH_MAC = "syncml:auth-MAC"
HMAC_HEADER = "x-syncml-hmac"
NONCE_BYTES = 16


def new_nonce() -> bytes:
    """A fresh random nonce (16 bytes from os.urandom)."""
    return os.urandom(NONCE_BYTES)


def _b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def _md5(raw: bytes) -> bytes:
    return hashlib.md5(raw, usedforsecurity=False).digest()


def auth_secret(username: str, password: str) -> bytes:
    """B64(H(username:password)): the shared secret of md5 and HMAC. A server may
    store this instead of the password and use the ``*_from_secret`` functions."""
    return _b64(_md5(f"{username}:{password}".encode()))


def md5_digest_from_secret(secret: bytes, nonce: bytes) -> str:
    return _b64(_md5(secret + b":" + nonce)).decode("ascii")


def hmac_mac_from_secret(secret: bytes, nonce: bytes, body: bytes) -> str:
    return _b64(_md5(secret + b":" + nonce + b":" + _b64(_md5(body)))).decode("ascii")


def md5_digest(username: str, password: str, nonce: bytes) -> str:
    """syncml:auth-md5 credential: B64(H(B64(H(user:pass)):nonce))."""
    return md5_digest_from_secret(auth_secret(username, password), nonce)


def hmac_mac(username: str, password: str, nonce: bytes, body: bytes) -> str:
    """x-syncml-hmac mac value: B64(H(B64(H(user:pass)):nonce:B64(H(body))))."""
    return hmac_mac_from_secret(auth_secret(username, password), nonce, body)


def encode_nonce(nonce: bytes) -> str:
    return base64.b64encode(nonce).decode("ascii")


def decode_nonce(text: str) -> bytes:
    """Decode a NextNonce sent with Format b64; raise AuthError when it is not base64."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("NextNonce is not valid base64: ask the peer for a new challenge") from None


def basic_credential(username: str, password: str) -> Cred:
    data = _b64(f"{username}:{password}".encode()).decode("ascii")
    return Cred(data=data, meta=Meta(type=AUTH_BASIC, format="b64"))


def parse_basic_credential(data: str) -> tuple[str, str] | None:
    """(user, password) of a syncml:auth-basic Cred's data, None when it is not B64(user:password)."""
    try:
        user, sep, password = base64.b64decode(data, validate=True).decode("utf-8").partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError
        return None
    return (user, password) if sep else None


def md5_credential(username: str, password: str, nonce: bytes) -> Cred:
    """The client's Cred for syncml:auth-md5; the username travels in SyncHdr Source LocName."""
    return Cred(data=md5_digest(username, password, nonce), meta=Meta(type=AUTH_MD5, format="b64"))


def challenge(auth_type: str, nonce: bytes | None = None) -> Chal:
    """A Chal for ``auth_type``; md5 and MAC challenges carry NextNonce (Format b64)."""
    if auth_type == AUTH_BASIC:
        return Chal(meta=Meta(type=AUTH_BASIC, format="b64"))
    if auth_type not in (AUTH_MD5, AUTH_MAC):
        raise AuthError(f"unsupported authentication type {auth_type}")
    return Chal(meta=Meta(type=auth_type, format="b64",
                          next_nonce=encode_nonce(nonce if nonce is not None else new_nonce())))


def nonce_from_chal(chal: Chal) -> bytes | None:
    """The nonce a challenge asks the client to use next (None for basic)."""
    return None if chal.meta.next_nonce is None else decode_nonce(chal.meta.next_nonce)


@dataclass(frozen=True)
class HmacHeader:
    username: str
    mac: str
    algorithm: str = "MD5"

    def format(self) -> str:
        """The header value (without the ``x-syncml-hmac:`` name)."""
        name = self.username.replace("\\", "\\\\").replace('"', '\\"')
        return f'algorithm={self.algorithm}, username="{name}", mac={self.mac}'


def hmac_header(username: str, password: str, nonce: bytes, body: bytes) -> str:
    """Client or server side: the x-syncml-hmac header value for ``body``."""
    return HmacHeader(username=username, mac=hmac_mac(username, password, nonce, body)).format()


_PARAM_RE = re.compile(r'\s*([A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


def parse_hmac_header(value: str) -> HmacHeader:
    """Parse an x-syncml-hmac value; username and mac are required, algorithm defaults to MD5."""
    params: dict[str, str] = {}
    pos = 0
    value = value.strip()
    while pos < len(value):
        match = _PARAM_RE.match(value, pos)
        if match is None or match.end() == pos:
            raise AuthError("malformed x-syncml-hmac header: resend with algorithm, username and mac")
        key, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if key in params:
            raise AuthError(f"x-syncml-hmac repeats the {key} parameter")
        params[key] = raw
        pos = match.end()
    if "username" not in params or not params.get("mac"):
        raise AuthError("x-syncml-hmac header lacks username or mac")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        raise AuthError(f"x-syncml-hmac algorithm {algorithm} is not supported (only MD5)")
    return HmacHeader(username=params["username"], mac=params["mac"], algorithm="MD5")


@dataclass
class AuthResult:
    """Outcome of a verification: the status to send, and what goes with it.

    ``status`` is 212 (accepted), 401 (invalid credentials) or 407 (missing).
    ``chal`` is the challenge to put in the Status for the SyncHdr (always set
    for md5/MAC so the peer gets a fresh nonce); ``next_nonce`` is the raw
    nonce it carries, to remember for the next message.
    """

    status: int
    username: str | None = None
    chal: Chal | None = None
    next_nonce: bytes | None = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        return self.status == StatusCode.AUTHENTICATION_ACCEPTED


PasswordLookup = Callable[[str], "str | None"]


class CredentialVerifier:
    """Server (or client, for server credentials) side of SyncML authentication.

    ``lookup(username)`` returns the expected password or None for an unknown
    user. ``auth_type`` is the scheme this side demands (md5 by default).
    """

    def __init__(self, lookup: PasswordLookup, auth_type: str = AUTH_MD5) -> None:
        if auth_type not in (AUTH_BASIC, AUTH_MD5, AUTH_MAC):
            raise AuthError(f"unsupported authentication type {auth_type}")
        self.lookup = lookup
        self.auth_type = auth_type

    def _reply(self, status: int, username: str | None = None) -> AuthResult:
        nonce = None if self.auth_type == AUTH_BASIC else new_nonce()
        return AuthResult(status=status, username=username, chal=challenge(self.auth_type, nonce),
                          next_nonce=nonce)

    def verify(self, cred: Cred | None, username: str | None = None,
               nonce: bytes | None = None) -> AuthResult:
        """Check a Cred element. ``username`` is SyncHdr/Source/LocName (needed for md5);
        ``nonce`` is the nonce this side last sent (needed for md5)."""
        if self.auth_type == AUTH_MAC:
            raise AuthError("auth-MAC travels in the x-syncml-hmac header: use verify_hmac")
        if cred is None:
            return self._reply(StatusCode.MISSING_CREDENTIALS)
        ctype = cred.meta.type or AUTH_BASIC  # the spec's default type is basic
        if ctype != self.auth_type:
            return self._reply(StatusCode.INVALID_CREDENTIALS)
        if ctype == AUTH_BASIC:
            parsed = parse_basic_credential(cred.data)
            if parsed is None:
                return self._reply(StatusCode.INVALID_CREDENTIALS)
            user, password = parsed
            expected = self.lookup(user)
            ok = expected is not None and hmac.compare_digest(password.encode(), expected.encode())
            return self._reply(StatusCode.AUTHENTICATION_ACCEPTED if ok else StatusCode.INVALID_CREDENTIALS,
                               user if ok else None)
        if not username or nonce is None:
            return self._reply(StatusCode.INVALID_CREDENTIALS)
        expected = self.lookup(username)
        want = md5_digest(username, expected if expected is not None else "", nonce)
        ok = hmac.compare_digest(cred.data.strip().encode("ascii", "replace"), want.encode()) and expected is not None
        return self._reply(StatusCode.AUTHENTICATION_ACCEPTED if ok else StatusCode.INVALID_CREDENTIALS,
                           username if ok else None)

    def verify_hmac(self, header_value: str | None, body: bytes, nonce: bytes | None) -> AuthResult:
        """Check an x-syncml-hmac header against the raw message ``body``."""
        if not header_value:
            return self._reply(StatusCode.MISSING_CREDENTIALS)
        try:
            hdr = parse_hmac_header(header_value)
        except AuthError:
            return self._reply(StatusCode.INVALID_CREDENTIALS)
        if nonce is None:
            return self._reply(StatusCode.INVALID_CREDENTIALS)
        expected = self.lookup(hdr.username)
        want = hmac_mac(hdr.username, expected if expected is not None else "", nonce, body)
        # base64 padding is optional on the wire (the DM Security example mac has none)
        got = hdr.mac.rstrip("=").encode("ascii", "replace")
        ok = hmac.compare_digest(got, want.rstrip("=").encode()) and expected is not None
        return self._reply(StatusCode.AUTHENTICATION_ACCEPTED if ok else StatusCode.INVALID_CREDENTIALS,
                           hdr.username if ok else None)
