"""How the DM server authenticates a device's message (OMA DM 1.2 Security).

The device's auth type (devices.auth_type) says what it may send:

- ``hmac``: every message signed with x-syncml-hmac.
- ``md5``: a syncml:auth-md5 Cred (B64(MD5(secret ":" nonce))) on a session's first
  message; later ones ride on the authenticated session.
- ``basic``: a syncml:auth-basic Cred, B64(user ":" password), which OMA DM 1.2
  allows and stock clients (libdmclient) send by default. The password crosses the
  network in base64, so it is accepted over TLS only, or over plain HTTP when the
  operator starts the server with ``--allow-basic-over-http`` (a warning at start and
  once per device). Otherwise it is refused with 401, an audit line naming the switch,
  and a Chal for syncml:auth-md5: a client that follows challenges moves up to md5,
  which a basic device may always use (same stored secret, no password on the wire).

The server stores only B64(MD5(user:password)) (host.dm.dmauth); for basic it computes
that digest from what arrives and compares in constant time. Whatever the outcome of
md5/hmac, the Status for SyncHdr carries a Chal with a fresh NextNonce, stored with a
compare-and-set: a nonce works once, so a replayed message or Cred fails with 401.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from host.dm import dmauth
from host.dm.server.db import Device
from host.errors import AuthError
from host.syncml import model as m
from host.syncml.auth import AUTH_BASIC, AUTH_MAC, AUTH_MD5, HMAC_HEADER, parse_basic_credential
from host.syncml.status import StatusCode

if TYPE_CHECKING:
    from host.dm.server.db import Store

log = logging.getLogger(__name__)

BASIC_SWITCH = "--allow-basic-over-http"
ACCEPTED = (StatusCode.OK, StatusCode.AUTHENTICATION_ACCEPTED)

Outcome = tuple[int, "m.Chal | None", "bytes | None"]  # (status for SyncHdr, Chal, the new nonce)


class DeviceAuth:
    """Checks one message's credentials for a device; see module doc."""

    def __init__(self, store: "Store", *, allow_basic_over_http: bool = False) -> None:
        self.store = store
        self.allow_basic_over_http = allow_basic_over_http
        self.tls = False  # set by the web front when it serves https
        self._warned: set[str] = set()  # devices whose basic-over-HTTP warning was logged
        self._lock = threading.Lock()

    def basic_allowed(self) -> bool:
        return self.tls or self.allow_basic_over_http

    def check(self, device: Device, authenticated: bool, msg: m.SyncMLMessage, body: bytes,
              headers: dict[str, str]) -> Outcome:
        if device.auth_type == "hmac":
            return self._hmac(device, authenticated, body, headers)
        cred = msg.header.cred
        if authenticated and cred is None:
            return StatusCode.OK, None, None
        if cred is not None and (cred.meta.type or AUTH_BASIC) == AUTH_BASIC and device.auth_type == "basic":
            return self._basic(device, cred)
        return self._md5(device, msg, cred)

    # ------------------------------------------------------------ schemes
    def _md5(self, device: Device, msg: m.SyncMLMessage, cred: m.Cred | None) -> Outcome:
        current = device.server_nonce
        code, ok = StatusCode.MISSING_CREDENTIALS, False
        if cred is not None:
            code = StatusCode.INVALID_CREDENTIALS
            username = msg.header.source.loc_name or device.username  # LocName is optional (libdmclient)
            if (cred.meta.type or "") == AUTH_MD5 and username == device.username:
                want = dmauth.md5_from_secret(device.secret, dmauth.unb64(current))
                ok = dmauth.equal(cred.data.strip(), want)
        nonce = dmauth.fresh_nonce()
        rotated = self.store.rotate_nonce(device.id, "server_nonce", current, dmauth.b64(nonce),
                                          **({"last_seen": time.time()} if ok else {}))
        chal = m.Chal(meta=m.Meta(type=AUTH_MD5, format="b64", next_nonce=dmauth.b64(nonce)))
        if ok and rotated:
            return StatusCode.AUTHENTICATION_ACCEPTED, chal, nonce
        return code, chal, nonce

    def _basic(self, device: Device, cred: m.Cred) -> Outcome:
        if not self.basic_allowed():
            self.store.audit("auth.basic_refused", device.id,
                             f"syncml:auth-basic over plain HTTP refused: serve https (--tls-cert) or start "
                             f"the server with {BASIC_SWITCH}")
            return self._md5_challenge(device, StatusCode.INVALID_CREDENTIALS)
        parsed = parse_basic_credential(cred.data.strip())
        ok = False
        if parsed is not None:
            user, password = parsed
            # the stored form, computed from what arrived: no password is kept or compared
            ok = dmauth.equal(dmauth.secret_of(user, password), device.secret) and user == device.username
        if not ok:
            return StatusCode.INVALID_CREDENTIALS, m.Chal(meta=m.Meta(type=AUTH_BASIC, format="b64")), None
        if not self.tls:
            self._warn_once(device.id)
        self.store.update_device(device.id, last_seen=time.time())
        return StatusCode.AUTHENTICATION_ACCEPTED, None, None

    def _md5_challenge(self, device: Device, code: int) -> Outcome:
        """Refuse and ask for md5 with a fresh nonce (what the device must use next)."""
        nonce = dmauth.fresh_nonce()
        self.store.rotate_nonce(device.id, "server_nonce", device.server_nonce, dmauth.b64(nonce))
        return code, m.Chal(meta=m.Meta(type=AUTH_MD5, format="b64", next_nonce=dmauth.b64(nonce))), nonce

    def _hmac(self, device: Device, authenticated: bool, body: bytes, headers: dict[str, str]) -> Outcome:
        current = device.server_nonce
        ok, code = False, StatusCode.MISSING_CREDENTIALS
        value = headers.get(HMAC_HEADER)
        if value:
            code = StatusCode.INVALID_CREDENTIALS
            try:
                hdr = dmauth.parse_hmac_header(value)
                want = dmauth.hmac_from_secret(device.secret, dmauth.unb64(current), body)
                ok = hdr.username == device.username and dmauth.equal(hdr.mac, want)
            except AuthError:
                ok = False
        nonce = dmauth.fresh_nonce()
        # compare-and-set: a message replayed concurrently finds the nonce already gone
        rotated = self.store.rotate_nonce(device.id, "server_nonce", current, dmauth.b64(nonce),
                                          **({"last_seen": time.time()} if ok else {}))
        chal = m.Chal(meta=m.Meta(type=AUTH_MAC, format="b64", next_nonce=dmauth.b64(nonce)))
        if ok and rotated:
            return (StatusCode.OK if authenticated else StatusCode.AUTHENTICATION_ACCEPTED), chal, nonce
        return code, chal, nonce

    def _warn_once(self, device_id: str) -> None:
        with self._lock:
            if device_id in self._warned:
                return
            self._warned.add(device_id)
        log.warning("device %s authenticates with syncml:auth-basic over plain HTTP (%s): its password "
                    "crosses the network in base64", device_id[:128], BASIC_SWITCH)
        self.store.audit("auth.basic_over_http", device_id, f"accepted because of {BASIC_SWITCH}")


def warn_basic_at_start(auth: DeviceAuth) -> None:
    if auth.allow_basic_over_http and not auth.tls:
        log.warning("%s: syncml:auth-basic is accepted over plain HTTP; device passwords cross the network "
                    "in base64 (serve https with --tls-cert instead)", BASIC_SWITCH)
