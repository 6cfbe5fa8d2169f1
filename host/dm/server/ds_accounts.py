"""DS accounts on the DM server: the credentials a device needs for BackupViaDS / RestoreViaDS.

The jobs table holds only the account's name (Exec Data ``account=<name>``);
the password lives in ``ds_accounts``, encrypted at rest with AES-256-GCM
under the server's secret key (AAD = the account name, so a ciphertext cannot
be moved to another account). The BackupPlugin's Exec carries it sealed to the
device's encryption key (:func:`exec_data_for_job`, host.backup.sealed), in
cleartext only inside TLS to a device with no registered key; it is never
logged nor returned by the API/CLI.

The secret key (32 random bytes) comes from ``$SIMVAULT_DM_SECRET_KEY``
(base64), else from the file ``$SIMVAULT_DM_SECRET_KEY_FILE``, else from
``<sqlite db>.secret.key`` beside a SQLite database, else
``$XDG_STATE_HOME/simvault/dm-secret.key`` (``~/.local/state``). The server
creates the file (mode 0600, O_EXCL) on first start. Lose it and the stored DS
passwords must be entered again (a clear error says so).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Float, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from host.backup.sealed import seal
from host.dm.session import format_kv, parse_kv
from host.errors import SimvaultError, UsageError

if TYPE_CHECKING:
    from host.dm.server.db import Store

KEY_ENV = "SIMVAULT_DM_SECRET_KEY"
KEY_FILE_ENV = "SIMVAULT_DM_SECRET_KEY_FILE"
KEY_BYTES = 32


class DsAccountError(SimvaultError):
    """A DS account is missing or its password cannot be decrypted."""


class _Base(DeclarativeBase):
    pass


class DsAccountRow(_Base):
    __tablename__ = "ds_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    url: Mapped[str] = mapped_column(String(512))
    datastore: Mapped[str] = mapped_column(String(128))
    username: Mapped[str] = mapped_column(String(128))
    auth: Mapped[str] = mapped_column(String(16))
    password_enc: Mapped[str] = mapped_column(String(1024))  # b64(nonce 12 | AES-GCM ciphertext+tag)
    key_id: Mapped[str] = mapped_column(String(16))  # first 8 bytes of SHA-256(key), hex: detects a changed key
    updated: Mapped[float] = mapped_column(Float)


_PUBLIC = ("name", "url", "datastore", "username", "auth", "updated")


# ------------------------------------------------------------------ the server's secret key
def key_path(store: Store) -> Path:
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV])
    url = store.url
    if url.startswith("sqlite") and "///" in url and ":memory:" not in url:
        db = url.split("///", 1)[1].split("?", 1)[0]
        if db:
            return Path(db + ".secret.key")
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "simvault" / "dm-secret.key"


def server_key(store: Store) -> bytes:
    """The 32-byte key; creates the key file (0600) when there is none yet."""
    env = os.environ.get(KEY_ENV)
    if env:
        try:
            key = base64.b64decode(env, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise UsageError(f"${KEY_ENV} must be {KEY_BYTES} bytes in base64 (openssl rand -base64 32)")
        return key
    path = key_path(store)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            key = path.read_bytes()
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
    if len(key) != KEY_BYTES:
        raise UsageError(f"DM secret key file {path} is not {KEY_BYTES} bytes: restore it or remove it "
                         "(then enter the DS account passwords again)")
    if path.stat().st_mode & 0o077:
        raise UsageError(f"DM secret key file {path} is readable by others: chmod 600 it")
    return key


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


# ------------------------------------------------------------------ accounts
def _tables(store: Store) -> None:
    _Base.metadata.create_all(store.engine, checkfirst=True)


def default_account_name(url: str, username: str, datastore: str) -> str:
    return f"{username}@{url}#{datastore}"[:255]


def set_ds_account(store: Store, name: str, url: str, username: str, password: str, *,
                   datastore: str = "backup", auth: str = "md5") -> dict[str, Any]:
    """Create or update an account; the password is encrypted before it reaches the database."""
    if not name or len(name) > 255:
        raise UsageError("a DS account needs a name of 1..255 characters")
    if not url.startswith(("http://", "https://")) or not username:
        raise UsageError("a DS account needs url=http(s)://... and a user name")
    if auth not in ("basic", "md5"):
        raise UsageError(f"auth {auth[:10]!r}: use basic or md5")
    key = server_key(store)
    nonce = secrets.token_bytes(12)
    blob = nonce + AESGCM(key).encrypt(nonce, password.encode("utf-8"), name.encode("utf-8"))
    _tables(store)
    with Session(store.engine) as s, s.begin():
        row = s.scalar(select(DsAccountRow).where(DsAccountRow.name == name))
        if row is None:
            row = DsAccountRow(name=name)
            s.add(row)
        row.url, row.datastore, row.username, row.auth = url[:512], datastore[:128], username[:128], auth
        row.password_enc, row.key_id, row.updated = base64.b64encode(blob).decode(), _key_id(key), time.time()
        s.flush()
        out = {c: getattr(row, c) for c in _PUBLIC}
    store.audit("ds.account.set", None, f"{name[:200]}")
    return out


def ds_accounts(store: Store) -> list[dict[str, Any]]:
    """Every DS account, without its password."""
    _tables(store)
    with Session(store.engine) as s:
        return [{c: getattr(r, c) for c in _PUBLIC} for r in s.scalars(select(DsAccountRow).order_by(DsAccountRow.name))]


def ds_account(store: Store, name: str) -> dict[str, Any] | None:
    return next((a for a in ds_accounts(store) if a["name"] == name), None)


def ds_account_password(store: Store, name: str) -> str:
    """Decrypt an account's password (for the Exec only: never log or return it)."""
    _tables(store)
    with Session(store.engine) as s:
        row = s.scalar(select(DsAccountRow).where(DsAccountRow.name == name))
        if row is None:
            raise DsAccountError(f"no DS account {name[:80]!r} on the DM server: add it again with its password")
        blob, key_id = row.password_enc, row.key_id
    key = server_key(store)
    if key_id != _key_id(key):
        raise DsAccountError(f"DS account {name[:80]!r} was encrypted under another server secret key: "
                             "enter its password again")
    try:
        raw = base64.b64decode(blob)
        return AESGCM(key).decrypt(raw[:12], raw[12:], name.encode("utf-8")).decode("utf-8")
    except (InvalidTag, ValueError, binascii.Error):
        raise DsAccountError(f"DS account {name[:80]!r}: stored password fails its integrity check "
                             "(altered): enter it again") from None


