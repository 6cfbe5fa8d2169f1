"""The DM server's tables (SQLAlchemy 2 ORM) and how the admin API shows their rows.

host.dm.server.db (Store) is the only code that opens sessions on them; these
names are importable from there too.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import (JSON, BigInteger, Float, ForeignKey, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from apdu_specs.manifest import key_id as point_key_id
from host.errors import SimvaultError


JOB_KINDS = ("backup", "restore", "delete", "backup_via_ds", "restore_via_ds", "firmware_update")
JOB_TARGETS = ("server", "card", "ds", "staging", "device")
OPEN_STATES = ("queued", "notified", "running")
FINAL_STATES = ("succeeded", "failed")


class StoreError(SimvaultError):
    """The DM server database refused an operation."""


class Base(DeclarativeBase):
    pass


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # = ./DevInfo/DevId = SyncHdr Source
    username: Mapped[str] = mapped_column(String(128), unique=True)
    secret: Mapped[str] = mapped_column(String(64))  # B64(MD5(username:password))
    server_secret: Mapped[str] = mapped_column(String(64))  # B64(MD5(server_id:server_password))
    auth_type: Mapped[str] = mapped_column(String(16), default="md5")  # md5 | hmac | basic
    server_nonce: Mapped[str] = mapped_column(String(64))  # the nonce the device must use next (b64)
    client_nonce: Mapped[str] = mapped_column(String(64))  # the nonce the device gave us (b64)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # signing point (65 bytes)
    # encryption point (65 bytes): the DS credentials of its BackupViaDS / RestoreViaDS are sealed to it
    enc_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    notify_url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    allow_device_backup: Mapped[bool] = mapped_column(default=True)
    default_target: Mapped[str] = mapped_column(String(16), default="server")
    devinfo: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float | None] = mapped_column(Float, nullable=True)


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str] = mapped_column(String(32))
    initiator: Mapped[str] = mapped_column(String(16))  # server | client
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | ended | failed
    messages: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    backup_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    origin: Mapped[str] = mapped_column(String(32), default="admin")  # admin | device:<reason>
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    correlator: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Result(Base):
    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    code: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    received_at: Mapped[float] = mapped_column(Float)


class Audit(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    device_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    event: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


class BackupRow(Base):
    __tablename__ = "backups"
    __table_args__ = (UniqueConstraint("device_id", "backup_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    backup_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # the archive's head (magic, manifest, signature) when ``parts`` lists its chunks (content-addressed
    # in ``blobs``, host.dm.server.blobs); the whole archive for rows stored before (parts NULL).
    # Deferred: listing backups never loads archive bytes
    archive: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    parts: Mapped[list | None] = mapped_column(JSON, nullable=True, deferred=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    verified_at: Mapped[float] = mapped_column(Float)


class RetiredBackupRow(Base):
    """A removed device's server-stored backups, kept (no foreign key) until it is registered
    again (they move back to ``backups``) or removed with purge."""

    __tablename__ = "retired_backups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    backup_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # the archive's head (magic, manifest, signature) when ``parts`` lists its chunks (content-addressed
    # in ``blobs``, host.dm.server.blobs); the whole archive for rows stored before (parts NULL).
    # Deferred: listing backups never loads archive bytes
    archive: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    parts: Mapped[list | None] = mapped_column(JSON, nullable=True, deferred=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    verified_at: Mapped[float] = mapped_column(Float)


_BACKUP_COLUMNS = ("device_id", "backup_id", "sequence", "size", "sha256", "archive", "parts", "meta",
                   "job_id", "created_at", "verified_at")


class BlobRow(Base):
    """One stored chunk of server backups, by its SHA-256, shared by every backup that lists it.

    ``refs`` counts the backups (kept and retired) listing it; at 0 it is ``dead_since`` then and
    host.dm.server.blobs.collect removes it after a grace period (a backup arriving meanwhile
    takes it back under the row's lock). ``data`` holds the bytes for the database blob store,
    NULL for an external one (a directory)."""

    __tablename__ = "blobs"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    refs: Mapped[int] = mapped_column(Integer)
    dead_since: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)


def _row_dict(row: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in skip}


def device_public(row: Device) -> dict[str, Any]:
    """A device as the admin API shows it (no secrets, no nonces)."""
    d = _row_dict(row, skip=("secret", "server_secret", "server_nonce", "client_nonce", "public_key", "enc_key"))
    d["has_public_key"] = row.public_key is not None
    d["enc_key_id"] = point_key_id(row.enc_key).hex() if row.enc_key else None
    return d


def job_public(row: Job) -> dict[str, Any]:
    return _row_dict(row)


def backup_public(row: BackupRow) -> dict[str, Any]:
    return _row_dict(row, skip=("archive", "parts"))
