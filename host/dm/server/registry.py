"""Registering a device with the DM server (admin CLI, JSON API, tests).

The server keeps B64(MD5(user:password)) for the device and
B64(MD5(server_id:server_password)) for itself (host.dm.dmauth), the device's
public signing key (to verify its backups), its public encryption key (the DS
credentials of BackupViaDS / RestoreViaDS are sealed to it, host.backup.sealed),
and two nonces. Both nonces start
empty, as after an OMA DM bootstrap without nonces: the device's first
session is challenged once (401 + Chal NextNonce) and from then on every
nonce is fresh and random.
"""
from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from apdu_specs.manifest import key_id as point_key_id
from host.dm import dmauth
from host.dm.server.db import NewDevice, Store, device_public
from host.errors import KeyFileError, UsageError

AUTH_TYPES = ("md5", "hmac", "basic")  # basic: also md5; over plain HTTP only with --allow-basic-over-http


def public_point_from_pem(pem: bytes, what: str = "the device public key") -> bytes:
    """A PEM EC P-256 public key -> its uncompressed point (what host.archive uses)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise KeyFileError(f"{what} is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{what} is not an EC P-256 key")
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def register_device(store: Store, server_id: str, device_id: str, password: str, server_password: str, *,
                    auth_type: str = "hmac", public_key_pem: bytes | None = None,
                    public_point: bytes | None = None, notify_url: str | None = None,
                    username: str | None = None, enc_key_pem: bytes | None = None,
                    min_password_length: int = 8) -> dict[str, Any]:
    """Add a device; returns its public row (no secrets). ``username``: the account's user
    name (DMAcc AAuthName; default the device id). ``enc_key_pem``: its encryption public
    key (<name>.enc.pub.pem), which DS credentials are sealed to. ``min_password_length``:
    the server's policy (dm server --min-password-length)."""
    if auth_type not in AUTH_TYPES:
        raise UsageError(f"auth type {auth_type!r}: use one of {', '.join(AUTH_TYPES)}")
    if not device_id or len(device_id) > 128:
        raise UsageError("device id must be 1..128 characters (the tree's ./DevInfo/DevId)")
    if username is not None and (not username or len(username) > 128 or ":" in username):
        raise UsageError("user name must be 1..128 characters without ':' (the DMAcc AAuthName)")
    for what, value in (("device", password), ("server", server_password)):
        if len(value) < min_password_length:
            raise UsageError(f"the {what} password has {len(value)} characters; this server requires at least "
                             f"{min_password_length} (dm server --min-password-length)")
    if public_key_pem is not None:
        public_point = public_point_from_pem(public_key_pem)
    enc_point = _enc_point(enc_key_pem, public_point) if enc_key_pem is not None else None
    user = username or device_id
    return store.add_device(NewDevice(device_id=device_id, username=user,
                                      secret=dmauth.secret_of(user, password),
                                      server_secret=dmauth.secret_of(server_id, server_password),
                                      auth_type=auth_type, public_key=public_point, notify_url=notify_url,
                                      enc_key=enc_point),
                            initial_nonce=b"", client_nonce=b"")


def _enc_point(pem: bytes, signing_point: bytes | None) -> bytes:
    point = public_point_from_pem(pem, "the device encryption key")
    if signing_point is not None and point == signing_point:
        raise UsageError("the encryption key is the signing key: give <name>.enc.pub.pem "
                         "(no key serves two algorithms)")
    return point


def set_enc_key(store: Store, device_id: str, enc_key_pem: bytes) -> dict[str, Any]:
    """Register (or replace) a device's encryption public key; returns its public row."""
    device = store.device(device_id)
    if device is None:
        raise UsageError(f"device {device_id[:128]} is not registered; 'simvault dm devices' lists them")
    point = _enc_point(enc_key_pem, device.public_key)
    store.update_device(device_id, enc_key=point)
    store.audit("device.enc_key", device_id, point_key_id(point).hex())
    return device_public(store.device(device_id))