CLEARTEXT_REFUSED = ("device {device} has no registered encryption key and this DM server is plain http: "
                     "the DS password would cross the network in cleartext. Register the key "
                     "('simvault dm device-key {device} --enc-key keys/device.enc.pub.pem') or serve DM "
                     "over TLS (--tls-cert/--tls-key)")


def check_credentials_path(enc_key: bytes | None, tls: bool, device_id: str) -> None:
    """UsageError when a DS job's password could reach this device only in cleartext."""
    if enc_key is None and not tls:
        raise UsageError(CLEARTEXT_REFUSED.format(device=device_id[:128]))


def exec_data_for_job(store: Store, data: str, *, device_id: str, correlator: str,
                      enc_key: bytes | None, tls: bool) -> str:
    """The job's Exec Data with ``account=<name>`` replaced by the password sealed to the
    device's encryption key (``sealed=``, host.backup.sealed); without a registered key,
    by ``password=`` only when the DM session runs over TLS (else UsageError, as at job creation)."""
    params = parse_kv(data)
    name = params.pop("account", None)
    if name is None:
        return data  # a job queued before accounts existed, or without a password
    check_credentials_path(enc_key, tls, device_id)
    password = ds_account_password(store, name)
    if enc_key is None:
        params["password"] = password  # inside TLS
    else:
        params["sealed"] = seal(enc_key, password, device_id=device_id, correlator=correlator,
                                url=params.get("url", ""), user=params.get("user", ""))
    return format_kv(params)
